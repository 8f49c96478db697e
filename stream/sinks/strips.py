"""Strip writers: PNG and ``.npy`` files written a band of rows at a time.

Touches files (each through a :class:`stream.core.files.PartFile`: a temporary renamed into
place on :meth:`StripWriter.close`, removed on any failure); starts no threads. A
100-megapixel depth result never has to sit in memory whole: its rows are computed,
written and dropped band by band. PNGs use the "Up" filter and zlib level 1 (smaller
than OpenCV's default PNG on depth maps, about as fast).

Example:
    >>> with PngWriter("depth.png", (width, height), channels=3) as png:  # doctest: +SKIP
    ...     for rows in bands:
    ...         png.write(rows)
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np

from stream.core.errors import SinkError
from stream.core.files import PartFile

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["StripWriter", "PngWriter", "NpyWriter"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_FILTER_UP = 2  # each byte minus the byte above it: smooth depth rows become near zero


class StripWriter:
    """A file at ``target`` written row band by row band; whole or absent, never half.

    Subclasses write a header in :meth:`_start`, encode rows in :meth:`_rows` and end the
    file in :meth:`_finish`. Used as a context manager, an exception discards the file.

    Args:
        target: the final path.
        size_wh: ``(width, height)`` of the whole picture.

    Raises:
        SinkError: the file cannot be created or written (one line naming it).
    """

    def __init__(self, target: str | os.PathLike, size_wh: tuple[int, int]) -> None:
        self.target = Path(target)
        self.width, self.height = (int(v) for v in size_wh)
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"size must be positive, got {self.width}x{self.height}")
        self.rows_written = 0
        self._part = PartFile(self.target)
        self._file: IO[bytes] | None = None
        try:
            self._file = open(self._part.path, "wb")  # noqa: SIM115 - closed in close()
            self._start()
        except OSError as exc:
            self.discard()
            raise self._error(exc) from exc

    def write(self, rows: np.ndarray) -> None:
        """Append the next rows (``[n, width, ...]``, the writer's dtype)."""
        if self._file is None:
            raise SinkError(f"{self.target} is already closed")
        if rows.shape[1] != self.width or self.rows_written + rows.shape[0] > self.height:
            self.discard()
            raise ValueError(f"rows {rows.shape} do not fit {self.width}x{self.height} after "
                             f"{self.rows_written} rows")
        try:
            self._rows(rows)
        except OSError as exc:
            self.discard()
            raise self._error(exc) from exc
        self.rows_written += rows.shape[0]

    def close(self) -> Path:
        """End the file, sync it and rename it into place; return the final path.

        Raises:
            SinkError: writing failed, or fewer rows than ``height`` were written.
        """
        if self._file is None:
            return self.target
        if self.rows_written != self.height:
            self.discard()
            raise SinkError(f"{self.target}: {self.rows_written} of {self.height} rows written")
        try:
            self._finish()
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
        except OSError as exc:
            self.discard()
            raise self._error(exc) from exc
        self._part.commit()
        return self.target

    def discard(self) -> None:
        """Close and remove the temporary: nothing appears at the target (safe twice)."""
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass  # it is removed anyway
            self._file = None
        self._part.discard()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()

    def _error(self, exc: OSError) -> SinkError:
        return SinkError(f"cannot write {self.target}: {exc.strerror or exc}")

    def _start(self) -> None:
        """Write the header."""

    def _rows(self, rows: np.ndarray) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        """Write what ends the file."""


class PngWriter(StripWriter):
    """A PNG written band by band: 8-bit BGR (stored as RGB) or gray, or 16-bit gray.

    Args:
        target: the final path.
        size_wh: ``(width, height)``.
        channels: 3 for BGR uint8 rows, 1 for gray rows ``[n, width]``.
        bit_depth: 8 (uint8 rows) or 16 (uint16 gray rows).
        level: zlib level (1: fast).
    """

    def __init__(self, target: str | os.PathLike, size_wh: tuple[int, int], channels: int = 3,
                 bit_depth: int = 8, level: int = 1) -> None:
        if (channels, bit_depth) not in ((3, 8), (1, 8), (1, 16)):
            raise ValueError(f"unsupported PNG layout: {channels} channel(s), {bit_depth} bits")
        self.channels, self.bit_depth = channels, bit_depth
        self._dtype = np.dtype(np.uint8 if bit_depth == 8 else np.uint16)
        self._deflate = zlib.compressobj(level)
        self._above: np.ndarray | None = None
        super().__init__(target, size_wh)

    def _start(self) -> None:
        colour_type = 2 if self.channels == 3 else 0
        self._file.write(_PNG_SIGNATURE)
        self._chunk(b"IHDR", struct.pack(">IIBBBBB", self.width, self.height, self.bit_depth,
                                         colour_type, 0, 0, 0))

    def _rows(self, rows: np.ndarray) -> None:
        if rows.dtype != self._dtype or rows.ndim != (3 if self.channels == 3 else 2):
            raise ValueError(f"expected {self._dtype} rows with {self.channels} channel(s), "
                             f"got {rows.dtype} {rows.shape}")
        if self.channels == 3:
            rows = rows[:, :, ::-1]  # PNG stores RGB
        elif self.bit_depth == 16:
            rows = rows.astype(">u2")  # PNG stores 16-bit samples big-endian
        raw = np.ascontiguousarray(rows).view(np.uint8).reshape(rows.shape[0], -1)
        filtered = np.empty((raw.shape[0], raw.shape[1] + 1), np.uint8)
        filtered[:, 0] = _FILTER_UP
        above = self._above if self._above is not None else np.zeros_like(raw[0])
        np.subtract(raw[0], above, out=filtered[0, 1:])  # uint8 arithmetic wraps, as PNG's
        np.subtract(raw[1:], raw[:-1], out=filtered[1:, 1:])
        self._above = raw[-1].copy()
        data = self._deflate.compress(filtered)
        if data:
            self._chunk(b"IDAT", data)

    def _finish(self) -> None:
        self._chunk(b"IDAT", self._deflate.flush())
        self._chunk(b"IEND", b"")

    def _chunk(self, kind: bytes, data: bytes) -> None:
        self._file.write(struct.pack(">I", len(data)))
        self._file.write(kind)
        self._file.write(data)
        self._file.write(struct.pack(">I", zlib.crc32(data, zlib.crc32(kind))))


class NpyWriter(StripWriter):
    """A float32 ``[height, width]`` ``.npy`` written band by band (``np.load`` reads it).

    Args:
        target: the final path.
        size_wh: ``(width, height)``.
    """

    def _start(self) -> None:
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")),
                  "fortran_order": False, "shape": (self.height, self.width)}
        np.lib.format.write_array_header_1_0(self._file, header)

    def _rows(self, rows: np.ndarray) -> None:
        if rows.ndim != 2:
            raise ValueError(f"expected rows [n, width], got {rows.shape}")
        self._file.write(np.ascontiguousarray(rows, dtype="<f4").data)
