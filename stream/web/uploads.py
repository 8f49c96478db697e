"""Uploads: saving an upload, reading its size from its header, and deciding what it is.

Touches files: :func:`save_upload` writes the upload's bytes into the data folder's
``uploads/`` (the caller moves or removes it); :func:`detect_kind` reads it back.
Starts threads: :class:`UploadChecker` runs the checks on a small pool of its own
(``depthstream-check-*``), so a hostile file costs at most that many threads.

Every limit is checked from what the file's header says before a pixel is decoded: a
292 KB PNG that claims 10000x10000 pixels is refused in milliseconds, not decoded into
gigabytes. Only a file within every limit is decoded (its first frame), to be sure it
is what its header claims. What a file is comes from its content, never its name: a file
in a picture format (JPEG, PNG, WebP, ...) is a picture, and one that does not decode is
a damaged picture (400), not a one-frame video.

A refused upload raises an ordinary error: :class:`UploadTooLargeError` over a limit,
:class:`UploadBusyError` when the checker has too much to do,
:class:`stream.core.errors.SourceError` for a file that is empty or decodes as neither a
picture nor a video. Which HTTP status each one answers is decided in
:mod:`stream.web.app` only.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import re
import threading
import warnings
from pathlib import Path
from typing import IO, Any, NamedTuple

from stream.core.errors import SourceError, StreamError
from stream.models.registry import get_spec
from stream.sources.capture import FileSource, read_image

from .config import MB, ServerConfig
from .jobs import JobKind, JobSettings

__all__ = [
    "PictureSize",
    "UploadBusyError",
    "UploadChecker",
    "UploadTooLargeError",
    "cache_key",
    "detect_kind",
    "display_name",
    "frame_too_large",
    "picture_header",
    "save_upload",
    "too_large_message",
    "video_header",
]

_CHUNK_BYTES = 1 << 20
_NOT_MEDIA = "this file is neither a picture nor a video that can be decoded"
_DAMAGED_PICTURE = "this picture is damaged or cut short: it cannot be decoded"
#: Pillow's names of the still-picture formats the picture reader decodes: a file in one
#: of them is a picture (or a damaged one), never handed to the video decoder.
_PICTURE_FORMATS = frozenset({"JPEG", "MPO", "PNG", "BMP", "DIB", "WEBP", "TIFF"})
_PILLOW_LOCK = threading.Lock()  # warnings.catch_warnings is not thread-safe


class UploadTooLargeError(StreamError, ValueError):
    """An upload over a limit of its kind: bytes, megapixels, frame size, length, frames."""


class UploadBusyError(StreamError):
    """Too many uploads are being checked at once: this one is refused for now."""


def _limit_text(n_bytes: int) -> str:
    return f"{n_bytes / MB:g} MB"


def too_large_message(config: ServerConfig) -> str:
    """What to tell a client whose upload is over every limit."""
    return (f"the file is too large: pictures may be up to "
            f"{_limit_text(config.max_image_bytes)}, videos up to "
            f"{_limit_text(config.max_video_bytes)}")


def display_name(filename: str | None) -> str:
    """A short, harmless stem of the client's file name, for download names only."""
    stem = Path(str(filename or "").replace("\\", "/").rsplit("/", 1)[-1]).stem
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._-")[:60]
    return stem or "upload"


def save_upload(stream: IO[bytes], dest: Path, config: ServerConfig) -> tuple[str, int]:
    """Copy an upload's bytes to ``dest``; return their SHA-256 (hex) and their size.

    Raises:
        UploadTooLargeError: more bytes than the largest limit (``dest`` is left for the
            caller to remove).
        SourceError: no bytes at all.
    """
    digest = hashlib.sha256()
    size = 0
    with open(dest, "wb") as f:
        while chunk := stream.read(_CHUNK_BYTES):
            size += len(chunk)
            if size > config.max_upload_bytes:
                raise UploadTooLargeError(too_large_message(config))
            digest.update(chunk)
            f.write(chunk)
    if size == 0:
        raise SourceError("the file is empty")
    return digest.hexdigest(), size


class PictureSize(NamedTuple):
    """A picture's size from its header; past Pillow's own bomb limit only ``pixels``.

    ``format`` is Pillow's name of the file format (``"JPEG"``), ``None`` if unknown.
    """

    width: int | None
    height: int | None
    pixels: int
    format: str | None = None


