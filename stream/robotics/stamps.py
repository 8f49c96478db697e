"""Stamps: the header time of each frame in the robotics outputs (ROS 2 bags, Foxglove, MCAP).

A file's frames are stamped with their presentation time, exactly ``pts * time_base``
seconds from the video's start (or, with :attr:`StampOrigin.UNIX`, from the file's
recorded start time when it has one); a live source's frames with the capture clock as
wall-clock (Unix) time. :func:`file_start_unix_s` reads a file's start time; it is the
only part that touches a file (it opens it to read its metadata). Starts no threads.

Example:
    >>> stamper = Stamper()
    >>> stamper.open(VideoInfo(64, 48, time_base=Fraction(1, 30)))  # doctest: +SKIP
    >>> stamper.stamp_ns(frame)  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import time
from datetime import datetime, timezone
from fractions import Fraction

from stream.core.records import DepthFrame, VideoInfo
from stream.core.settings import StampOrigin, parse_enum

__all__ = ["Stamper", "file_start_unix_s", "split_ns"]

_NS = 1_000_000_000


def split_ns(stamp_ns: int) -> tuple[int, int]:
    """``(seconds, nanoseconds)`` of a stamp, as ROS's ``Time`` and Foxglove's ``Timestamp``."""
    return stamp_ns // _NS, stamp_ns % _NS


def file_start_unix_s(path: str | os.PathLike) -> float | None:
    """The file's recorded start time (``creation_time`` metadata) in Unix seconds, or None."""
    import av

    try:
        with av.open(os.fspath(path)) as container:
            metadata = dict(container.metadata)
            if container.streams.video:
                metadata = {**container.streams.video[0].metadata, **metadata}
    except (OSError, av.FFmpegError):
        return None
    text = metadata.get("creation_time")
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:  # creation_time is UTC by the MP4/Matroska conventions
        when = when.replace(tzinfo=timezone.utc)
    start = when.timestamp()
    return start if math.isfinite(start) and start > 0 else None


class Stamper:
    """Header stamps in nanoseconds for the frames of one run.

    Args:
        origin: for files, seconds from the video's start or Unix time.
        start_unix_s: the file's start time, added with :attr:`StampOrigin.UNIX` (unknown:
            ``None``, the stamps then count from the video's start).
    """

    def __init__(self, origin: StampOrigin | str = StampOrigin.VIDEO,
                 start_unix_s: float | None = None) -> None:
        self.origin = parse_enum(StampOrigin, origin, "stamp origin")
        self.start_unix_s = start_unix_s
        self.live = False
        self.time_base: Fraction | None = None
        self._offset_ns = 0
        self._wall_minus_monotonic = 0.0

    def open(self, info: VideoInfo) -> None:
        """Start stamping frames of ``info``'s stream (live: capture clock; files: pts)."""
        self.live = info.live
        self.time_base = info.time_base
        self._wall_minus_monotonic = time.time() - time.monotonic()
        self._offset_ns = 0
        if self.origin is StampOrigin.UNIX and self.start_unix_s is not None:
            self._offset_ns = round(Fraction(self.start_unix_s) * _NS)

    def stamp_ns(self, frame: DepthFrame) -> int:
        """The frame's stamp: never negative (a negative pts is stamped 0)."""
        if self.live:
            stamp = round((frame.captured + self._wall_minus_monotonic) * _NS)
        elif frame.pts is not None and self.time_base is not None:
            stamp = round(frame.pts * self.time_base * _NS) + self._offset_ns
        else:
            stamp = round(Fraction(frame.timestamp) * _NS) + self._offset_ns
        return max(0, stamp)
