"""Tests for the live window: keys, view, snapshots, recordings, the smoothing control.

The pure parts (key table, view, snapshot files, recorder, control) run everywhere. The
window itself runs in a child ``depthstream live`` process under Xvfb, driven with
xdotool and photographed with ImageMagick's ``import``; its network is a test double
that takes a fixed time per frame (``support.fakes.cheap_estimator``), so the window's
speed is measured against a deliberately slow network.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from support.clips import make_clip, read_video
from support.fakes import cheap_estimator

from stream.cli import main
from stream.core.errors import SinkError
from stream.core.records import DepthFrame, VideoInfo
from stream.core.settings import COLORMAP_NAMES, EncoderSettings, Layout
from stream.depth.colormap import minmax
from stream.depth.render import Renderer
from stream.geometry.metric import MetricScale
from stream.models.transforms import to_rgb
from stream.sinks.base import depth_to_u16
from stream.window.control import ControlledRange, ControlledSmoother, LiveControl
from stream.window.keys import KEYS, Action, key_action, key_help
from stream.window.sink import WindowSink
from stream.window.snapshot import Recorder, snapshot_stem, write_snapshot
from stream.window.view import MIN_HEIGHT, MIN_WIDTH, WindowView

ROOT = Path(__file__).resolve().parents[2]


def _frame(index: int = 0, size_wh: tuple[int, int] = (64, 48), t: float | None = None,
           lo: float = 0.0, hi: float = 1.0) -> DepthFrame:
    width, height = size_wh
    rng = np.random.default_rng(index)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    depth = (np.linspace(0, 1, width, dtype=np.float32)[None, :]
             * np.linspace(0.5, 1, height, dtype=np.float32)[:, None]) + np.float32(index * 0.01)
    return DepthFrame(index, index / 30 if t is None else t, image, depth.astype(np.float32),
                      5.0, lo=lo, hi=hi)


# --------------------------------------------------------------------------- keys


def test_every_action_has_a_key_and_a_help_line():
    assert set(KEYS.values()) == set(Action)
    lines = key_help()
    assert len(lines) == len(Action) + 1 and lines[-1].startswith("click")
    for action in Action:
        assert any(action.value in line for line in lines)


@pytest.mark.parametrize("code, action", [
    (ord("q"), Action.QUIT), (ord("Q"), Action.QUIT), (27, Action.QUIT),
    (ord(" "), Action.PAUSE), (ord("+"), Action.SMOOTH_UP), (ord("="), Action.SMOOTH_UP),
    (ord("-"), Action.SMOOTH_DOWN), (ord("S"), Action.SNAPSHOT), (ord("o"), Action.RECORD),
    (-1, None), (ord("x"), None), (0x1000012, None),  # Qt's left arrow: not "\x12"
])
def test_key_codes(code, action):
    assert key_action(code) is action


def test_live_help_lists_the_keys_and_encoder_options(capsys):
    assert main(["live", "--help"]) == 0
    out = capsys.readouterr().out
    for line in key_help():
        assert line in out
    for flag in ("--snapshot-dir", "--crf", "--preset", "--codec"):
        assert flag in out


# --------------------------------------------------------------------------- control


def test_live_control_steps_within_0_and_1():
    control = LiveControl(0.8)
    assert control.step(1) == pytest.approx(0.9)
    assert control.step(1) == pytest.approx(1.0)
    assert control.step(1) == pytest.approx(1.0)
    for _ in range(12):
        control.step(-1)
    assert control.strength == 0.0
    fixed = LiveControl(0.0, adjustable=False)
    assert fixed.step(1) == 0.0


def test_live_control_is_safe_across_threads():
    control = LiveControl(0.5)

    def press(steps):
        for _ in range(2000):
            control.step(steps)
            control.request_reset()

    threads = [threading.Thread(target=press, args=(s,)) for s in (1, -1, 1, -1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    strength, resets = control.state()
    assert resets == 8000 and 0.0 <= strength <= 1.0


def _depths(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.random((48, 64)).astype(np.float32) + 1
    return [base + rng.normal(0, 0.05, base.shape).astype(np.float32) for _ in range(count)]


def test_controlled_smoother_applies_strength_and_reset_on_its_own_thread():
    control = LiveControl(0.8)
    smoother = ControlledSmoother(control)
    image = np.zeros((48, 64, 3), np.uint8)
    depths = _depths(6)
    smoother.update(depths[0], image)
    smoothed = smoother.update(depths[1], image)
    assert not smoother.scene_cut and not np.allclose(smoothed, depths[1])
    control.step(-8)  # to 0: off
    out = smoother.update(depths[2], image)
    assert smoother.strength == 0.0 and smoother.scene_cut  # a restart: the range resets
    np.testing.assert_array_equal(out, depths[2])
    smoother.update(depths[3], image)
    assert not smoother.scene_cut
    control.step(5)
    control.request_reset()
    smoother.update(depths[4], image)
    assert smoother.strength == pytest.approx(0.5) and smoother.scene_cut


def test_controlled_range_resets_on_request():
    control = LiveControl(0.0, adjustable=False)
    colour_range = ControlledRange(control)
    ramp = np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10)
    assert colour_range.update(ramp) == pytest.approx((0.02, 0.98), abs=0.01)
    eased = colour_range.update(ramp + 5)
    assert eased[0] < 5  # eased towards the new values, not there yet
    control.request_reset()
    assert colour_range.update(ramp + 5)[0] == pytest.approx(5.02, abs=0.01)


# --------------------------------------------------------------------------- view


def test_view_enlarges_small_pictures_and_side_is_twice_as_wide():
    view = WindowView(Renderer(), (64, 48))
    placeholder = view.compose()
    assert placeholder.shape[1] >= MIN_WIDTH and placeholder.shape[0] >= MIN_HEIGHT
    view.show(_frame())
    image = view.compose()
    factor = max(-(-MIN_WIDTH // 64), -(-MIN_HEIGHT // 48))
    assert image.shape == (48 * factor, 64 * factor, 3)
    assert view.cycle_layout() is Layout.SIDE
    assert view.compose().shape[1] == 2 * view.compose().shape[0] * 64 // 48


def test_view_keys_change_the_pixels_and_pause_holds_the_frame():
    view = WindowView(Renderer(), (64, 48))
    view.hud = False
    view.show(_frame(0))
    first = view.compose()
    view.toggle("paused")
    assert not view.show(_frame(1))
    assert view.frame.index == 0
    held = view.compose()
    np.testing.assert_array_equal(held[-20:], first[-20:])  # a "paused" note is not drawn
    before = held
    for change in (view.cycle_colormap, view.invert, view.cycle_layout):
        change()
        view._message = None  # compare pictures, not the confirmation line
        after = view.compose()
        assert after.shape != before.shape or np.abs(
            after.astype(int) - before.astype(int)).mean() > 5, change.__name__
        before = after
    assert view.renderer.cmap == COLORMAP_NAMES[1] and view.renderer.invert
    view.toggle("paused")
    assert view.show(_frame(2)) and view.frame.index == 2


def test_view_help_fits_a_small_window():
    view = WindowView(Renderer(), (32, 24))
    view.show(_frame(0, (32, 24)))
    plain = view.compose()
    view.toggle("help")
    shown = view.compose()
    assert shown.shape == plain.shape and (shown != plain).any()


def test_click_probes_the_pixel_in_every_layout_and_reports_metres():
    frame = _frame(0, (64, 48), lo=0.2, hi=0.8)
    view = WindowView(Renderer(), (64, 48))
    view.show(frame)
    view.compose()
    factor = view._factor
    assert view.click(10 * factor + 1, 20 * factor + 1) == (10, 20)
    value = float(frame.depth[20, 10])
    share = 100 * (value - 0.2) / 0.6
    assert view.probe_text() == f"rel {value:.3g} ({min(max(share, 0), 100):.0f}% near)"
    view.cycle_layout()  # side: either half probes the same pixel
    view.compose()
    factor = view._factor
    assert view.click((64 + 10) * factor, 20 * factor) == (10, 20)
    assert view.click(10 * factor, 20 * factor) == (10, 20)
    metric = MetricScale(scale=2.0, shift=0.1, points=2, rms_rel_error=0.0)
    view.show(DepthFrame(1, 0.1, frame.image, frame.depth, 5.0, lo=0.2, hi=0.8))
    view.frame = SimpleNamespace(**{k: getattr(frame, k) for k in ("depth", "lo", "hi",
                                                                   "size_wh")},
                                 camera=SimpleNamespace(metric=metric))
    metres = 1 / (2.0 * value + 0.1)
    assert view.probe_text().startswith(f"{metres:.2f} m, rel ")
    view.clear_probe()
    assert view.probe_text() is None


# --------------------------------------------------------------------------- files


def test_snapshot_writes_four_files_named_by_timestamp(tmp_path):
    frame = _frame(3, (64, 48), t=12.3456, lo=0.1, hi=0.9)
    paths = write_snapshot(tmp_path, frame, Renderer(layout="side", cmap="jet"))
    assert snapshot_stem(frame) == "snapshot_12.346s"
    assert [p.name for p in paths] == [f"snapshot_12.346s_{n}" for n in (
        "colour.png", "depth.png", "depth16.png", "depth.npy")]
    colour = cv2.imread(str(paths[0]))
    np.testing.assert_array_equal(colour, frame.image)
    depth = cv2.imread(str(paths[1]))
    np.testing.assert_array_equal(depth, Renderer(cmap="jet").render(frame))  # depth only
    raw16 = cv2.imread(str(paths[2]), cv2.IMREAD_UNCHANGED)
    assert raw16.dtype == np.uint16 and raw16.shape == (48, 64)
    np.testing.assert_array_equal(raw16, depth_to_u16(frame.depth, *minmax(frame.depth)))
    npy = np.load(paths[3])
    assert npy.dtype == np.float32
    np.testing.assert_array_equal(npy, frame.depth)
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in paths)  # no temporaries


def test_recorder_writes_a_playable_file_per_recording(tmp_path):
    info = VideoInfo(64, 48, Fraction(30), time_base=Fraction(1, 30), has_audio=True)
    recorder = Recorder(tmp_path, info)
    now = __import__("datetime").datetime(2024, 5, 6, 7, 8, 9)
    first = recorder.start(Renderer(), now=now)
    assert first.name == "depth_20240506_070809.mp4" and recorder.active
    for i in range(10):
        recorder.write(_frame(i, t=100 + i / 30))
    done = recorder.stop()
    assert not recorder.active and done.frames == 10 and done.size_bytes > 0
    video = read_video(first)
    assert len(video["images"]) == 10 and video["size_wh"] == (64, 48)
    assert video["seconds"][0] == pytest.approx(0.0) and video["audio"] == []
    assert video["seconds"][-1] == pytest.approx(9 / 30, abs=1e-3)
    second = recorder.start(Renderer(layout="side"), now=now)  # same second: a new name
    assert second.name == "depth_20240506_070809-2.mp4"
    for i in range(3):
        recorder.write(_frame(i))
    recorder.stop()
    assert read_video(second)["size_wh"] == (128, 48)
    third = recorder.start(Renderer(), now=now)
    assert recorder.stop().frames == 0 and not third.exists()  # nothing recorded: no file
    lossless = Recorder(tmp_path, info, EncoderSettings(codec="ffv1"))
    assert lossless.start(Renderer()).suffix == ".mkv"
    lossless.write(_frame(0))
    lossless.stop()


def test_window_makes_its_snapshot_folder(tmp_path, monkeypatch):
    monkeypatch.setattr("stream.window.sink.check_display", lambda: None)
    WindowSink(snapshot_dir=tmp_path / "shots" / "today")
    assert (tmp_path / "shots" / "today").is_dir()


def test_a_file_in_the_way_of_the_snapshot_folder_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr("stream.window.sink.check_display", lambda: None)
    (tmp_path / "shots").write_text("not a folder")
    with pytest.raises(SinkError, match="cannot use .*shots for snapshots"):
        WindowSink(snapshot_dir=tmp_path / "shots")


# --------------------------------------------------------------------------- under Xvfb

needs_x = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("Xvfb", "xdotool", "import")),
    reason="needs Xvfb, xdotool and ImageMagick's import (apt-get install xvfb xdotool "
           "imagemagick)")

_RUNNER = """
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.signal(signal.SIGTERM, signal.SIG_DFL)
sys.path[:0] = [{tests!r}, {root!r}]
import stream.engines.estimator
from support.fakes import cheap_estimator
stream.engines.estimator.create_estimator = lambda *a, **k: cheap_estimator(delay_s={delay!r})
from stream.cli import main
sys.exit(main(sys.argv[1:]))
"""


class _X11:
    """Xlib through ctypes: XTest keys, a window's pixels, and its close button.

    Keys and pixels are timed exactly (no process started per key); the close button is
    the message a window manager sends when its close button is clicked.
    """

    def __init__(self, display: str) -> None:
        x11 = ctypes.cdll.LoadLibrary(ctypes.util.find_library("X11"))
        xtst = ctypes.cdll.LoadLibrary(ctypes.util.find_library("Xtst"))
        p, u, i = ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int
        x11.XOpenDisplay.restype, x11.XOpenDisplay.argtypes = p, [ctypes.c_char_p]
        x11.XInternAtom.restype, x11.XInternAtom.argtypes = u, [p, ctypes.c_char_p, i]
        x11.XStringToKeysym.restype, x11.XStringToKeysym.argtypes = u, [ctypes.c_char_p]
        x11.XKeysymToKeycode.restype, x11.XKeysymToKeycode.argtypes = ctypes.c_ubyte, [p, u]
        x11.XSync.argtypes = [p, i]
        x11.XSendEvent.argtypes = [p, u, i, ctypes.c_long, ctypes.POINTER(_Event)]
        x11.XGetGeometry.argtypes = [p, u] + [ctypes.c_void_p] * 7
        x11.XGetImage.restype = ctypes.POINTER(_Image)
        x11.XGetImage.argtypes = [p, u, i, i, ctypes.c_uint, ctypes.c_uint, u, i]
        x11.XDestroyImage.argtypes = [ctypes.POINTER(_Image)]
        x11.XCloseDisplay.argtypes = [p]
        xtst.XTestFakeKeyEvent.argtypes = [p, ctypes.c_uint, i, u]
        self.x11, self.xtst = x11, xtst
        self.dpy = x11.XOpenDisplay(display.encode())
        assert self.dpy, f"cannot open display {display}"

    def key(self, name: str) -> None:
        """Press and release the key ``name`` (an X keysym: ``h``, ``space``) now."""
        code = self.x11.XKeysymToKeycode(self.dpy, self.x11.XStringToKeysym(name.encode()))
        self.xtst.XTestFakeKeyEvent(self.dpy, code, 1, 0)
        self.xtst.XTestFakeKeyEvent(self.dpy, code, 0, 0)
        self.x11.XSync(self.dpy, 0)

    def grab(self, window: str) -> np.ndarray:
        """The window's pixels now, BGR."""
        root, x, y = ctypes.c_ulong(), ctypes.c_int(), ctypes.c_int()
        width, height, border, depth = (ctypes.c_uint() for _ in range(4))
        self.x11.XGetGeometry(self.dpy, int(window), *(ctypes.byref(v) for v in (
            root, x, y, width, height, border, depth)))
        image = self.x11.XGetImage(self.dpy, int(window), 0, 0, width, height, 2**32 - 1, 2)
        try:
            info = image.contents
            data = ctypes.string_at(info.data, info.bytes_per_line * info.height)
            rows = np.frombuffer(data, np.uint8).reshape(info.height, info.bytes_per_line)
            return rows[:, : info.width * 4].reshape(info.height, info.width, 4)[:, :, :3].copy()
        finally:
            self.x11.XDestroyImage(image)

    def close_window(self, window: str) -> None:
        """What a window manager's close button sends: WM_PROTOCOLS / WM_DELETE_WINDOW."""
        event = _Event()
        event.xclient.type = 33  # ClientMessage
        event.xclient.window = int(window)
        event.xclient.message_type = self.x11.XInternAtom(self.dpy, b"WM_PROTOCOLS", 0)
        event.xclient.format = 32
        event.xclient.data[0] = self.x11.XInternAtom(self.dpy, b"WM_DELETE_WINDOW", 0)
        self.x11.XSendEvent(self.dpy, int(window), 0, 0, ctypes.byref(event))
        self.x11.XSync(self.dpy, 0)

    def close(self) -> None:
        self.x11.XCloseDisplay(self.dpy)


