"""Sources: everything that reads pictures, video files, cameras and stream URLs.

Reads files and devices (PyAV, OpenCV); starts no threads (a source is read on the
pipeline's capture thread, and a realtime file is paced there). A video source yields :class:`stream.records.Frame` s: files decoded with PyAV (every frame, in
order, timestamped from pts and time base), cameras and URLs through
``cv2.VideoCapture`` (stamped with a monotonic clock).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import av
import cv2
import numpy as np

from .errors import SourceError
from .records import Frame, VideoInfo

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "IMAGE_EXTENSIONS",
    "read_image",
    "find_images",
    "Source",
    "FileSource",
    "LiveSource",
    "av_reason",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a picture as BGR uint8 ``[H, W, 3]`` (gray, alpha and 16-bit pictures too).

    EXIF orientation is applied, as a photo viewer shows it.

    Raises:
        SourceError: the file is missing or does not decode as a picture.
    """
    path = Path(path)
    if not path.exists():
        raise SourceError(f"no such file: {path}")
    if not path.is_file():
        raise SourceError(f"not a file: {path}")
    # imdecode(fromfile) rather than imread: works with non-ASCII paths on every OS.
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise SourceError(f"cannot read {path} as a picture (supported: "
                          f"{', '.join(e.lstrip('.') for e in IMAGE_EXTENSIONS)})")
    return image


def find_images(inputs: list[str | os.PathLike]) -> list[Path]:
    """Expand files and folders (pictures directly inside, sorted by name) into picture paths.

    Raises:
        SourceError: an input is missing, or a folder holds no pictures.
    """
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            pictures = sorted(p for p in item.iterdir()
                              if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not pictures:
                raise SourceError(f"no pictures in folder {item}")
            found.extend(pictures)
        elif item.exists():
            found.append(item)
        else:
            raise SourceError(f"no such file or folder: {item}")
    return found


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


class FileSource(Source):
    """A video file decoded with PyAV: every frame, in order, stamped from its pts.

    Args:
        path: a video file (any container and codec FFmpeg reads).
        realtime: release frames at the pace of their timestamps, as a camera would.
        live: treat it as a live source downstream (latest-frame-wins queues, drops
            counted); default: the same as ``realtime``.

    Raises:
        SourceError: the file is missing, empty, not a video, or has no video stream.

    Example:
        >>> with FileSource("clip.mp4") as src:  # doctest: +SKIP
        ...     for frame in src.frames():
        ...         print(frame.index, frame.timestamp)
    """

    def __init__(self, path: str | os.PathLike, realtime: bool = False,
                 live: bool | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.realtime = realtime
        self.live = realtime if live is None else live
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
        try:
            self.info = self._probe()
        except BaseException:
            self._container.close()
            raise
        self._closed = False

    def _probe(self) -> VideoInfo:
        container = self._container
        if not container.streams.video:
            raise SourceError(f"{self.path} has no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        duration_s = None
        if stream.duration is not None and stream.time_base is not None:
            duration_s = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration_s = container.duration / av.time_base
        try:
            return VideoInfo(
                width=stream.codec_context.width,
                height=stream.codec_context.height,
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
        """Yield every decodable frame in presentation order, then close the file.

        A packet that does not decode (a damaged or truncated file) is skipped and
        counted; the count lands in :attr:`warnings`. If no frame decodes at all, that is
        an error.

        Raises:
            SourceError: not a single frame decodes.
        """
        try:
            yield from self._decode(stop)
        finally:
            self.close()

    def _decode(self, stop: threading.Event | None) -> Iterator[Frame]:
        stream = self._container.streams.video[0]
        time_base = stream.time_base
        step = round(1 / (self.info.rate * time_base)) if self.info.rate and time_base else 1
        index, bad_packets, last_pts = 0, 0, None
        first_error = ""
        clock: tuple[float, float] | None = None  # (monotonic, timestamp) of the first frame
        packets = self._container.demux(stream)
        while stop is None or not stop.is_set():
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.FFmpegError as exc:  # the container itself is cut short
                bad_packets += 1
                first_error = first_error or av_reason(exc)
                break
            try:
                decoded = packet.decode()
            except av.FFmpegError as exc:  # one damaged packet: skip it, keep going
                bad_packets += 1
                first_error = first_error or av_reason(exc)
                continue
            for av_frame in decoded:
                pts = av_frame.pts
                if pts is None:  # some raw streams carry no pts: continue the sequence
                    pts = 0 if last_pts is None else last_pts + step
                last_pts = pts
                timestamp = float(pts * time_base) if time_base else index / float(
                    self.info.rate or 30)
                if self.realtime:
                    clock = clock or (time.monotonic(), timestamp)
                    if _sleep(clock[0] + (timestamp - clock[1]) - time.monotonic(), stop):
                        return
                yield Frame(index, timestamp, av_frame.to_ndarray(format="bgr24"), pts=pts)
                index += 1
        if index == 0 and bad_packets:
            raise SourceError(f"no frame of {self.path} decodes ({first_error})")
        expected = self.info.frames
        if bad_packets or (expected and index < expected and (stop is None or not stop.is_set())):
            of = f" of {expected}" if expected else ""
            self.warnings.append(
                f"{self.path} is damaged or truncated: {index}{of} frames decoded"
                + (f", {bad_packets} packet(s) skipped ({first_error})" if bad_packets else "")
            )

    def close(self) -> None:
        """Close the file (safe to call twice)."""
        if not getattr(self, "_closed", True):
            self._closed = True
            self._container.close()


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
