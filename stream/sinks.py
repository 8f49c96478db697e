"""Sinks: everything that writes pictures, videos, raw depth, windows and sockets.

Only this module (and :mod:`stream.sources`) touches files, devices and PyAV. A video
sink receives :class:`stream.records.DepthFrame` s on the pipeline's render thread:
``open(context)`` once, ``write(frame)`` per frame, ``close()`` (safe twice). Files are
written to a temporary ``.part`` file and renamed into place when closed, so an output
path holds either nothing or a playable file.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import cv2
import numpy as np

from .colormap import COLORMAPS, colorize, minmax
from .errors import ConfigError, SinkError
from .records import DepthFrame, VideoInfo
from .sources import _av_reason

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "write_image",
    "depth_to_u16",
    "write_depth_raw",
    "check_output_path",
    "Layout",
    "RawFormat",
    "Renderer",
    "SinkContext",
    "Sink",
    "VIDEO_FORMATS",
    "check_video_output",
    "VideoFileSink",
    "WindowSink",
    "check_display",
    "RawDepthSink",
    "CallbackSink",
]


def check_output_path(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Check that ``path`` can be written: its folder exists and it is not there yet.

    Raises:
        SinkError: missing folder, or an existing file without ``overwrite``.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise SinkError(f"output folder does not exist: {path.parent}")
    if path.is_dir():
        raise SinkError(f"output is a folder: {path}")
    if path.exists() and not overwrite:
        raise SinkError(f"output exists: {path} (use --overwrite to replace it)")
    return path


def write_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write a picture (format from the extension) atomically: temporary file, then rename.

    Raises:
        SinkError: the picture cannot be encoded or written.
    """
    path = Path(path)
    ok, data = cv2.imencode(path.suffix or ".png", image)
    if not ok:
        raise SinkError(f"cannot encode a picture as {path.suffix or '.png'}: {path}")
    _write_atomic(path, data.tobytes())
    return path


