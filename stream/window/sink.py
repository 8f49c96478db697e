"""Window sink: the live preview in an OpenCV window, with keys, snapshots and recordings.

Starts the window's thread: it opens the window, redraws it at display rate with the
newest frame, handles keys and clicks, and closes it, whatever the network's speed (the
render thread only hands frames over). Files (snapshots, recordings) are written on
request by the saver thread the window thread starts (:mod:`stream.window.saver`). The
keys are in :mod:`stream.window.keys`, the picture in :mod:`stream.window.view`.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2

from stream.core.errors import SinkError
from stream.core.records import DepthFrame
from stream.core.settings import EncoderSettings
from stream.depth.render import Renderer
from stream.sinks.base import Sink, SinkContext
from stream.window.control import LiveControl
from stream.window.keys import Action, key_action
from stream.window.saver import Saver
from stream.window.view import WindowView

__all__ = ["check_display", "WindowSink"]

_POLL_MS = 10  # how long each wait for a key or a click lasts (frames are drawn between)
_CLOSE_TIMEOUT_S = 30.0  # a recording may still be finishing


def check_display() -> None:
    """Check that a window can be opened (Linux: an X or Wayland display is reachable).

    OpenCV's Qt backend aborts the whole process when there is no display, so this is
    asked before a window is made.

    Raises:
        SinkError: no display, with a hint to use ``--out`` or ``--no-window``.
    """
    if not sys.platform.startswith("linux"):
        return
    if os.environ.get("QT_QPA_PLATFORM", "").startswith(("offscreen", "minimal", "vnc")):
        return
    hint = "use --out FILE to write a video, or --no-window"
    if os.environ.get("WAYLAND_DISPLAY"):
        return
    display = os.environ.get("DISPLAY")
    if not display:
        raise SinkError(f"cannot open a window: no display (DISPLAY is not set); {hint}")
    if not _x_display_reachable(display):
        raise SinkError(f"cannot open a window: no X display answers at DISPLAY={display}; {hint}")


def _x_display_reachable(display: str) -> bool:
    host, _, rest = display.rpartition(":")
    number = rest.split(".")[0]
    if not number.isdigit():
        return False
    try:
        if host in ("", "unix"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(1.0)
                try:
                    s.connect(f"/tmp/.X11-unix/X{number}")
                except OSError:
                    s.connect(f"\0/tmp/.X11-unix/X{number}")  # Linux abstract socket
            return True
        with socket.create_connection((host, 6000 + int(number)), timeout=1.0):
            return True
    except OSError:
        return False


class _Latest:
    """The render thread's hand-off to the window thread: one slot, the newest frame wins.

    ``end()`` is the end-of-stream sentinel (the sink is being closed).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frame: DepthFrame | None = None
        self._ended = False

    def put(self, frame: DepthFrame) -> None:
        with self._lock:
            self._frame = frame

    def end(self) -> None:
        with self._lock:
            self._ended = True

    def take(self) -> tuple[DepthFrame | None, bool]:
        """``(the newest frame not taken yet or None, ended)``; never blocks."""
        with self._lock:
            frame, self._frame = self._frame, None
            return frame, self._ended


def _print_line(line: str) -> None:
    print(line, flush=True)


