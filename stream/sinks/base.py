"""Sinks: the interface every output implements, and the raw depth files.

A sink receives :class:`stream.core.records.DepthFrame` s on the pipeline's render thread:
``open(context)`` once, ``write(frame)`` per frame, ``close()`` (safe twice). This module
holds the interface, the in-process :class:`CallbackSink` and the raw depth writers
(16-bit PNG, float32 ``.npy``, ``timestamps.csv``); it touches files (through
:mod:`stream.core.files`, so each appears whole or not at all) and starts no threads. Videos
are in :mod:`stream.sinks.video`, windows in :mod:`stream.window.sink`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from stream.core.errors import SinkError
from stream.core.files import (
    PartFile,
    atomic_open,
    check_output_path,
    check_writable_folder,
    write_bytes_atomic,
)
from stream.core.records import DepthFrame, DepthKind, VideoInfo
from stream.core.settings import RawFormat, parse_enum
from stream.depth.colormap import minmax

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "write_image",
    "depth_to_u16",
    "metres_to_mm_u16",
    "CSV_HEADER_RELATIVE",
    "CSV_HEADER_METRES",
    "write_depth_raw",
    "SinkContext",
    "Sink",
    "CallbackSink",
    "RawDepthSink",
]


def write_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write a picture (format from the extension) atomically: temporary file, then rename.

    Raises:
        SinkError: the picture cannot be encoded or written.
    """
    path = Path(path)
    ok, data = cv2.imencode(path.suffix or ".png", image)
    if not ok:
        raise SinkError(f"cannot encode a picture as {path.suffix or '.png'}: {path}")
    return write_bytes_atomic(path, data.tobytes())


#: ``timestamps.csv``'s first line for relative depth and for metres.
CSV_HEADER_RELATIVE = "index,seconds,lo,hi,scale\n"
CSV_HEADER_METRES = "index,seconds,min_m,max_m,scale\n"


