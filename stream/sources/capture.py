"""Sources: everything that reads pictures, video files, cameras and stream URLs.

Reads files and devices (PyAV, OpenCV); starts no threads (a source is read on the
pipeline's capture thread, and a realtime file is paced there). A video source yields
:class:`stream.core.records.Frame` s: files decoded with PyAV (every frame, in order,
timestamped from pts and time base, turned upright by their display rotation), cameras
and URLs through ``cv2.VideoCapture`` (stamped with a monotonic clock).
"""

from __future__ import annotations

import itertools
import math
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from errno import EINVAL
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import cv2
import numpy as np

from stream.core.errors import SourceError
from stream.core.records import Frame, VideoInfo

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "IMAGE_EXTENSIONS",
    "read_image",
    "find_images",
    "OUTPUT_SUFFIXES",
    "Source",
    "FileSource",
    "LiveSource",
    "FrameTooLarge",
    "av_reason",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a picture as BGR uint8 ``[H, W, 3]`` (gray, alpha and 16-bit pictures too).

    EXIF orientation is applied, as a photo viewer shows it.

    Raises:
        SourceError: the file is missing or does not decode as a picture (one line: a
            picture type that is damaged, or a type that is not supported).
    """
    path = Path(path)
    if not path.exists():
        raise SourceError(f"no such file: {path}")
    if not path.is_file():
        raise SourceError(f"not a file: {path}")
    # imdecode(fromfile) rather than imread: works with non-ASCII paths on every OS.
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None and path.suffix.lower() in IMAGE_EXTENSIONS:
        raise SourceError(f"cannot read {path}: the file is damaged or not a picture")
    if image is None:
        raise SourceError(f"cannot read {path} as a picture (supported: "
                          f"{', '.join(e.lstrip('.') for e in IMAGE_EXTENSIONS)})")
    return image


OUTPUT_SUFFIXES = ("_depth", "_depth16")
"""Name endings of what ``image`` writes next to a picture (``<stem>_depth.png``...)."""


def find_images(inputs: list[str | os.PathLike]) -> list[Path]:
    """Expand files and folders (pictures directly inside, sorted by name) into picture paths.

    In a folder, a ``<stem>_depth.png`` or ``<stem>_depth16.png`` next to a picture
    ``<stem>.*`` is an earlier run's output, not an input: a folder can be its own
    output folder, and running again finds the same pictures. Files named on the
    command line are always inputs.

    Raises:
        SourceError: an input is missing, or a folder holds no pictures.
    """
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            pictures = sorted(p for p in item.iterdir()
                              if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            stems = {p.stem for p in pictures}
            pictures = [p for p in pictures if not _is_output_of(p, stems)]
            if not pictures:
                raise SourceError(f"no pictures in folder {item}")
            found.extend(pictures)
        elif item.exists():
            found.append(item)
        else:
            raise SourceError(f"no such file or folder: {item}")
    return found


def _is_output_of(path: Path, stems: set[str]) -> bool:
    """``path`` is ``<stem>_depth.png`` (or ``_depth16``) for a ``stem`` in ``stems``."""
    if path.suffix.lower() != ".png":
        return False
    return any(path.stem.endswith(end) and path.stem[: -len(end)] in stems
               for end in OUTPUT_SUFFIXES)


class Source:
    """Interface: ``info`` at once, ``frames(stop)`` on the capture thread, ``close()``.

    A source opens its file or device when it is built, so that a bad input is an error
    before any thread starts; the thread that iterates ``frames`` closes it when the
    iteration ends (as CamGear releases its capture in its own worker).
    """

    info: VideoInfo

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def frames(self, stop: threading.Event | None = None) -> Iterator[Frame]:
        """Yield frames in order until the input ends or ``stop`` is set; then close."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the file or device (safe to call twice)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pixel_guard(limit_wh: tuple[int, int]) -> int:
    """The pixel count a decoder may allocate under a frame size limit (padding included)."""
    return 2 * limit_wh[0] * limit_wh[1] + (1 << 16)


class FrameTooLarge(SourceError):
    """A decoded frame is over a source's ``max_size_wh`` (one line naming both sizes).

    Attributes:
        index: the frame's index.
        size_wh: its upright ``(width, height)``; ``None`` when the decoder refused to
            make it (it has more pixels than the limit allows).
        limit_wh: the limit.
    """

    def __init__(self, path: Path, index: int, size_wh: tuple[int, int] | None,
                 limit_wh: tuple[int, int]) -> None:
        what = ("has more pixels than" if size_wh is None
                else f"is {size_wh[0]}x{size_wh[1]}, over")
        super().__init__(f"{path}: frame {index} {what} the limit of "
                         f"{limit_wh[0]}x{limit_wh[1]} pixels")
        self.index, self.size_wh, self.limit_wh = index, size_wh, limit_wh


