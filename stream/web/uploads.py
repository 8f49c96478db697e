"""Uploads: saving an upload, deciding by decoding what it is, and its size limits.

Touches files: :func:`save_upload` writes the upload's bytes into the data folder's
``uploads/`` (the caller moves or removes it); :func:`detect_kind` reads it back.
Starts no threads.

A refused upload raises an ordinary error: :class:`UploadTooLargeError` over a limit,
:class:`stream.errors.SourceError` for a file that is empty or decodes as neither a
picture nor a video. Which HTTP status each one answers is decided in
:mod:`stream.web.app` only.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import IO, Any

import cv2

from ..errors import SourceError, StreamError
from ..sources import FileSource, read_image
from .jobs import MB, JobKind, JobSettings, ServerConfig

__all__ = [
    "UploadTooLargeError",
    "cache_key",
    "detect_kind",
    "display_name",
    "save_upload",
    "too_large_message",
]

_CHUNK_BYTES = 1 << 20


class UploadTooLargeError(StreamError, ValueError):
    """An upload over the size limit of its kind (or over the largest limit)."""


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


def _probe_video(path: Path) -> dict[str, Any] | None:
    """What the page shows of a video if ``path`` opens as one and its first frame decodes."""
    try:
        with FileSource(path) as source:
            info = source.info
            frames = source.frames()
            try:
                first = next(frames, None)
            finally:
                frames.close()
    except SourceError:
        return None
    if first is None:
        return None
    return {"width": info.width, "height": info.height, "frames": info.frames,
            "fps": round(float(info.rate), 3) if info.rate else None,
            "duration_s": round(info.duration_s, 3) if info.duration_s else None,
            "audio": info.has_audio}


def detect_kind(path: Path, size_bytes: int, config: ServerConfig) -> tuple[JobKind, dict]:
    """Decide by decoding whether an upload is a picture or a video, and check its limit.

    Returns:
        The kind and what the page shows of it (width, height; for a video also
        frames, fps, duration_s, audio).

    Raises:
        UploadTooLargeError: over its kind's limit.
        SourceError: it decodes as neither a picture nor a video.
    """
    if size_bytes <= config.max_image_bytes:
        try:
            bgr = read_image(path)
        except SourceError:
            pass
        else:
            return JobKind.PICTURE, {"width": bgr.shape[1], "height": bgr.shape[0]}
    elif cv2.haveImageReader(str(path)):
        # A signature check only: decoding a huge picture just to refuse it is waste.
        raise UploadTooLargeError(f"pictures may be up to {_limit_text(config.max_image_bytes)}"
                                  f"; this one is {_limit_text(size_bytes)}")
    info = _probe_video(path)
    if info is None:
        raise SourceError("this file is neither a picture nor a video that can be decoded")
    if size_bytes > config.max_video_bytes:
        raise UploadTooLargeError(f"videos may be up to {_limit_text(config.max_video_bytes)}; "
                                  f"this one is {_limit_text(size_bytes)}")
    return JobKind.VIDEO, info


def cache_key(digest: str, kind: JobKind, settings: JobSettings, model_tag: str) -> str:
    """The key two uploads share exactly when their results would be the same."""
    return hashlib.sha256(json.dumps([digest, kind.value, settings.to_dict(), model_tag],
                                     sort_keys=True).encode()).hexdigest()
