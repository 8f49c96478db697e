"""Queues: the hand-offs between a pipeline's threads, and the end-of-stream sentinel.

Starts no threads, touches no files. File input uses bounded blocking queues
(backpressure: nothing is dropped or reordered, memory stays bounded); live input uses
one-slot latest-frame-wins queues (a frame that waits while a newer one arrives is
dropped and counted, so latency never grows). :class:`QueueSink` hands a pipeline's
frames to another thread (the Python API, the web server's live view).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Iterator
from enum import Enum
from typing import Generic, TypeVar

from stream.core.records import DepthFrame
from stream.sinks.base import Sink, SinkContext

__all__ = ["POLL_S", "DropPolicy", "END", "FrameQueue", "take", "QueueSink"]

T = TypeVar("T")

POLL_S = 0.1
"""How often a waiting thread looks at the stop event, in seconds."""


class DropPolicy(Enum):
    """How a queue between two threads behaves when its consumer is slower."""

    BLOCK = "block"  # bounded; the producer waits (files: nothing is ever dropped)
    LATEST = "latest"  # one slot; a newer item replaces the waiting one (live)


class _End:
    """The end-of-stream sentinel's type (one instance, :data:`END`)."""

    def __repr__(self) -> str:
        return "END"


END = _End()
"""What :meth:`FrameQueue.get` returns once the producer has ended and the queue is empty."""


class FrameQueue(Generic[T]):
    """A hand-off between two threads, bounded and blocking, or one-slot latest-wins.

    ``end()`` marks the end of the stream: once the items before it are taken,
    ``get`` returns :data:`END`. ``end()`` never blocks, so a failing producer can
    always send it. ``dropped`` counts items a newer one replaced.
    """

    def __init__(self, policy: DropPolicy = DropPolicy.BLOCK, maxsize: int = 8) -> None:
        self.policy = policy
        self.maxsize = 1 if policy is DropPolicy.LATEST else max(1, maxsize)
        self.dropped = 0
        self._items: deque[T] = deque()
        self._ended = False
        self._cond = threading.Condition()

    def put(self, item: T, stop: threading.Event | None = None) -> bool:
        """Add ``item``; a full blocking queue waits. False if ``stop`` was set meanwhile."""
        with self._cond:
            if self.policy is DropPolicy.LATEST:
                self.dropped += len(self._items)
                self._items.clear()
            else:
                while len(self._items) >= self.maxsize:
                    if stop is not None and stop.is_set():
                        return False
                    self._cond.wait(POLL_S)
            self._items.append(item)
            self._cond.notify_all()
            return True

    def wait_for_room(self, stop: threading.Event | None = None) -> bool:
        """Wait until a ``put`` would not block; False if ``stop`` was set meanwhile.

        A producer of large items calls it before making the next one, so that it does
        not hold a finished item while it waits.
        """
        with self._cond:
            while self.policy is DropPolicy.BLOCK and len(self._items) >= self.maxsize:
                if stop is not None and stop.is_set():
                    return False
                self._cond.wait(POLL_S)
            return True

    def get(self, timeout: float | None = None) -> T | _End:
        """The oldest item, or :data:`END` after ``end()``.

        Raises:
            queue.Empty: nothing came within ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items and not self._ended:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise queue.Empty
                self._cond.wait(remaining)
            if self._items:
                item = self._items.popleft()
                self._cond.notify_all()
                return item
            return END

    def end(self) -> None:
        """Mark the end of the stream (never blocks)."""
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def drain(self) -> int:
        """Throw away what waits (so a blocked producer can go on); return how many."""
        with self._cond:
            count = len(self._items)
            self._items.clear()
            self._cond.notify_all()
            return count

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


def take(q: FrameQueue[T], stop: threading.Event) -> T | None:
    """The next item, or ``None`` at the end of the stream or once ``stop`` is set."""
    while not stop.is_set():
        try:
            item = q.get(timeout=POLL_S)
        except queue.Empty:
            continue
        return None if item is END else item  # type: ignore[return-value]
    return None


class QueueSink(Sink):
    """A sink another thread iterates: ``for frame in sink`` yields the DepthFrames.

    The iteration ends when the pipeline ends (or fails, or is stopped). For file input
    the queue is bounded and blocking (the consumer's pace holds the pipeline back,
    nothing is lost); for live input a slow consumer sees only the newest frame, and
    :attr:`dropped` counts the others.

    Args:
        maxsize: frames that may wait (blocking policy).
        policy: ``None`` to follow the source (live -> latest wins, file -> block).

    Example:
        >>> out = QueueSink()
        >>> with Pipeline(source, estimator, [out]).start():  # doctest: +SKIP
        ...     for frame in out:
        ...         use(frame.depth)
    """

    needs_network_depth = True  # the consumer may read any field

    def __init__(self, maxsize: int = 4, policy: DropPolicy | None = None) -> None:
        self._policy = policy
        self._queue: FrameQueue[DepthFrame] = FrameQueue(policy or DropPolicy.BLOCK, maxsize)
        self._maxsize = maxsize
        self._stop = threading.Event()

    @property
    def dropped(self) -> int:
        """Frames a newer one replaced before the consumer took them (live)."""
        return self._queue.dropped

    def open(self, context: SinkContext) -> None:  # noqa: D102
        self._stop = context.stop
        if self._policy is None and context.info.live:
            self._queue.policy, self._queue.maxsize = DropPolicy.LATEST, 1

    def write(self, frame: DepthFrame) -> None:  # noqa: D102
        self._queue.put(frame, self._stop)

    def close(self) -> None:  # noqa: D102
        self._queue.end()

    def get(self, timeout: float | None = None) -> DepthFrame | None:
        """The next frame, or ``None`` at the end.

        Raises:
            queue.Empty: nothing came within ``timeout`` seconds.
        """
        item = self._queue.get(timeout)
        return None if item is END else item  # type: ignore[return-value]

    def __iter__(self) -> Iterator[DepthFrame]:
        while True:
            try:
                item = self._queue.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if item is END:
                return
            yield item  # type: ignore[misc]