class FileSource(Source):
    """A video file decoded with PyAV: every frame, in order, stamped from its pts, upright.

    A display rotation (the display-matrix side data phones write, or an older file's
    ``rotate`` tag) is applied to every decoded frame, so frames, :attr:`info` and every
    output are upright: a portrait phone video is portrait. The first frame is decoded
    when the source is built, to learn the rotation (and to fail early on a file of
    which nothing decodes).

    A stream whose frame size changes (concatenated clips, some cameras) yields each
    frame at its own size; :attr:`info` has the first frame's. With ``max_size_wh``
    every decoded frame is checked against it before it is converted or queued, and
    the decoder is told a pixel count too, so it never allocates a much larger picture.

    Args:
        path: a video file (any container and codec FFmpeg reads).
        realtime: release frames at the pace of their timestamps, as a camera would.
        live: treat it as a live source downstream (latest-frame-wins queues, drops
            counted); default: the same as ``realtime``.
        max_size_wh: the largest upright frame, ``(width, height)``; a larger one is
            :class:`FrameTooLarge` (when the source is built for the first frame, else
            from :meth:`frames`). ``None``: no limit.

    Attributes:
        rotation: clockwise degrees (0, 90, 180 or 270) applied to the stored frames.

    Raises:
        SourceError: the file is missing, empty, not a video, has no video stream, or
            not one frame of it decodes.
        FrameTooLarge: the first frame is over ``max_size_wh``.

    Example:
        >>> with FileSource("clip.mp4") as src:  # doctest: +SKIP
        ...     for frame in src.frames():
        ...         print(frame.index, frame.timestamp)
    """

    def __init__(self, path: str | os.PathLike, realtime: bool = False,
                 live: bool | None = None, *,
                 max_size_wh: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.realtime = realtime
        self.live = realtime if live is None else live
        self.max_size_wh = (None if max_size_wh is None
                            else (int(max_size_wh[0]), int(max_size_wh[1])))
        if not self.path.exists():
            raise SourceError(f"no such file: {self.path}")
        if not self.path.is_file():
            raise SourceError(f"not a file: {self.path}")
        if self.path.stat().st_size == 0:
            raise SourceError(f"{self.path} is empty")
        try:
            self._container = av.open(str(self.path))
        except (av.FFmpegError, OSError) as exc:
            raise SourceError(f"cannot read {self.path} as a video: {av_reason(exc)}") from exc
        self._stop: threading.Event | None = None
        self._bad_packets, self._first_error = 0, ""
        self._index = 0  # the next frame's index (for what the size check says)
        try:
            stream = self._video_stream()
            if self.max_size_wh is not None:
                # FFmpeg then refuses a much larger picture before allocating it (with
                # room for the padding decoders count); the sides are checked exactly.
                stream.codec_context.options = {
                    **dict(stream.codec_context.options or {}),
                    "max_pixels": str(_pixel_guard(self.max_size_wh))}
            self._decoded = self._decode_packets(stream)
            self._first = next(self._decoded, None)
            if self._first is None:
                detail = f" ({self._first_error})" if self._bad_packets else ""
                raise SourceError(f"no frame of {self.path} decodes{detail}")
            self.rotation = _rotation(self._first, stream)
            self.info = self._probe(stream)
        except BaseException:
            self._container.close()
            raise
        self._closed = False

    def _video_stream(self) -> Any:
        container = self._container
        if not container.streams.video:
            raise SourceError(f"{self.path} has no video stream")
        stream = container.streams.video[0]
        # A stream FFmpeg can demux but has no decoder for (an SVG without librsvg) has
        # no codec context and no picture size: not a video.
        ctx = stream.codec_context
        if ctx is None or not ctx.width or not ctx.height:
            raise SourceError(f"{self.path} is not a video: its picture stream cannot be "
                              f"decoded here ({container.format.name})")
        return stream

    def _probe(self, stream: Any) -> VideoInfo:
        container = self._container
        rate = stream.average_rate or stream.guessed_rate
        duration_s = None
        if stream.duration is not None and stream.time_base is not None:
            duration_s = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration_s = container.duration / av.time_base
        width, height = self._first.width, self._first.height
        if self.rotation in (90, 270):
            width, height = height, width
        try:
            return VideoInfo(
                width=width,
                height=height,
                rate=Fraction(rate) if rate else None,
                frames=stream.frames or None,
                duration_s=duration_s,
                time_base=stream.time_base,
                live=self.live,
                has_audio=bool(container.streams.audio),
            )
        except ValueError as exc:
            raise SourceError(f"{self.path}: unusable video stream ({exc})") from exc

    def frames(self, stop: threading.Event | None = None) -> Iterator[Frame]:
        """Yield every decodable frame, upright, in presentation order; then close the file.

        A packet that does not decode (a damaged or truncated file) is skipped and
        counted; the count lands in :attr:`warnings`.
        """
        self._stop = stop
        try:
            yield from self._frames(stop)
        finally:
            self.close()

    def _decode_packets(self, stream: Any) -> Iterator[Any]:
        """PyAV frames of ``stream``; damaged packets are skipped and counted."""
        packets = self._container.demux(stream)
        while self._stop is None or not self._stop.is_set():
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.FFmpegError as exc:  # the container itself is cut short
                self._skip(exc)
                return
            try:
                decoded = packet.decode()
            except av.FFmpegError as exc:  # one damaged packet: skip it, keep going
                if self.max_size_wh is not None and getattr(exc, "errno", None) == EINVAL:
                    raise FrameTooLarge(self.path, self._index, None,
                                        self.max_size_wh) from exc
                self._skip(exc)
                continue
            for av_frame in decoded:
                self._check_size(av_frame, stream)
                yield av_frame

    def _check_size(self, av_frame: Any, stream: Any) -> None:
        """Refuse a decoded frame over :attr:`max_size_wh` (upright sizes)."""
        if self.max_size_wh is None:
            return
        width, height = av_frame.width, av_frame.height
        if getattr(self, "rotation", None) is None:
            self.rotation = _rotation(av_frame, stream)
        if self.rotation in (90, 270):
            width, height = height, width
        if width > self.max_size_wh[0] or height > self.max_size_wh[1]:
            raise FrameTooLarge(self.path, self._index, (width, height), self.max_size_wh)
        self._index += 1

    def _skip(self, exc: BaseException) -> None:
        self._bad_packets += 1
        self._first_error = self._first_error or av_reason(exc)

    def _frames(self, stop: threading.Event | None) -> Iterator[Frame]:
        time_base = self._container.streams.video[0].time_base
        rate = self.info.rate
        step = round(1 / (rate * time_base)) if rate and time_base else 1
        index, last_pts = 0, None
        clock: tuple[float, float] | None = None  # (monotonic, timestamp) of the first frame
        first, self._first = self._first, None
        decoded = self._decoded if first is None else itertools.chain([first], self._decoded)
        for av_frame in decoded:
            if stop is not None and stop.is_set():
                break
            pts = av_frame.pts
            if pts is None:  # some raw streams carry no pts: continue the sequence
                pts = 0 if last_pts is None else last_pts + step
            last_pts = pts
            timestamp = float(pts * time_base) if time_base else index / float(rate or 30)
            if self.realtime:
                clock = clock or (time.monotonic(), timestamp)
                if _sleep(clock[0] + (timestamp - clock[1]) - time.monotonic(), stop):
                    return
            image = _upright(av_frame.to_ndarray(format="bgr24"), self.rotation)
            yield Frame(index, timestamp, image, pts=pts)
            index += 1
        expected = self.info.frames
        stopped = stop is not None and stop.is_set()
        if self._bad_packets or (expected and index < expected and not stopped):
            of = f" of {expected}" if expected else ""
            skipped = (f", {self._bad_packets} packet(s) skipped ({self._first_error})"
                       if self._bad_packets else "")
            self.warnings.append(
                f"{self.path} is damaged or truncated: {index}{of} frames decoded{skipped}")

    def seek(self, pts: int) -> None:
        """Decode from the keyframe at or before ``pts`` on (call before :meth:`frames`).

        For a piece of a long file (``depthstream batch`` segments): frames then come from
        that keyframe, with their own pts; their indexes still count from 0.

        Raises:
            SourceError: the file cannot seek there.
        """
        self._first = None  # decoded to probe the file: it lies before the seek point
        try:
            self._container.seek(int(pts), stream=self._container.streams.video[0],
                                 backward=True, any_frame=False)
        except av.FFmpegError as exc:
            raise SourceError(f"cannot seek in {self.path}: {av_reason(exc)}") from exc

    def close(self) -> None:
        """Close the file (safe to call twice)."""
        if not getattr(self, "_closed", True):
            self._closed = True
            self._first = None
            self._container.close()


_ROTATE_CLOCKWISE = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180,
                     270: cv2.ROTATE_90_COUNTERCLOCKWISE}