class _ClientMessage(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("serial", ctypes.c_ulong), ("send_event", ctypes.c_int),
                ("display", ctypes.c_void_p), ("window", ctypes.c_ulong),
                ("message_type", ctypes.c_ulong), ("format", ctypes.c_int),
                ("data", ctypes.c_long * 5)]


class _Event(ctypes.Union):
    _fields_ = [("xclient", _ClientMessage), ("pad", ctypes.c_long * 24)]


class _Image(ctypes.Structure):  # the start of Xlib's XImage
    _fields_ = [("width", ctypes.c_int), ("height", ctypes.c_int), ("xoffset", ctypes.c_int),
                ("format", ctypes.c_int), ("data", ctypes.c_void_p),
                ("byte_order", ctypes.c_int), ("bitmap_unit", ctypes.c_int),
                ("bitmap_bit_order", ctypes.c_int), ("bitmap_pad", ctypes.c_int),
                ("depth", ctypes.c_int), ("bytes_per_line", ctypes.c_int),
                ("bits_per_pixel", ctypes.c_int)]


@pytest.fixture(scope="module")
def xserver():
    """A private Xvfb display, 1280x800."""
    number = next(n for n in range(100, 300) if not Path(f"/tmp/.X11-unix/X{n}").exists())
    proc = subprocess.Popen(["Xvfb", f":{number}", "-screen", "0", "1280x800x24",
                             "-nolisten", "tcp"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for _ in range(100):
        if Path(f"/tmp/.X11-unix/X{number}").exists():
            break
        time.sleep(0.05)
    yield f":{number}"
    proc.terminate()
    proc.wait(10)


class _App:
    """``depthstream live`` in a child process on ``display``, with its output as lines."""

    def __init__(self, display: str, tmp: Path, delay_s: float, *args: str) -> None:
        self.display, self.tmp = display, tmp
        self.env = {**os.environ, "DISPLAY": display}
        runner = tmp / "runner.py"
        runner.write_text(_RUNNER.format(tests=str(ROOT / "tests"), root=str(ROOT),
                                         delay=delay_s))
        self.clip = make_clip(tmp / "in.mp4", 900, (160, 120), audio=False)
        self.proc = subprocess.Popen(
            [sys.executable, "-u", str(runner), "live", "--file", str(self.clip), "--realtime",
             "--snapshot-dir", str(tmp), "--duration", "120", *args],
            cwd=tmp, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[tuple[float, str]] = queue.Queue()
        self.errors: list[str] = []
        self._readers = [threading.Thread(target=self._read, daemon=True),
                         threading.Thread(target=self._read_errors, daemon=True)]
        for reader in self._readers:
            reader.start()
        self.window = self._find_window()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put((time.monotonic(), line.rstrip("\n")))

    def _read_errors(self) -> None:
        self.errors.extend(self.proc.stderr)

    def _xdo(self, *args: str) -> str:
        return subprocess.run(["xdotool", *args], env=self.env, capture_output=True, text=True,
                              check=True).stdout.strip()

    def _find_window(self) -> str:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.proc.poll() is None:
            found = subprocess.run(["xdotool", "search", "--name", "^depthstream$"],
                                   env=self.env, capture_output=True, text=True).stdout.split()
            if found:
                self._xdo("windowfocus", "--sync", found[0])
                return found[0]
            time.sleep(0.2)
        raise AssertionError(f"no window: {self.finish(0.1)}")

    def key(self, name: str) -> float:
        """Press ``name``; return when it was pressed."""
        start = time.monotonic()
        self._xdo("key", name)
        return start

    def line(self, prefix: str, timeout: float = 10.0) -> tuple[float, str]:
        deadline = time.monotonic() + timeout
        while True:
            at, line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            if line.startswith(prefix):
                return at, line

    def shot(self) -> np.ndarray:
        path = self.tmp / "shot.png"
        subprocess.run(["import", "-window", self.window, str(path)], env=self.env, check=True)
        return cv2.imread(str(path))

    def geometry(self) -> tuple[int, int]:
        text = self._xdo("getwindowgeometry", self.window)
        width, height = re.search(r"Geometry: (\d+)x(\d+)", text).groups()
        return int(width), int(height)

    def finish(self, timeout: float = 60) -> tuple[int | None, str, str]:
        """Wait for the exit (kill after ``timeout``): exit code, stdout left, stderr."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for reader in self._readers:
            reader.join(10)
        lines = []
        while not self.lines.empty():
            lines.append(self.lines.get()[1])
        return self.proc.returncode, "\n".join(lines), "".join(self.errors)


def _middle(image: np.ndarray) -> np.ndarray:
    """The picture without the status line (top) and confirmation messages (bottom)."""
    height = image.shape[0]
    return image[height // 5: height * 4 // 5].astype(int)


def _white(image: np.ndarray) -> int:
    """Pixels of white text where the list of keys is drawn (inferno has no white)."""
    height, width = image.shape[:2]
    return int((image[height // 8: height // 2, 20: width // 2] > 240).all(axis=2).sum())


@needs_x
def test_keys_within_100_ms_while_the_network_takes_500_and_snapshots(xserver, tmp_path):
    app = _App(xserver, tmp_path, 0.5, "--no-smooth")
    x11 = _X11(xserver)
    try:
        time.sleep(1.0)  # the first frames are shown
        x11.key("x")  # no action: Qt loads its keyboard map on the first key
        time.sleep(0.5)
        latencies = []
        # At different points of a 500 ms frame: the list of keys on, off, on...
        for wait in (0.13, 0.31, 0.07, 0.44, 0.22, 0.36):
            time.sleep(wait)
            shown = _white(x11.grab(app.window)) > 200
            pressed = time.monotonic()
            x11.key("h")
            while (_white(x11.grab(app.window)) > 200) == shown:
                assert time.monotonic() - pressed < 2, "h was not handled"
                time.sleep(0.002)  # leave the cores to the window and the X server
            latencies.append((time.monotonic() - pressed) * 1000)
        snapshots = []
        for wait in (0.1, 0.35, 0.6):
            time.sleep(wait)
            app.key("s")
            snapshots.append(app.line("snapshot at ")[1])
        rc, out, err = _finish_with_q(app)
    finally:
        x11.close()
        if app.proc.poll() is None:
            app.proc.kill()
    print("key to picture, ms:", [round(x) for x in latencies])
    # Within 100 ms; one press of six may miss it by a scheduler's hiccup on a machine with
    # more busy threads than cores. Keys read once per frame would take 0-500 ms each.
    assert sorted(latencies)[-2] < 100 and max(latencies) < 300, latencies
    assert rc == 0 and err.strip() == "", err
    video = read_video(app.clip)
    for line in snapshots:
        paths = [Path(p) for p in line.split(": ", 1)[1].split(", ")]
        assert [p.parent for p in paths] == [tmp_path] * 4 and all(p.exists() for p in paths)
        seconds = float(re.search(r"snapshot_([\d.]+)s_colour", paths[0].name).group(1))
        index = int(np.argmin(np.abs(np.array(video["seconds"]) - seconds)))
        assert abs(video["seconds"][index] - seconds) < 1e-3  # the frame's own timestamp
        colour = cv2.imread(str(paths[0]))
        assert colour.shape == (120, 160, 3)
        assert np.abs(colour.astype(int) - video["images"][index]).max() <= 2
        assert cv2.imread(str(paths[1])).shape == (120, 160, 3)
        raw16 = cv2.imread(str(paths[2]), cv2.IMREAD_UNCHANGED)
        assert raw16.dtype == np.uint16 and raw16.shape == (120, 160)
        depth = np.load(paths[3])
        expected, _ = cheap_estimator().predict(to_rgb(colour, "bgr"))
        assert depth.dtype == np.float32 and depth.shape == (120, 160)
        np.testing.assert_allclose(depth, expected, rtol=1e-5, atol=1e-5)


def _finish_with_q(app: _App) -> tuple[int, str, str]:
    app.key("q")
    return app.finish()


@needs_x
def test_pause_layout_colormap_invert_help_click_fullscreen(xserver, tmp_path):
    app = _App(xserver, tmp_path, 0.03)
    try:
        # The window exists before it first draws; on a loaded machine that can take a while.
        deadline = time.monotonic() + 15
        while not _middle(app.shot()).any() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
        moving = [app.shot(), None]
        time.sleep(0.5)
        moving[1] = app.shot()
        assert np.abs(_middle(moving[0]) - _middle(moving[1])).mean() > 2  # frames come in
        app.key("space")
        time.sleep(0.4)
        held = app.shot()
        time.sleep(1.0)
        np.testing.assert_array_equal(_middle(app.shot()), _middle(held))  # held
        before = held
        for key in ("c", "i", "l", "h"):
            app.key(key)
            time.sleep(0.4)
            after = app.shot()
            assert after.shape != before.shape or np.abs(
                _middle(after) - _middle(before)).mean() > 2, key
            before = after
        aspect = before.shape[1] / before.shape[0]
        assert aspect == pytest.approx(2 * moving[0].shape[1] / moving[0].shape[0])  # side
        app.key("h")
        time.sleep(0.3)
        plain = app.shot()
        width, height = plain.shape[1], plain.shape[0]
        app._xdo("mousemove", "--window", app.window, str(width * 3 // 4), str(height // 2),
                 "click", "1")
        time.sleep(0.4)
        probed = app.shot()
        near = (slice(height // 2 - 20, height // 2 + 40),
                slice(width * 3 // 4 - 20, width * 3 // 4 + 150))
        assert np.abs(probed[near].astype(int) - plain[near]).mean() > 5  # marker and value
        # Fullscreen is the window manager's job (Xvfb has none): f twice must leave the
        # window as it was and still answering.
        for _ in range(2):
            app.key("f")
            time.sleep(0.3)
        assert app.geometry() == (width, height)
        app.key("space")
        time.sleep(0.5)
        assert np.abs(_middle(app.shot()) - _middle(probed)).mean() > 2  # resumed
        rc, out, err = _finish_with_q(app)
    finally:
        if app.proc.poll() is None:
            app.proc.kill()
    assert rc == 0 and err.strip() == "", err
    last = out.strip().splitlines()[-1]
    # Paused or not, the source was read at its own pace (30 fps for about 8 s).
    assert int(re.match(r"live: (\d+) frames read", last).group(1)) > 120, last


@needs_x
def test_recording_from_the_window_and_the_close_button(xserver, tmp_path):
    app = _App(xserver, tmp_path, 0.03, "--crf", "30")
    try:
        time.sleep(1.0)
        app.key("o")
        _, started = app.line("recording to ")
        time.sleep(1.5)
        app.key("o")
        _, done = app.line("recorded ")
        app.key("l")  # the next recording is side by side
        time.sleep(0.3)
        app.key("o")
        _, second = app.line("recording to ")
        time.sleep(1.0)
        x11 = _X11(xserver)
        x11.close_window(app.window)  # while recording
        x11.close()
        rc, out, err = app.finish()
    finally:
        if app.proc.poll() is None:
            app.proc.kill()
    assert rc == 0 and err.strip() == "", err
    assert out.strip().splitlines()[-1].startswith("live: ")
    first = Path(started.split("recording to ", 1)[1])
    assert re.fullmatch(r"depth_\d{8}_\d{6}\.mp4", first.name) and first.parent == tmp_path
    frames = int(re.search(r": (\d+) frames", done).group(1))
    video = read_video(first)
    assert len(video["images"]) == frames >= 10 and video["size_wh"] == (160, 120)
    assert video["codec"] == "h264"
    path = Path(second.split("recording to ", 1)[1])
    assert f"recorded {path}" in out  # finished when the window was closed
    assert read_video(path)["size_wh"] == (320, 120)