def depth_to_u16(depth: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Depth scaled linearly so ``lo`` -> 0 and ``hi`` -> 65535 (clipped), uint16."""
    span = float(hi) - float(lo)
    out = np.zeros(depth.shape, np.uint16)
    if span <= 0 or not np.isfinite(span):
        return out
    # In bands of rows: the float64 working copy of an 8K frame would be four times the
    # size of the result.
    step = max(1, (1 << 21) // max(1, depth[0].size if depth.ndim > 1 else 1))
    for top in range(0, depth.shape[0], step):
        scaled = (depth[top:top + step].astype(np.float64) - lo) * (65535.0 / span)
        out[top:top + step] = np.clip(np.nan_to_num(scaled), 0, 65535).round()
    return out


def metres_to_mm_u16(depth_m: np.ndarray) -> np.ndarray:
    """Metres as uint16 millimetres, the depth cameras' and ROS ``16UC1`` convention.

    0 means no depth (a value that is not finite or not positive); beyond 65.535 m is
    clipped to 65535.
    """
    out = np.zeros(depth_m.shape, np.uint16)
    step = max(1, (1 << 21) // max(1, depth_m[0].size if depth_m.ndim > 1 else 1))
    for top in range(0, depth_m.shape[0], step):
        mm = np.nan_to_num(depth_m[top:top + step].astype(np.float64) * 1000.0, nan=0.0,
                           posinf=0.0, neginf=0.0)
        out[top:top + step] = np.clip(mm, 0, 65535).round()
    return out


def write_depth_raw(stem: str | os.PathLike, depth: np.ndarray, lo: float, hi: float,
                    npy: bool = True, metres: bool = False) -> list[Path]:
    """Write ``<stem>.png`` (16-bit) and, with ``npy``, ``<stem>.npy`` (float32).

    The PNG holds relative depth scaled so ``lo`` -> 0 and ``hi`` -> 65535, or, with
    ``metres``, millimetres (:func:`metres_to_mm_u16`); the ``.npy`` holds ``depth`` as
    it is (metres for a metric model).
    """
    stem = Path(stem)
    pixels = metres_to_mm_u16(depth) if metres else depth_to_u16(depth, lo, hi)
    written = [write_image(stem.with_suffix(".png"), pixels)]
    if npy:
        target = stem.with_suffix(".npy")
        try:
            values = np.ascontiguousarray(depth, dtype=np.float32)
            with atomic_open(target, "wb") as f:  # streamed: no in-memory copy of the file
                # Header and data by hand: np.save's tofile() loses the errno of a full disk.
                np.lib.format.write_array_header_1_0(
                    f, np.lib.format.header_data_from_array_1_0(values))
                f.write(values.data)
        except BaseException:
            written[0].unlink(missing_ok=True)  # a frame's files appear together or not at all
            raise
        written.append(target)
    return written


@dataclass(frozen=True)
class SinkContext:
    """What the pipeline tells its sinks when it opens them (on the render thread).

    Attributes:
        info: the source's stream description (size, rate, time base, live or not).
        stop: the pipeline's cancellation event; a sink that may block checks it.
        count_dropped: returns the number of frames dropped so far (live input), for
            status lines.
        kind: what the frames' depth holds (relative inverse depth or metres): known
            before the first frame, for headers and units.
    """

    info: VideoInfo
    stop: threading.Event = field(default_factory=threading.Event)
    count_dropped: Callable[[], int] = field(default=lambda: 0)
    kind: DepthKind = DepthKind.RELATIVE


class Sink:
    """Interface: ``open(context)``, ``write(frame)`` per frame, ``close()`` (safe twice).

    All three run on the pipeline's render thread. ``done`` turns True when the sink
    asks the pipeline to stop (a window the user closed); the pipeline then stops
    cleanly, as at the end of the input.

    ``needs_network_depth`` says whether the sink reads ``DepthFrame.raw_depth`` (the
    network's own depth of a smoothed stream): a full-size float map per frame that the
    pipeline keeps only when a sink asks for it.
    """

    done: bool = False
    needs_network_depth: bool = False

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

    needs_network_depth = True  # the callback may read any field

    def __init__(self, fn: Callable[[DepthFrame], Any]) -> None:
        self.fn = fn

    def write(self, frame: DepthFrame) -> None:  # noqa: D102
        self.fn(frame)


class RawDepthSink(Sink):
    """Per frame a 16-bit PNG (``depth_<index>.png``) and a row of ``timestamps.csv``.

    Relative depth: the PNG maps the depth's own min..max to 0..65535, and the CSV's
    columns are ``index,seconds,lo,hi,scale`` (``lo``/``hi`` undo the PNG scaling).
    Metres (a metric model): the PNG holds millimetres (0 = no depth), and the columns
    are ``index,seconds,min_m,max_m,scale`` (the unit in the header). ``scale`` says
    which depth it is: ``smoothed`` (one scale across frames) or ``raw`` (the network's
    own output of that frame). With :attr:`RawFormat.NPY`, also the float32 depth as
    ``depth_<index>.npy`` (metres for a metric model). Every frame is written at its
    own size. Every file is
    written atomically; the CSV appears when the sink is closed, also after a failed
    write (a full disk): it then lists exactly the frames whose files were written.

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
    _metres = False

    def __init__(self, folder: str | os.PathLike, fmt: RawFormat | str = RawFormat.PNG,
                 overwrite: bool = False, unsmoothed: bool = False) -> None:
        self.folder = Path(folder)
        self.unsmoothed = unsmoothed
        self.needs_network_depth = unsmoothed
        self.fmt = parse_enum(RawFormat, fmt, "raw format")
        if self.folder.exists() and not self.folder.is_dir():
            raise SinkError(f"raw depth folder is a file: {self.folder}")
        if not self.folder.exists():
            check_writable_folder(self.folder.parent)
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
        self._csv_part = PartFile(self.folder / self.CSV_NAME)
        self._metres = context.kind is DepthKind.METRIC
        header = CSV_HEADER_METRES if self._metres else CSV_HEADER_RELATIVE
        try:
            self._csv = os.open(self._csv_part.path, os.O_WRONLY)
            self._csv_size = 0
            self._append_row(header.encode("ascii"))
        except OSError as exc:
            self._close_csv()
            self._csv_part.discard()
            raise SinkError(f"cannot write {self.folder / self.CSV_NAME}: "
                            f"{exc.strerror or exc}") from exc

    def write(self, frame: DepthFrame) -> None:  # noqa: D102
        stem = self.folder / f"depth_{frame.index:06d}"
        depth = frame.network_depth if self.unsmoothed else frame.depth
        scale = "smoothed" if frame.smoothed and depth is frame.depth else "raw"
        # The depth's own min..max, not the display range: the display range clips the
        # tails, and raw export must keep every value.
        lo, hi = float(depth.min()), float(depth.max())
        if not (np.isfinite(lo) and np.isfinite(hi)):
            lo, hi = minmax(depth)
        # repr of a float round-trips exactly: the CSV undoes the PNG scaling losslessly.
        row = f"{frame.index},{float(frame.timestamp)!r},{lo!r},{hi!r},{scale}\n"
        # The row takes its disk space before the frame's files do, and is taken back
        # if they fail: on a full disk the CSV still holds every frame written, and only
        # those (the files of a frame appear together or not at all).
        size = self._csv_size
        try:
            self._append_row(row.encode("ascii"))
            write_depth_raw(stem, depth, lo, hi, npy=self.fmt is RawFormat.NPY,
                            metres=self._metres)
        except BaseException as exc:
            self._truncate_csv(size)
            if isinstance(exc, OSError) and not isinstance(exc, SinkError):
                raise SinkError(f"cannot write raw depth in {self.folder}: "
                                f"{exc.strerror or exc}") from exc
            raise
        self.frames_written += 1

    def close(self) -> None:  # noqa: D102
        if self._closed or self._csv is None:
            return
        self._closed = True
        try:
            os.fsync(self._csv)
        except OSError as exc:
            self._close_csv()
            self._csv_part.discard()
            raise SinkError(f"cannot write {self.folder / self.CSV_NAME}: "
                            f"{exc.strerror or exc}") from exc
        self._close_csv()
        if self.frames_written:
            self._csv_part.commit()
            return
        self._csv_part.discard()
        if self._created and not any(self.folder.iterdir()):
            self.folder.rmdir()

    def _append_row(self, data: bytes) -> None:
        """Write ``data`` at the end of the CSV (all of it, or raise)."""
        os.lseek(self._csv, self._csv_size, os.SEEK_SET)
        done = 0
        while done < len(data):
            done += os.write(self._csv, data[done:])
        self._csv_size += len(data)

    def _truncate_csv(self, size: int) -> None:
        """Take back rows after ``size`` bytes (needs no free space)."""
        try:
            os.ftruncate(self._csv, size)
        except OSError:
            pass  # the CSV may end with a row whose frame failed; its files are gone
        self._csv_size = size

    def _close_csv(self) -> None:
        if self._csv is not None:
            try:
                os.close(self._csv)
            except OSError:
                pass
            self._csv = None