def _upright(image: np.ndarray, clockwise: int) -> np.ndarray:
    """``image`` turned ``clockwise`` degrees (a multiple of 90)."""
    return cv2.rotate(image, _ROTATE_CLOCKWISE[clockwise]) if clockwise else image


def _rotation(frame: Any, stream: Any) -> int:
    """Clockwise degrees (0, 90, 180, 270) that make a stream's frames upright.

    From the frame's display matrix (what FFmpeg reads from an MP4's track header or
    a Matroska projection), else the stream's ``rotate`` tag (clockwise, as older
    FFmpeg versions wrote it). A mirrored matrix is applied as its rotation only;
    angles that are not a multiple of 90 are ignored.
    """
    degrees = None
    for side_data in getattr(frame, "side_data", ()):
        if side_data.type.name == "DISPLAYMATRIX":
            degrees = _matrix_clockwise(bytes(side_data))
            break
    if degrees is None:
        tags = {str(k).lower(): v for k, v in (stream.metadata or {}).items()}
        try:
            degrees = float(tags.get("rotate", 0))
        except ValueError:
            degrees = 0.0
    quarter = round(degrees / 90) % 4
    return quarter * 90 if abs(degrees / 90 - round(degrees / 90)) < 0.02 else 0


def _matrix_clockwise(data: bytes) -> float | None:
    """Clockwise display angle of FFmpeg's 3x3 display matrix (16.16 fixed point).

    The inverse of ``av_display_rotation_get``, which returns the counter-clockwise
    angle by which the matrix turns the picture for display.
    """
    if len(data) < 36:
        return None
    m = np.frombuffer(data[:36], dtype=np.int32).astype(np.float64) / 65536.0
    scale0, scale1 = math.hypot(m[0], m[3]), math.hypot(m[1], m[4])
    if scale0 == 0 or scale1 == 0:
        return None
    counterclockwise = -math.degrees(math.atan2(m[1] / scale1, m[0] / scale0))
    return -counterclockwise