def picture_header(path: Path) -> PictureSize | None:
    """A picture's size from its header (nothing decoded), or ``None``.

    ``None``: Pillow does not recognise it as a picture (it may still be a video).
    """
    from PIL import Image, UnidentifiedImageError

    with _PILLOW_LOCK, warnings.catch_warnings():
        # Pillow warns (or refuses) past its own bomb limit; ours is checked by the caller.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as image:
                w, h = int(image.size[0]), int(image.size[1])
                return PictureSize(w, h, w * h, image.format)
        except Image.DecompressionBombError as exc:  # says the pixels, not the sides
            match = re.search(r"\((\d+) pixels\)", str(exc))
            return PictureSize(None, None, int(match.group(1)) if match else 1 << 62)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            return None


def video_header(path: Path) -> dict[str, Any] | None:
    """A video's frame size, length and frames from its container (nothing decoded).

    Returns:
        ``width``, ``height``, ``fps``, ``duration_s``, ``frames`` (``None`` where the
        container does not say), or ``None`` if it has no video stream FFmpeg decodes.
    """
    import av

    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError):
        return None
    with container:
        streams = [s for s in container.streams.video if s.codec_context is not None]
        if not streams or not streams[0].codec_context.width:
            return None
        stream = streams[0]
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else None
        if container.duration:
            duration_s = container.duration / 1_000_000
        elif stream.duration and stream.time_base:
            duration_s = float(stream.duration * stream.time_base)
        else:
            duration_s = None
        frames = stream.frames or (round(duration_s * fps) if duration_s and fps else None)
        return {"width": stream.codec_context.width, "height": stream.codec_context.height,
                "fps": fps, "duration_s": duration_s, "frames": frames}


def _check_picture(size: PictureSize, size_bytes: int, config: ServerConfig) -> None:
    if size_bytes > config.max_image_bytes:
        raise UploadTooLargeError(f"pictures may be up to {_limit_text(config.max_image_bytes)}"
                                  f"; this one is {_limit_text(size_bytes)}")
    if size.pixels > config.max_image_pixels:
        sides = f" ({size.width}x{size.height})" if size.width else ""
        raise UploadTooLargeError(f"pictures may have up to {config.max_image_mp:g} megapixels; "
                                  f"this one has {size.pixels / 1e6:.1f}{sides}")


def frame_too_large(width: int, height: int, config: ServerConfig,
                    which: str = "this one's are") -> str | None:
    """What to say of a video frame over :attr:`ServerConfig.max_video_wh`, else ``None``.

    Args:
        width: the frame's width in pixels.
        height: its height.
        config: the limit.
        which: how the message names the frames (``"frame 31 is"``).
    """
    max_w, max_h = config.max_video_wh
    if width > max_w or height > max_h:
        return f"video frames may be up to {max_w}x{max_h} pixels; {which} {width}x{height}"
    return None


def check_video(header: dict[str, Any], size_bytes: int, config: ServerConfig) -> None:
    """Refuse a video over a limit, from what its header says.

    Raises:
        UploadTooLargeError: over the size, frame size, length or frame count limit.
    """
    if size_bytes > config.max_video_bytes:
        raise UploadTooLargeError(f"videos may be up to {_limit_text(config.max_video_bytes)}; "
                                  f"this one is {_limit_text(size_bytes)}")
    too_large = frame_too_large(header["width"], header["height"], config)
    if too_large:
        raise UploadTooLargeError(too_large)
    duration = header.get("duration_s")
    if duration is not None and duration > config.max_video_s:
        raise UploadTooLargeError(f"videos may be up to {config.max_video_s / 60:g} minutes "
                                  f"long; this one is {duration / 60:.1f}")
    frames = header.get("frames")
    if frames is not None and frames > config.max_video_frames:
        raise UploadTooLargeError(f"videos may have up to {config.max_video_frames} frames; "
                                  f"this one has {frames}")