def depth_to_u16(depth: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Depth scaled linearly so ``lo`` -> 0 and ``hi`` -> 65535 (clipped), uint16."""
    span = float(hi) - float(lo)
    if span <= 0 or not np.isfinite(span):
        return np.zeros(depth.shape, np.uint16)
    scaled = (depth.astype(np.float64) - lo) * (65535.0 / span)
    return np.clip(np.nan_to_num(scaled), 0, 65535).round().astype(np.uint16)


def write_depth_raw(stem: str | os.PathLike, depth: np.ndarray, lo: float, hi: float,
                    npy: bool = True) -> list[Path]:
    """Write ``<stem>.png`` (16-bit, lo..hi) and, with ``npy``, ``<stem>.npy`` (float32)."""
    stem = Path(stem)
    written = [write_image(stem.with_suffix(".png"), depth_to_u16(depth, lo, hi))]
    if npy:
        target = stem.with_suffix(".npy")
        with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".npy.part", delete=False) as f:
            np.save(f, depth.astype(np.float32, copy=False))
        os.replace(f.name, target)
        written.append(target)
    return written


def _write_atomic(path: Path, data: bytes) -> None:
    try:
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        raise SinkError(f"cannot write {path}: {exc.strerror or exc}") from exc


# --------------------------------------------------------------------------- rendering


class Layout(Enum):
    """What a window or video shows: the depth, picture and depth side by side, or a blend."""

    DEPTH = "depth"
    SIDE = "side"
    OVERLAY = "overlay"


class RawFormat(Enum):
    """Raw depth files per frame: 16-bit PNG, or 16-bit PNG plus float32 ``.npy``."""

    PNG = "png"
    NPY = "npy"


@dataclass(frozen=True)
class Renderer:
    """How a :class:`DepthFrame` becomes a BGR picture (colour range: the frame's lo/hi).

    Attributes:
        layout: depth only, side by side (twice as wide), or depth blended over the picture.
        alpha: weight of the depth colours in the overlay, 0..1.
        cmap: one of :data:`stream.colormap.COLORMAPS`.
        invert: show near as dark.
    """

    layout: Layout = Layout.DEPTH
    alpha: float = 0.5
    cmap: str = "inferno"
    invert: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.layout, Layout):
            object.__setattr__(self, "layout", parse_enum(Layout, self.layout, "layout"))
        if not 0.0 <= float(self.alpha) <= 1.0:
            raise ConfigError(f"alpha must be between 0 and 1, got {self.alpha}")
        if self.cmap not in COLORMAPS:
            raise ConfigError(
                f"unknown colormap {self.cmap!r}; choose one of {', '.join(COLORMAPS)}")

    def size_wh(self, size_wh: tuple[int, int]) -> tuple[int, int]:
        """Size of the rendered picture for frames of ``size_wh``."""
        width, height = size_wh
        return (2 * width if self.layout is Layout.SIDE else width), height

    def render(self, frame: DepthFrame) -> np.ndarray:
        """The picture to show or encode: BGR uint8, :meth:`size_wh` of the frame."""
        colour = colorize(frame.depth, frame.lo, frame.hi, cmap=self.cmap, invert=self.invert)
        if self.layout is Layout.SIDE:
            return np.hstack([frame.image, colour])
        if self.layout is Layout.OVERLAY:
            return cv2.addWeighted(frame.image, 1.0 - self.alpha, colour, self.alpha, 0.0)
        return colour


def parse_enum(kind: type[Enum], value: Any, what: str) -> Any:
    """``kind(value)``, or a :class:`ConfigError` that lists the choices (package-internal)."""
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(str(m.value) for m in kind)
        raise ConfigError(f"unknown {what} {value!r}; choose one of {choices}") from None


# --------------------------------------------------------------------------- sink interface


@dataclass(frozen=True)
class SinkContext:
    """What the pipeline tells its sinks when it opens them (on the render thread).

    Attributes:
        info: the source's stream description (size, rate, time base, live or not).
        stop: the pipeline's cancellation event; a sink that may block checks it.
        dropped: the number of frames dropped so far (live input), for status lines.
    """

    info: VideoInfo
    stop: threading.Event = field(default_factory=threading.Event)
    dropped: Callable[[], int] = field(default=lambda: 0)


class Sink:
    """Interface: ``open(context)``, ``write(frame)`` per frame, ``close()`` (safe twice).

    All three run on the pipeline's render thread. ``done`` turns True when the sink
    asks the pipeline to stop (a window the user closed); the pipeline then stops
    cleanly, as at the end of the input.
    """

    done: bool = False

    def open(self, context: SinkContext) -> None:
        """Prepare to receive frames of ``context.info``."""

    def write(self, frame: DepthFrame) -> None:
        """Consume one frame."""
        raise NotImplementedError

    def close(self) -> None:
        """Finish and release everything (safe to call twice)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CallbackSink(Sink):
    """Call ``fn(frame)`` for each frame, on the render thread (for in-process consumers)."""

    def __init__(self, fn: Callable[[DepthFrame], Any]) -> None:
        self.fn = fn

    def write(self, frame: DepthFrame) -> None:  # noqa: D102
        self.fn(frame)


# --------------------------------------------------------------------------- video file


@dataclass(frozen=True)
class _VideoFormat:
    container: str
    video_codec: str
    video_options: dict[str, str]
    audio_codec: str


VIDEO_FORMATS: dict[str, _VideoFormat] = {
    # ultrafast: about 3 ms a 640x480 frame on one thread (veryfast: 4 ms); depth maps are
    # smooth, so the larger file costs little, and the cores stay with the network.
    ".mp4": _VideoFormat("mp4", "libx264", {"preset": "ultrafast", "crf": "20"}, "aac"),
    ".mkv": _VideoFormat("matroska", "libx264", {"preset": "ultrafast", "crf": "20"}, "aac"),
    # VP9's realtime settings: the default "good" deadline is ten times slower.
    ".webm": _VideoFormat("webm", "libvpx-vp9",
                          {"deadline": "realtime", "cpu-used": "8", "row-mt": "1",
                           "crf": "32", "b": "0"}, "libopus"),
}
"""Output video types by extension: container, video codec and options, audio codec."""

_LIVE_TIME_BASE = Fraction(1, 90000)


def check_video_output(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Check a video output path: a known extension, an existing folder, not there yet.

    Raises:
        SinkError: unknown extension, missing folder, or an existing file without
            ``overwrite``.
    """
    path = Path(path)
    if path.suffix.lower() not in VIDEO_FORMATS:
        raise SinkError(f"cannot write video as {path.suffix or 'a file without extension'}: "
                        f"{path} (use {', '.join(VIDEO_FORMATS)})")
    return check_output_path(path, overwrite=overwrite)


class VideoFileSink(Sink):
    """Encode rendered frames with PyAV: H.264 in MP4 or MKV, VP9 + Opus in WebM.

    The output keeps the input's exact frame rate (``30000/1001`` stays so) and every
    frame's timestamp (variable frame rate stays in sync): frames are encoded in the
    source's time base with the source's pts. With ``audio_from``, that file's first
    audio stream is copied packet by packet when the container takes its codec, else
    re-encoded (AAC, Opus for WebM), interleaved with the video up to the last frame.
    Written to ``<name>.<random>.part`` and renamed when closed; no frame -> no file.

    Args:
        path: output file, ``.mp4``, ``.mkv`` or ``.webm``.
        renderer: layout and colours.
        audio_from: the input video whose audio to carry over (``None``: no audio).
        overwrite: replace an existing file.
        threads: encoder threads (few, so the encoder leaves the cores to the network).

    Raises:
        SinkError: bad extension, missing folder, or existing file (at construction).
    """

    def __init__(self, path: str | os.PathLike, renderer: Renderer | None = None,
                 audio_from: str | os.PathLike | None = None, overwrite: bool = False,
                 threads: int = 1) -> None:
        self.path = check_video_output(path, overwrite=overwrite)
        self.renderer = renderer or Renderer()
        self.audio_from = Path(audio_from) if audio_from is not None else None
        self.threads = threads
        self.frames_written = 0
        self._output: Any = None
        self._tmp: Path | None = None
        self._audio: _AudioTrack | None = None
        self._closed = False

    def open(self, context: SinkContext) -> None:
        """Create the temporary file and its streams (on the render thread)."""
        info = context.info
        fmt = VIDEO_FORMATS[self.path.suffix.lower()]
        width, height = _even(self.renderer.size_wh(info.size_wh))
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".part",
                                   dir=self.path.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        try:
            self._output = av.open(tmp, "w", format=fmt.container)
            # Encode in the source's own time base with its pts: the rate and every
            # timestamp survive exactly (no rounding to 1/rate ticks).
            self._time_base = info.time_base or _LIVE_TIME_BASE
            self._rate = info.rate or Fraction(30)
            stream = self._output.add_stream(fmt.video_codec, rate=self._rate)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.codec_context.time_base = self._time_base
            stream.time_base = self._time_base
            stream.codec_context.thread_count = self.threads
            stream.options = dict(fmt.video_options)
            self._stream = stream
            if self.audio_from is not None and info.has_audio:
                self._audio = _AudioTrack(self.audio_from, self._output, fmt.audio_codec)
            self._output.start_encoding()
            if self._audio is not None:
                self._audio.start()
        except (av.FFmpegError, OSError) as exc:
            self._discard()
            raise SinkError(f"cannot write video {self.path}: {_av_reason(exc)}") from exc
        self._size_wh = (width, height)
        self._last_pts: int | None = None
        self._last_step = max(1, round(1 / (self._rate * self._time_base)))

    def write(self, frame: DepthFrame) -> None:
        """Render, encode and mux one frame (and the audio up to its time)."""
        image = _pad_to(self.renderer.render(frame), self._size_wh)
        pts = frame.pts if frame.pts is not None else round(frame.timestamp / self._time_base)
        if self._last_pts is not None:
            if pts <= self._last_pts:  # equal monotonic stamps after rounding: keep order
                pts = self._last_pts + 1
            self._last_step = pts - self._last_pts
        self._last_pts = pts
        if self._stream.pix_fmt == "yuv420p":
            # OpenCV converts to limited-range BT.601 I420 as swscale does (within 1 level)
            # in 0.4 ms where swscale takes 3 ms of a core the network needs.
            yuv = cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420)
            av_frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        else:
            av_frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        av_frame.pts, av_frame.time_base = pts, self._time_base
        try:
            if self._audio is not None:
                self._audio.pump(float(pts * self._time_base))
            for packet in self._stream.encode(av_frame):
                self._output.mux(packet)
        except (av.FFmpegError, OSError) as exc:
            raise SinkError(f"cannot write frame {frame.index} to {self.path}: "
                            f"{_av_reason(exc)}") from exc
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder, add the rest of the audio, write the trailer, rename.

        Safe to call twice; the trailer is written once. With no frame written the
        temporary file is removed and no output appears.
        """
        if self._closed:
            return
        self._closed = True
        if self._output is None:
            return
        if self.frames_written == 0:
            self._discard()
            return
        try:
            for packet in self._stream.encode():
                self._output.mux(packet)
            if self._audio is not None:
                end = (self._last_pts + self._last_step) * self._time_base
                self._audio.finish(float(end))
            self._output.close()
            self._output = None
            os.replace(self._tmp, self.path)
        except (av.FFmpegError, OSError) as exc:
            self._discard()
            raise SinkError(f"cannot finish video {self.path}: {_av_reason(exc)}") from exc
        finally:
            if self._audio is not None:
                self._audio.close()

    def _discard(self) -> None:
        """Close without a trailer and remove the temporary file."""
        if self._audio is not None:
            self._audio.close()
        if self._output is not None:
            try:
                self._output.close()
            except (av.FFmpegError, OSError):
                pass  # the file is removed anyway
            self._output = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)


class _AudioTrack:
    """The first audio stream of a file, muxed into ``output`` up to a given time.

    Packets are copied untouched when the output container takes the codec, else
    decoded and re-encoded to ``codec``. ``pump(t)`` adds every packet that starts
    before ``t`` seconds, so audio interleaves with the video and memory stays bounded.
    """

    def __init__(self, path: Path, output: Any, codec: str) -> None:
        self._input = av.open(str(path))
        self._closed = False
        try:
            source = self._input.streams.audio[0]
            self._time_base = source.time_base
            self.copy = source.codec_context.name in output.supported_codecs
            if self.copy:
                self._stream = output.add_stream_from_template(source)
            else:
                rate = 48000 if codec == "libopus" else (source.codec_context.sample_rate or 48000)
                self._stream = output.add_stream(codec, rate=rate)
                self._stream.layout = "mono" if source.codec_context.channels == 1 else "stereo"
            self._packets = self._input.demux(source)
        except BaseException:
            self.close()
            raise
        self._pending: Any = None
        self._resampler: Any = None
        self._ended = False

    def start(self) -> None:
        """Set up re-encoding once the encoder is open (its frame size is known then)."""
        if not self.copy:
            ctx = self._stream.codec_context
            self._resampler = av.AudioResampler(format=ctx.format, layout=ctx.layout,
                                                rate=ctx.sample_rate,
                                                frame_size=ctx.frame_size or None)

    def pump(self, until_s: float) -> None:
        """Mux every packet that starts before ``until_s`` seconds."""
        while not self._ended:
            packet = self._pending if self._pending is not None else self._next()
            if packet is None:
                self._ended = True
                return
            start = packet.pts if packet.pts is not None else packet.dts
            if start is not None and float(start * self._time_base) >= until_s:
                self._pending = packet
                return
            self._pending = None
            self._mux(packet)

    def finish(self, until_s: float) -> None:
        """Mux the audio up to ``until_s`` (the end of the video) and flush the encoder."""
        self.pump(until_s)
        if not self.copy:
            self._encode(None)

    def close(self) -> None:
        """Close the input file (safe to call twice)."""
        if not self._closed:
            self._closed = True
            self._input.close()

    def _next(self) -> Any:
        try:
            return next(self._packets)
        except StopIteration:
            return None
        except av.FFmpegError:  # a truncated input: the audio ends here too
            return None

    def _mux(self, packet: Any) -> None:
        if self.copy:
            # Skip the empty flush packet the demuxer yields last (size 0, no dts).
            if packet.size == 0 or packet.dts is None:
                return
            packet.stream = self._stream
            self._stream.container.mux(packet)
            return
        try:
            decoded = packet.decode()
        except av.FFmpegError:
            return  # a damaged packet: a few ms of silence rather than a failed file
        for frame in decoded:
            self._encode(frame)

    def _encode(self, frame: Any) -> None:
        frames = self._resampler.resample(frame)
        if frame is None:
            frames = [*frames, None]
        for f in frames:
            if f is not None:
                f.pts = None  # let the encoder number samples continuously
            for packet in self._stream.encode(f):
                self._stream.container.mux(packet)


def _even(size_wh: tuple[int, int]) -> tuple[int, int]:
    """Round a size up to even sides (yuv420p halves both for its colour planes)."""
    width, height = size_wh
    return width + width % 2, height + height % 2


def _pad_to(image: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Repeat the last row/column so ``image`` is ``size_wh`` (at most one pixel each)."""
    width, height = size_wh
    pad_h, pad_w = height - image.shape[0], width - image.shape[1]
    if pad_h == 0 and pad_w == 0:
        return image
    return cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_REPLICATE)


# --------------------------------------------------------------------------- window


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
        self._dropped = context.dropped
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


# --------------------------------------------------------------------------- raw depth


class RawDepthSink(Sink):
    """Per frame a 16-bit PNG (``depth_<index>.png``, the depth's own min..max -> 0..65535).

    Plus one ``timestamps.csv`` (``index,seconds,lo,hi,scale``: ``lo``/``hi`` undo the PNG
    scaling, ``scale`` says which depth it is: ``smoothed`` (aligned to one scale across
    frames) or ``raw`` (the network's own, per-frame scale)) and, with
    :attr:`RawFormat.NPY`, the float32 depth as ``depth_<index>.npy``. Every file is
    written atomically; the CSV appears when the sink is closed.

    Args:
        folder: created if missing (its parent must exist).
        fmt: PNG only, or PNG and NPY.
        overwrite: write into a folder that already holds a ``timestamps.csv``.
        unsmoothed: export the network's own depth even when the stream is smoothed.

    Raises:
        SinkError: the parent folder is missing, ``folder`` is a file, or it already
            holds raw depth and ``overwrite`` is off (at construction).
    """

    CSV_NAME = "timestamps.csv"

    def __init__(self, folder: str | os.PathLike, fmt: RawFormat | str = RawFormat.PNG,
                 overwrite: bool = False, unsmoothed: bool = False) -> None:
        self.folder = Path(folder)
        self.unsmoothed = unsmoothed
        self.fmt = fmt if isinstance(fmt, RawFormat) else parse_enum(RawFormat, fmt, "raw format")
        if self.folder.exists() and not self.folder.is_dir():
            raise SinkError(f"raw depth folder is a file: {self.folder}")
        if not self.folder.exists() and not self.folder.parent.is_dir():
            raise SinkError(f"output folder does not exist: {self.folder.parent}")
        if self.folder.is_dir():
            check_output_path(self.folder / self.CSV_NAME, overwrite=overwrite)
        self.frames_written = 0
        self._csv: Any = None
        self._created = False
        self._closed = False

    def open(self, context: SinkContext) -> None:  # noqa: D102
        if not self.folder.exists():
            try:
                self.folder.mkdir()
            except OSError as exc:
                raise SinkError(f"cannot create {self.folder}: {exc.strerror or exc}") from exc
            self._created = True
        fd, tmp = tempfile.mkstemp(prefix=self.CSV_NAME + ".", suffix=".part", dir=self.folder)
        self._csv_tmp = Path(tmp)
        self._csv = os.fdopen(fd, "w", newline="")
        self._csv.write("index,seconds,lo,hi,scale\n")

    def write(self, frame: DepthFrame) -> None:  # noqa: D102
        stem = self.folder / f"depth_{frame.index:06d}"
        depth = frame.network_depth if self.unsmoothed else frame.depth
        scale = "smoothed" if frame.smoothed and depth is frame.depth else "raw"
        # The depth's own min..max, not the display range: the display range clips the
        # tails, and raw export must keep every value.
        lo, hi = minmax(depth)
        write_depth_raw(stem, depth, lo, hi, npy=self.fmt is RawFormat.NPY)
        # repr of a float round-trips exactly: the CSV undoes the PNG scaling losslessly.
        self._csv.write(f"{frame.index},{float(frame.timestamp)!r},{lo!r},{hi!r},{scale}\n")
        self.frames_written += 1

    def close(self) -> None:  # noqa: D102
        if self._closed or self._csv is None:
            return
        self._closed = True
        self._csv.close()
        if self.frames_written:
            os.replace(self._csv_tmp, self.folder / self.CSV_NAME)
            return
        self._csv_tmp.unlink(missing_ok=True)
        if self._created and not any(self.folder.iterdir()):
            self.folder.rmdir()