class LiveSource(Source):
    """A camera or a stream URL read with ``cv2.VideoCapture``, stamped with a monotonic clock.

    Use :meth:`from_camera` or :meth:`from_url`. The capture is opened (and one frame read,
    to learn the frame size) when the source is built; the capture thread releases it.
    ``Frame.timestamp`` is seconds since the first frame the thread read.

    Raises:
        SourceError: the camera or URL cannot be opened or gives no frame.
    """

    def __init__(self, target: int | str, open_timeout_s: float = 10.0,
                 read_timeout_s: float = 10.0) -> None:
        super().__init__()
        self.target = target
        what = f"camera {target}" if isinstance(target, int) else f"URL {target}"
        self._what = what
        # Without this, FFmpeg inside OpenCV prints its own lines ("Connection refused")
        # next to our one-line error. Read once, on first use; the user may override it.
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
        with _quiet_opencv():
            if isinstance(target, int):
                cap = cv2.VideoCapture(target)
            else:
                cap = cv2.VideoCapture(target, cv2.CAP_FFMPEG, [
                    cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout_s * 1000),
                    cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_timeout_s * 1000),
                ])
            ok = cap.isOpened()
            ok, first = cap.read() if ok else (False, None)
        if not ok or first is None:
            cap.release()
            hint = ("is it connected, and not used by another program?" if isinstance(target, int)
                    else "is the address right and the stream running?")
            raise SourceError(f"cannot open {what}: no frames from it ({hint})")
        self._cap = cap
        fps = cap.get(cv2.CAP_PROP_FPS)
        rate = Fraction(fps).limit_denominator(1001) if 0 < fps <= 1000 else None
        self.info = VideoInfo(width=first.shape[1], height=first.shape[0], rate=rate, live=True)
        self._closed = False

    @classmethod
    def from_camera(cls, index: int) -> LiveSource:
        """A local camera by index (0 = the first)."""
        return cls(int(index))

    @classmethod
    def from_url(cls, url: str, open_timeout_s: float = 10.0) -> LiveSource:
        """A network stream (``rtsp://``, ``http://`` MJPEG, HLS, ...)."""
        return cls(str(url), open_timeout_s=open_timeout_s)

    def frames(self, stop: threading.Event | None = None) -> Iterator[Frame]:
        """Yield frames as the device delivers them until it ends or ``stop`` is set.

        The frame read while opening is not yielded: it is stale by the time the
        pipeline starts.
        """
        try:
            index, start = 0, None
            while stop is None or not stop.is_set():
                ok, image = self._cap.read()
                now = time.monotonic()
                if not ok or image is None:
                    self.warnings.append(f"{self._what} stopped sending frames after {index}")
                    break
                start = now if start is None else start
                yield Frame(index, now - start, image, captured=now)
                index += 1
        finally:
            self.close()

    def close(self) -> None:
        """Release the capture (safe to call twice)."""
        if not getattr(self, "_closed", True):
            self._closed = True
            self._cap.release()


def _sleep(seconds: float, stop: threading.Event | None) -> bool:
    """Sleep up to ``seconds``; True if ``stop`` was set meanwhile."""
    if seconds <= 0:
        return stop is not None and stop.is_set()
    if stop is None:
        time.sleep(seconds)
        return False
    return stop.wait(seconds)


@contextmanager
def _quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own warnings (probing backends) while opening a capture."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


def av_reason(exc: BaseException) -> str:
    """FFmpeg's reason without the file name and errno PyAV adds."""
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(reason).split())