def _probe_video(path: Path) -> dict[str, Any] | None:
    """What the page shows of a video if its first frame decodes (upright sizes)."""
    try:
        with FileSource(path) as source:
            info = source.info
    except SourceError:
        return None
    return {"width": info.width, "height": info.height, "frames": info.frames,
            "fps": round(float(info.rate), 3) if info.rate else None,
            "duration_s": round(info.duration_s, 3) if info.duration_s else None,
            "audio": info.has_audio}


def detect_kind(path: Path, size_bytes: int, config: ServerConfig) -> tuple[JobKind, dict]:
    """Decide whether an upload is a picture or a video, and check every limit first.

    The header is read first and the limits checked on what it says; only then is the
    picture (or the video's first frame) decoded, to be sure. A file in a still-picture
    format is a picture whatever else could read it (FFmpeg makes a one-frame "video" of
    a cut-short JPEG).

    Returns:
        The kind and what the page shows of it (width, height; for a video also
        frames, fps, duration_s, audio).

    Raises:
        UploadTooLargeError: over a limit of its kind.
        SourceError: it decodes as neither a picture nor a video, or it is a damaged
            picture.
    """
    size = picture_header(path)
    if size is not None:
        _check_picture(size, size_bytes, config)
        try:
            bgr = read_image(path)
        except SourceError:
            if size.format in _PICTURE_FORMATS:
                raise SourceError(_DAMAGED_PICTURE) from None
            # else a format only FFmpeg reads (an animation, an MPEG stream Pillow names)
        else:
            return JobKind.PICTURE, {"width": bgr.shape[1], "height": bgr.shape[0]}
    header = video_header(path)
    if header is None:
        raise SourceError(_NOT_MEDIA)
    check_video(header, size_bytes, config)
    info = _probe_video(path)
    if info is None:
        raise SourceError(_NOT_MEDIA)
    return JobKind.VIDEO, info


class UploadChecker:
    """Runs :func:`detect_kind` on a small pool of threads, with a backlog and a deadline.

    The request thread only waits: at most ``workers`` files are read at once, at most
    ``backlog`` more wait their turn, and a check that takes longer than ``timeout_s``
    is given up (the file is then refused).

    Args:
        config: the limits.
        workers: checks at once.
        backlog: checks waiting at most; more raise :class:`UploadBusyError`.
        timeout_s: longest wait for one check.
    """

    def __init__(self, config: ServerConfig, workers: int = 2, backlog: int = 16,
                 timeout_s: float = 30.0) -> None:
        self.config = config
        self.timeout_s = timeout_s
        self._capacity = workers + backlog
        self._pending = 0
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="depthstream-check")

    def check(self, path: Path, size_bytes: int) -> tuple[JobKind, dict]:
        """:func:`detect_kind` on the pool; waits for it.

        Raises:
            UploadBusyError: too many checks waiting, or the server is stopping.
            SourceError: not a picture or video, or it took too long to tell.
            UploadTooLargeError: over a limit.
        """
        with self._lock:
            if self._pending >= self._capacity:
                raise UploadBusyError("too many uploads are being checked; try again shortly")
            self._pending += 1
        try:
            future = self._pool.submit(detect_kind, path, size_bytes, self.config)
        except RuntimeError:  # the pool is shut down
            self._done(None)
            raise UploadBusyError("the server is stopping") from None
        future.add_done_callback(self._done)
        try:
            return future.result(self.timeout_s)
        except concurrent.futures.CancelledError:  # the server stops
            raise UploadBusyError("the server is stopping") from None
        except concurrent.futures.TimeoutError:
            raise SourceError(f"this file could not be checked within {self.timeout_s:g} s"
                              ) from None

    def _done(self, _future: object) -> None:
        with self._lock:
            self._pending -= 1

    def close(self) -> None:
        """Refuse new checks; running ones finish on their own (safe to call twice)."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def cache_key(digest: str, kind: JobKind, settings: JobSettings, model_tag: str) -> str:
    """The key two uploads share exactly when their results would be the same.

    The model's default input side for the job's kind is part of it (a chosen
    ``--input-size`` is in ``model_tag``): results made at another size are not these.
    """
    side = get_spec(settings.model).default_side(video=kind is JobKind.VIDEO)
    return hashlib.sha256(json.dumps([digest, kind.value, settings.to_dict(), model_tag, side],
                                     sort_keys=True).encode()).hexdigest()
