"""Sinks: everything that writes pictures, videos, raw depth, windows and sockets.

Only this module (and :mod:`stream.sources`) touches files, devices and PyAV.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from .errors import SinkError

__all__ = ["write_image", "depth_to_u16", "write_depth_raw", "check_output_path"]


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
