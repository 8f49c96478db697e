"""Window sink: the live preview in an OpenCV window, with a status line.

Opens a window on the render thread; starts no threads, touches no files.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable

import cv2
import numpy as np

from .errors import SinkError
from .records import DepthFrame
from .render import Renderer
from .sinks import Sink, SinkContext

__all__ = ["check_display", "WindowSink"]


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


class WindowSink(Sink):
    """Show rendered frames in an OpenCV window with a status line; q or Esc quits.

    The status line shows the display rate, the network's time and the dropped frames.
    Pictures narrower than 640 pixels are shown enlarged (nearest neighbour).

    Args:
        renderer: layout and colours.
        title: window title.

    Raises:
        SinkError: no display to open a window on (at construction).
    """

    def __init__(self, renderer: Renderer | None = None, title: str = "depthstream") -> None:
        check_display()
        # OpenCV's Qt makes its widgets on the render thread; Qt then warns at process
        # exit ("Timers cannot be stopped from another thread") and about fonts it does
        # not ship. Harmless, but not what a user should read. They may set their own.
        os.environ.setdefault("QT_LOGGING_RULES", "default.warning=false")
        self.renderer = renderer or Renderer()
        self.title = title
        self._open = False
        self._dropped: Callable[[], int] = lambda: 0
        self._last: float | None = None
        self._fps = 0.0
        self._inference_ms = 0.0

    def open(self, context: SinkContext) -> None:  # noqa: D102
        self._dropped = context.count_dropped
        cv2.namedWindow(self.title, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)
        self._open = True

    def write(self, frame: DepthFrame) -> None:
        """Show one frame; a q, an Esc or a closed window sets :attr:`done`."""
        now = time.monotonic()
        if self._last is not None and now > self._last:
            rate = 1.0 / (now - self._last)
            self._fps = rate if self._fps == 0 else 0.9 * self._fps + 0.1 * rate
        self._last = now
        self._inference_ms = (frame.inference_ms if self._inference_ms == 0
                              else 0.9 * self._inference_ms + 0.1 * frame.inference_ms)
        image = self.renderer.render(frame)
        if image.shape[1] < 640:
            factor = -(-640 // image.shape[1])
            image = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_NEAREST)
        self._status(image, f"{self._fps:4.1f} fps   inference {self._inference_ms:4.0f} ms   "
                            f"dropped {self._dropped()}")
        cv2.imshow(self.title, image)
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), ord("Q"), 27):
            self.done = True
        elif cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
            self.done = True  # the user closed the window

    @staticmethod
    def _status(image: np.ndarray, text: str) -> None:
        scale = 0.5
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        cv2.rectangle(image, (0, 0), (tw + 12, th + base + 10), (0, 0, 0), thickness=-1)
        cv2.putText(image, text, (6, th + 5), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                    cv2.LINE_AA)

    def close(self) -> None:  # noqa: D102
        if self._open:
            self._open = False
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)