class WindowSink(Sink):
    """The live preview: a resizable window, redrawn at display rate, driven by keys.

    ``write`` only hands the frame to the window's own thread, which shows the newest
    one, so keys and clicks are handled within milliseconds however slow the network
    is. Keys (``h`` lists them; :mod:`stream.window.keys`): pause, snapshot, record,
    layout, colormap, invert, smoothing strength, reset, status line, fullscreen, quit.
    A click shows that pixel's depth. q, Esc or the window's close button stop the
    run cleanly (the pipeline's stop event is set, as at the end of the input).

    Args:
        renderer: the layout and colours to start with.
        title: window title.
        control: the hand-off to the inference thread for the smoothing keys
            (:class:`~stream.window.control.LiveControl`); ``None``: those keys only say
            they cannot.
        snapshot_dir: where snapshots and recordings go (default: the current folder;
            made, with its parents, when missing).
        encoder: codec, CRF and preset of recordings.
        announce: called with one line per snapshot or recording (default: print).
        refresh_hz: the most redraws per second.

    Raises:
        SinkError: no display to open a window on, or ``snapshot_dir`` is not a folder
            and cannot be made (at construction).
    """

    def __init__(self, renderer: Renderer | None = None, title: str = "depthstream", *,
                 control: LiveControl | None = None,
                 snapshot_dir: str | os.PathLike | None = None,
                 encoder: EncoderSettings | None = None,
                 announce: Callable[[str], None] | None = None,
                 refresh_hz: float = 30.0) -> None:
        check_display()
        self.snapshot_dir = Path(snapshot_dir) if snapshot_dir is not None else Path(".")
        try:
            self.snapshot_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file in the way, no permission, read-only
            raise SinkError(f"cannot use {self.snapshot_dir} for snapshots: "
                            f"{exc.strerror or exc}") from exc
        # OpenCV's Qt makes its widgets on the window thread; Qt then warns at process
        # exit ("Timers cannot be stopped from another thread") and about fonts it does
        # not ship. Harmless, but not what a user should read. They may set their own.
        os.environ.setdefault("QT_LOGGING_RULES", "default.warning=false")
        self.renderer = renderer or Renderer()
        self.title = title
        self.control = control
        self.encoder = encoder or EncoderSettings()
        self.announce = announce or _print_line
        self.period_s = 1.0 / refresh_hz
        self._latest = _Latest()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._closed = False

    # -- the render thread's side ------------------------------------------------

    def open(self, context: SinkContext) -> None:
        """Start the window thread (it opens the window)."""
        self._context = context
        self._thread = threading.Thread(target=self._run, name="depthstream-window",
                                        daemon=True)
        self._thread.start()

    def write(self, frame: DepthFrame) -> None:
        """Hand ``frame`` to the window (a newer one replaces it if not shown yet)."""
        self._raise_error()
        self._latest.put(frame)

    def close(self) -> None:
        """End the window thread (it finishes a recording and closes the window); safe twice.

        Raises:
            SinkError: the window thread did not end in time.
            StreamError: what failed on the window thread.
        """
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._latest.end()
            self._thread.join(_CLOSE_TIMEOUT_S)
            if self._thread.is_alive():
                raise SinkError(f"the window did not close within {_CLOSE_TIMEOUT_S:.0f} s")
        self._raise_error()

    def _raise_error(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    # -- the window thread ---------------------------------------------------------

    def _run(self) -> None:
        try:
            view = WindowView(self.renderer, self._context.info.size_wh,
                              self._context.count_dropped, self._strength)
            saver = Saver(self.snapshot_dir, self._context.info, self.encoder,
                          self.announce, _warn).start()
            try:
                cv2.namedWindow(self.title, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO
                                | cv2.WINDOW_GUI_NORMAL)
                try:
                    cv2.setMouseCallback(self.title, _on_mouse, view)
                    self._loop(view, saver)
                finally:
                    _destroy(self.title)
            finally:
                saver.stop(_CLOSE_TIMEOUT_S)  # a recording under way is finished
        except BaseException as exc:  # noqa: BLE001 - re-raised on the render thread
            self._error = exc
            self._context.stop.set()

    def _loop(self, view: WindowView, saver: Saver) -> None:
        stop = self._context.stop
        shown_wh: tuple[int, int] | None = None
        next_draw = 0.0
        self._fullscreen = False
        while not stop.is_set():
            frame, ended = self._latest.take()
            if ended:
                return
            if frame is not None and view.show(frame):
                saver.record(frame)
            if saver.recording_since != view.recording_since:
                view.recording_since = saver.recording_since
                view.touch()
            now = time.monotonic()
            if view.dirty and now >= next_draw:
                image = view.compose()
                size_wh = (image.shape[1], image.shape[0])
                if size_wh != shown_wh and not self._fullscreen:
                    cv2.resizeWindow(self.title, *size_wh)  # a new layout: its own shape
                shown_wh = size_wh
                cv2.imshow(self.title, image)
                next_draw = now + self.period_s
            key = cv2.waitKeyEx(_POLL_MS)  # Qt's events: keys, clicks, resizing, closing
            if _closed_by_user(self.title):
                break
            action = key_action(key)
            if action is Action.QUIT:
                break
            if action is not None:
                self._act(action, view, saver)
                next_draw = 0.0  # a key's effect is drawn at once, not at the next tick
        self.done = True  # q, Esc or the close button: a clean stop of the whole run
        stop.set()

    def _act(self, action: Action, view: WindowView, saver: Saver) -> None:
        if action in (Action.HELP, Action.HUD):
            view.toggle("help" if action is Action.HELP else "hud")
        elif action is Action.PAUSE:
            view.flash("paused" if view.toggle("paused") else "resumed")
        elif action is Action.LAYOUT:
            view.flash(f"layout: {view.cycle_layout().value}")
        elif action is Action.COLORMAP:
            view.flash(f"colormap: {view.cycle_colormap()}")
        elif action is Action.INVERT:
            view.flash("near is dark" if view.invert() else "near is bright")
        elif action in (Action.SMOOTH_UP, Action.SMOOTH_DOWN):
            view.flash(self._step_smoothing(1 if action is Action.SMOOTH_UP else -1))
        elif action is Action.RESET:
            if self.control is not None:
                self.control.request_reset()
            view.flash("smoother and colour range reset" if self.control is not None
                       else "nothing to reset here")
        elif action is Action.FULLSCREEN:
            self._fullscreen = not self._fullscreen
            cv2.setWindowProperty(self.title, cv2.WND_PROP_FULLSCREEN,
                                  cv2.WINDOW_FULLSCREEN if self._fullscreen
                                  else cv2.WINDOW_NORMAL)
            view.touch()
        elif action is Action.SNAPSHOT:
            if view.frame is None:
                view.flash("no frame yet")
            else:
                saver.snapshot(view.frame, view.renderer)
                view.flash(f"snapshot at {view.frame.timestamp:.3f} s")
        elif action is Action.RECORD:
            view.flash("recording (o stops)" if saver.toggle_recording(view.renderer)
                       else "recording stopped")

    def _strength(self) -> float | None:
        return None if self.control is None else self.control.strength

    def _step_smoothing(self, steps: int) -> str:
        if self.control is None:
            return "smoothing cannot be changed here"
        if not self.control.adjustable:
            return "smoothing is off (--no-smooth)"
        return f"smoothing {self.control.step(steps):.1f}"


def _on_mouse(event: int, x: int, y: int, flags: int, view: WindowView) -> None:
    """Mouse events on the window thread: the depth under the pointer, a probe.

    Moving shows the pointer's depth in the status line; a left click pins a probe, a
    right click hides it.
    """
    if event == cv2.EVENT_MOUSEMOVE:
        view.hover(x, y)
    elif event == cv2.EVENT_LBUTTONDOWN:
        view.click(x, y)
    elif event == cv2.EVENT_RBUTTONDOWN:
        view.clear_probe()


def _closed_by_user(title: str) -> bool:
    """The window's close button was used (Qt then has no window left at all)."""
    try:
        return cv2.getWindowProperty(title, cv2.WND_PROP_VISIBLE) < 1
    except cv2.error:
        return True


def _destroy(title: str) -> None:
    try:
        cv2.destroyWindow(title)
        cv2.waitKey(1)
    except cv2.error:
        pass  # closed by the user already


def _warn(message: str) -> None:
    print(f"depthstream: warning: {message}", file=sys.stderr, flush=True)
