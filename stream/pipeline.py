"""Pipeline: capture, inference and render threads joined by queues.

The only module that starts threads. A :class:`Pipeline` reads :class:`Frame` s from a
source on the capture thread, runs the network (then the smoothing stage and the colour
range) on the inference thread, and hands :class:`DepthFrame` s to its sinks on the
render thread::

    source --Frame--> [queue] --> network, smoother, range --DepthFrame--> [queue] --> sinks

File input uses bounded blocking queues (backpressure: no frame is ever dropped or
reordered, memory stays bounded whatever the video's length). Live input uses one-slot
latest-frame-wins queues: a frame that waits while a newer one arrives is dropped and
counted, so latency never grows.

Two signals, each with one job: a shared ``threading.Event`` cancels (every loop checks
it), and an end-of-stream sentinel travels downstream. Each thread runs in a wrapper that
keeps the first exception, sets the stop event and passes the sentinel on;
:meth:`Pipeline.join` re-raises it.

Example:
    >>> settings = StreamSettings(layout=Layout.SIDE)
    >>> stats = convert("in.mp4", "out.mp4", settings)  # doctest: +SKIP
    >>> print(stats.frames_written, stats.latency_ms_p95)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import numpy as np

from .colormap import DisplayRange
from .errors import ConfigError, PipelineError, SinkError, StreamError
from .inference import DepthEstimator
from .records import DepthFrame, Frame
from .sinks import (
    Layout,
    RawDepthSink,
    RawFormat,
    Renderer,
    Sink,
    SinkContext,
    VideoFileSink,
    parse_enum,
)
from .smoothing import DEFAULT_STRENGTH, TemporalSmoother
from .sources import FileSource, Source
from .transforms import to_rgb

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "Layout",
    "RawFormat",
    "DropPolicy",
    "END",
    "StreamSettings",
    "RunStats",
    "Smoother",
    "ColourRange",
    "make_smoother",
    "FrameQueue",
    "QueueSink",
    "Pipeline",
    "Progress",
    "build_convert",
    "convert",
    "run",
]

T = TypeVar("T")

Progress = Callable[[int, "int | None"], Any]
"""``progress(done, total)``: frames written so far and the source's frame count (or None)."""

_POLL_S = 0.1  # how often a waiting thread looks at the stop event


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


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class StreamSettings:
    """Everything a conversion or live run is asked to do (shared, read-only, by threads).

    Attributes:
        layout: what the video and the window show.
        alpha: weight of the depth colours in the overlay layout.
        cmap: colormap name (:data:`stream.colormap.COLORMAPS`).
        invert: show near as dark.
        smooth: temporal smoothing strength from 0 (off, ``--no-smooth``) to 1
            (:class:`stream.smoothing.TemporalSmoother`).
        raw_unsmoothed: raw depth export writes the network's own depth, not the
            smoothed one.
        raw_dir: also write raw depth here (16-bit PNG per frame and ``timestamps.csv``).
        raw_format: PNG, or PNG and float32 ``.npy``.
        overwrite: replace existing outputs.
        backend: ``auto``, ``openvino`` or ``torch`` (when the pipeline builds the model).
        device: ``cpu`` or ``cuda`` (torch).
        weights: checkpoint path; ``None`` looks in the usual places.
        duration_s: stop a run after this many seconds (live); ``None`` runs to the end.
        queue_size: frames each file queue may hold (memory bound; live queues hold one).
    """

    layout: Layout = Layout.DEPTH
    alpha: float = 0.5
    cmap: str = "inferno"
    invert: bool = False
    smooth: float = DEFAULT_STRENGTH
    raw_unsmoothed: bool = False
    raw_dir: Path | None = None
    raw_format: RawFormat = RawFormat.PNG
    overwrite: bool = False
    backend: str = "auto"
    device: str = "cpu"
    weights: str | None = None
    duration_s: float | None = None
    queue_size: int = 4

    def __post_init__(self) -> None:
        for name, kind in (("layout", Layout), ("raw_format", RawFormat)):
            object.__setattr__(self, name, parse_enum(kind, getattr(self, name), name))
        if self.raw_dir is not None and not isinstance(self.raw_dir, Path):
            object.__setattr__(self, "raw_dir", Path(self.raw_dir))
        if not 0 <= self.smooth <= 1:
            raise ConfigError(f"smooth must be from 0 (off) to 1, got {self.smooth}")
        if self.duration_s is not None and not self.duration_s > 0:
            raise ConfigError(f"duration must be positive, got {self.duration_s}")
        if self.queue_size < 1:
            raise ConfigError(f"queue_size must be >= 1, got {self.queue_size}")
        self.renderer()  # checks alpha and cmap

    def renderer(self) -> Renderer:
        """The layout and colours as the sinks use them."""
        return Renderer(self.layout, self.alpha, self.cmap, self.invert)


@dataclass(frozen=True)
class RunStats:
    """What a run did: frame counts, mean time per stage, capture-to-render latency.

    Attributes:
        frames_read: frames the source delivered.
        frames_inferred: frames the network ran on.
        frames_written: frames every sink received.
        frames_dropped: frames a newer frame replaced in a live queue (files: always 0).
            After a stop, ``read - written - dropped`` frames were in flight and discarded.
        capture_ms_mean: mean time to decode (files) or wait for (live) one frame.
        inference_ms_mean: mean network time per frame (with pre- and post-processing).
        smoothing_ms_mean: mean time of the smoothing stage and colour range per frame.
        render_ms_mean: mean time of all sinks together per frame.
        latency_ms_p50: median time from a frame's capture to the end of its rendering.
        latency_ms_p95: 95th percentile of that latency.
        elapsed_s: wall time from start to the end of the render thread (or now).
        fps: frames written per second of ``elapsed_s``.
        interrupted: the run was stopped before its input ended.
        warnings: what went wrong but did not stop the run (a truncated input).
    """

    frames_read: int = 0
    frames_inferred: int = 0
    frames_written: int = 0
    frames_dropped: int = 0
    capture_ms_mean: float = 0.0
    inference_ms_mean: float = 0.0
    smoothing_ms_mean: float = 0.0
    render_ms_mean: float = 0.0
    latency_ms_p50: float | None = None
    latency_ms_p95: float | None = None
    elapsed_s: float = 0.0
    fps: float = 0.0
    interrupted: bool = False
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``--stats FILE.json``)."""
        out = asdict(self)
        out["warnings"] = list(self.warnings)
        return out


# --------------------------------------------------------------------------- stages


class Smoother(Protocol):
    """The smoothing stage between network and render (:mod:`stream.smoothing`).

    A smoother may also have a ``scene_cut`` attribute: when it is True after an
    update (the smoother started afresh), the pipeline resets the colour range too.
    """

    def update(self, depth: np.ndarray, image_bgr: np.ndarray) -> np.ndarray:
        """The depth to show for a frame, given the network's ``depth`` and the picture."""

    def reset(self) -> None:
        """Forget the past (a cut, a new input)."""


class ColourRange(Protocol):
    """Where the colours of a stream's depth start and end, frame after frame."""

    def update(self, depth: np.ndarray) -> tuple[float, float]:
        """``(lo, hi)`` to colour ``depth`` with."""

    def reset(self) -> None:
        """Forget the past."""


def make_smoother(settings: StreamSettings) -> Smoother | None:
    """The smoothing stage ``settings`` ask for; ``None`` when ``smooth`` is 0 (off)."""
    if settings.smooth == 0:
        return None
    return TemporalSmoother(settings.smooth)


# --------------------------------------------------------------------------- queues


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
                    self._cond.wait(_POLL_S)
            self._items.append(item)
            self._cond.notify_all()
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


def _take(q: FrameQueue[T], stop: threading.Event) -> T | None:
    """The next item, or ``None`` at the end of the stream or once ``stop`` is set."""
    while not stop.is_set():
        try:
            item = q.get(timeout=_POLL_S)
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
                item = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if item is END:
                return
            yield item  # type: ignore[misc]


# --------------------------------------------------------------------------- statistics


class _Reservoir:
    """A uniform sample of at most ``capacity`` values (memory bounded for any run length)."""

    def __init__(self, capacity: int = 20_000, seed: int = 0) -> None:
        self.capacity = capacity
        self.values: list[float] = []
        self.seen = 0
        self._rng = random.Random(seed)

    def add(self, value: float) -> None:
        self.seen += 1
        if len(self.values) < self.capacity:
            self.values.append(value)
            return
        slot = self._rng.randrange(self.seen)
        if slot < self.capacity:
            self.values[slot] = value

    def percentile(self, q: float) -> float | None:
        return float(np.percentile(self.values, q)) if self.values else None


class _Tally:
    """Counters the three threads update (each its own fields) and ``stats()`` reads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.read = self.inferred = self.written = 0
        self.capture_ms = self.inference_ms = self.smoothing_ms = self.render_ms = 0.0
        self.latency_ms = _Reservoir()


# --------------------------------------------------------------------------- pipeline

# File conversions keep the network busy on every core; decoding, colouring and encoding
# then steal its time slices. A slightly lower priority for the capture and render threads
# (their queues hold a few frames of slack) gave 13.6-13.7 instead of 12.8-13.1 fps on 2
# cores (benchmarks/bench_convert.py). Live runs keep normal priority: latency comes first.
_NICE_IO = 5


def _lower_thread_priority(increment: int) -> None:
    """Raise this thread's nice value (Linux threads are tasks); no-op where unsupported."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + increment)
    except (AttributeError, OSError):
        pass


class Pipeline:
    """Three threads (capture, inference, render) from a source through the model to sinks.

    The estimator comes built (weights are checked before any thread starts) and is
    used only on the inference thread. Sinks are opened, written and closed on the
    render thread; the source is read and closed on the capture thread.

    Args:
        source: a :class:`stream.sources.Source`; ``source.info.live`` picks the queues.
        estimator: the network (:func:`stream.inference.create_estimator`).
        sinks: where the DepthFrames go (video file, window, raw depth, a QueueSink...).
        settings: what to do; the pipeline reads ``smooth``, ``duration_s`` and
            ``queue_size``.
        stop_event: a shared cancellation event (a server's cancel button); one is made
            if not given.
        smoother: the smoothing stage; default :func:`make_smoother` of ``settings``.
        colour_range: the colour range; default a :class:`stream.colormap.DisplayRange`
            (robust percentiles, eased over time).
        progress: ``progress(done, total)`` on the render thread after each frame.
        close_estimator: close the estimator when the inference thread ends.

    Example:
        >>> with Pipeline(FileSource("in.mp4"), estimator, [sink]).start() as p:  # doctest: +SKIP
        ...     stats = p.join()
    """

    def __init__(
        self,
        source: Source,
        estimator: DepthEstimator,
        sinks: Iterable[Sink],
        settings: StreamSettings | None = None,
        stop_event: threading.Event | None = None,
        *,
        smoother: Smoother | None = None,
        colour_range: ColourRange | None = None,
        progress: Progress | None = None,
        close_estimator: bool = False,
    ) -> None:
        self.source = source
        self.estimator = estimator
        self.sinks = list(sinks)
        self.settings = settings or StreamSettings()
        self.stop_event = stop_event or threading.Event()
        self.live = source.info.live
        policy = DropPolicy.LATEST if self.live else DropPolicy.BLOCK
        self._frames: FrameQueue[Frame] = FrameQueue(policy, self.settings.queue_size)
        self._depths: FrameQueue[DepthFrame] = FrameQueue(policy, self.settings.queue_size)
        self._smoother = smoother if smoother is not None else make_smoother(self.settings)
        self._range = colour_range or DisplayRange()
        self._progress = progress
        self._close_estimator = close_estimator
        self._tally = _Tally()
        self._threads: list[threading.Thread] = []
        self._error: tuple[str, BaseException] | None = None
        self._error_lock = threading.Lock()
        self._started: float | None = None
        self._finished: float | None = None
        self._ended = False  # the input ran to its end (not stopped)

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> Self:
        """Start the three threads; return ``self`` (for ``with Pipeline(...).start()``).

        Raises:
            PipelineError: started twice.
        """
        if self._threads:
            raise PipelineError("a pipeline can be started once")
        self._started = time.monotonic()
        stages = (
            # The capture thread may sit in a device read that only the device ends
            # (a stalled network stream); as a daemon it cannot keep the process alive.
            ("capture", self._capture, self._frames, True),
            ("inference", self._infer, self._depths, False),
            ("render", self._render, None, False),
        )
        for name, body, downstream, daemon in stages:
            thread = threading.Thread(target=self._run_stage, args=(name, body, downstream),
                                      name=f"depthstream-{name}", daemon=daemon)
            self._threads.append(thread)
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Ask every thread to stop and empty the queues; sinks still finish their files."""
        self.stop_event.set()
        self._frames.drain()
        self._depths.drain()

    def join(self, timeout: float | None = None) -> RunStats:
        """Wait for the threads; return the stats or re-raise the first thread's error.

        Errors of this package (a source that does not decode, a sink that cannot
        write) are re-raised as they are; anything else as :class:`PipelineError`
        naming the thread.

        Raises:
            StreamError: the first error a thread raised.
            PipelineError: a thread failed otherwise, or threads still ran at ``timeout``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            # Short waits keep the main thread responsive to Ctrl+C.
            while thread.is_alive():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                thread.join(_POLL_S if remaining is None else min(_POLL_S, remaining))
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            raise PipelineError(f"pipeline did not stop within {timeout} s ({', '.join(alive)})")
        if self._error is not None:
            name, exc = self._error
            if isinstance(exc, StreamError):
                raise exc
            message = " ".join(str(exc).split())
            raise PipelineError(f"{name} thread failed: {type(exc).__name__}: {message}") from exc
        return self.stats()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self._threads:  # never started: nobody else will close the source
            self.source.close()
        self.stop()
        if exc_type is None:
            self.join()
            return
        try:
            self.join()
        except StreamError:
            pass  # the exception already leaving the with-block is the one to report

    # -- status ----------------------------------------------------------------

    def dropped(self) -> int:
        """Frames dropped so far by the latest-wins queues (live input)."""
        return self._frames.dropped + self._depths.dropped

    def stats(self) -> RunStats:
        """A snapshot of the counters (final once :meth:`join` has returned)."""
        t = self._tally
        with t.lock:
            read, inferred, written = t.read, t.inferred, t.written
            sums = (t.capture_ms, t.inference_ms, t.smoothing_ms, t.render_ms)
            p50, p95 = t.latency_ms.percentile(50), t.latency_ms.percentile(95)
        end = self._finished or time.monotonic()
        elapsed = end - self._started if self._started is not None else 0.0
        return RunStats(
            frames_read=read,
            frames_inferred=inferred,
            frames_written=written,
            frames_dropped=self.dropped(),
            capture_ms_mean=sums[0] / read if read else 0.0,
            inference_ms_mean=sums[1] / inferred if inferred else 0.0,
            smoothing_ms_mean=sums[2] / inferred if inferred else 0.0,
            render_ms_mean=sums[3] / written if written else 0.0,
            latency_ms_p50=p50,
            latency_ms_p95=p95,
            elapsed_s=elapsed,
            fps=written / elapsed if elapsed > 0 else 0.0,
            interrupted=self._started is not None and self.stop_event.is_set()
            and not self._ended,
            warnings=tuple(self.source.warnings),
        )

    # -- threads ---------------------------------------------------------------

    def _run_stage(self, name: str, body: Callable[[], None],
                   downstream: FrameQueue[Any] | None) -> None:
        if name != "inference" and not self.live and _NICE_IO:
            _lower_thread_priority(_NICE_IO)
        try:
            body()
        except BaseException as exc:  # noqa: BLE001 - every failure must reach join()
            self._fail(name, exc)
        finally:
            if downstream is not None:
                downstream.end()

    def _fail(self, name: str, exc: BaseException) -> None:
        with self._error_lock:
            if self._error is None:
                self._error = (name, exc)
        self.stop_event.set()

    def _capture(self) -> None:
        stop, tally = self.stop_event, self._tally
        duration = self.settings.duration_s
        deadline = None if duration is None else time.monotonic() + duration
        frames = self.source.frames(stop)
        try:
            while not stop.is_set():
                start = time.perf_counter()
                frame = next(frames, None)
                if frame is None:
                    break
                with tally.lock:
                    tally.read += 1
                    tally.capture_ms += (time.perf_counter() - start) * 1000.0
                if not self._frames.put(frame, stop):
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    break
        finally:
            frames.close()
            self.source.close()  # a generator never started does not run its finally

    def _estimates(self) -> Iterator[tuple[Frame, np.ndarray, float]]:
        """``(frame, depth, inference_ms)`` in order, for the frames the capture queued."""
        stop = self.stop_event
        if self.live:  # one frame at a time: the newest, as soon as the network is free
            while (frame := _take(self._frames, stop)) is not None:
                depth, ms = self.estimator.predict(to_rgb(frame.image, "bgr"))
                yield frame, depth, ms
            return
        # Files: a stream through predict_many, so a backend may keep several frames
        # in flight; the time spent waiting for input is not the network's.
        waited = [0.0]

        def inputs() -> Iterator[tuple[Frame, np.ndarray]]:
            while True:
                start = time.perf_counter()
                frame = _take(self._frames, stop)
                waited[0] += time.perf_counter() - start
                if frame is None:
                    return
                yield frame, to_rgb(frame.image, "bgr")

        outputs = self.estimator.predict_many(inputs())
        try:
            while True:
                waited[0] = 0.0
                start = time.perf_counter()
                item = next(outputs, None)
                if item is None:
                    return
                ms = (time.perf_counter() - start - waited[0]) * 1000.0
                yield item[0], item[1], max(ms, 0.0)
        finally:
            outputs.close()  # a backend with requests in flight lets them go here

    def _infer(self) -> None:
        stop, tally, smoother = self.stop_event, self._tally, self._smoother
        if smoother is not None:
            smoother.reset()  # a new run: nothing from an earlier one carries over
        self._range.reset()
        estimates = self._estimates()
        try:
            for frame, depth, inference_ms in estimates:
                start = time.perf_counter()
                raw_depth = None
                if smoother is not None:
                    raw_depth = np.asarray(depth, dtype=np.float32)
                    depth = smoother.update(raw_depth, frame.image)
                    if getattr(smoother, "scene_cut", False):
                        self._range.reset()  # a new scale: the old range means nothing
                lo, hi = self._range.update(depth)
                depth_frame = DepthFrame(
                    index=frame.index, timestamp=frame.timestamp, image=frame.image,
                    depth=np.asarray(depth, dtype=np.float32), inference_ms=inference_ms,
                    lo=float(lo), hi=float(hi), smoothed=smoother is not None, pts=frame.pts,
                    captured=frame.captured, raw_depth=raw_depth,
                )
                with tally.lock:
                    tally.inferred += 1
                    tally.inference_ms += inference_ms
                    tally.smoothing_ms += (time.perf_counter() - start) * 1000.0
                if not self._depths.put(depth_frame, stop):
                    break
        finally:
            estimates.close()
            if self._close_estimator:
                self.estimator.close()

    def _render(self) -> None:
        try:
            self._render_frames()
        except BaseException as exc:  # noqa: BLE001 - kept before the sinks' close errors
            self._fail("render", exc)
        finally:
            for sink in self.sinks:
                try:
                    sink.close()
                except BaseException as exc:  # noqa: BLE001
                    self._fail("render", exc)
            self._finished = time.monotonic()

    def _render_frames(self) -> None:
        stop, tally = self.stop_event, self._tally
        context = SinkContext(self.source.info, stop, self.dropped)
        for sink in self.sinks:
            sink.open(context)
        total = None if self.live else self.source.info.frames
        while (frame := _take(self._depths, stop)) is not None:
            start = time.perf_counter()
            for sink in self.sinks:
                sink.write(frame)
            render_ms = (time.perf_counter() - start) * 1000.0
            latency_ms = (time.monotonic() - frame.captured) * 1000.0
            with tally.lock:
                tally.written += 1
                tally.render_ms += render_ms
                tally.latency_ms.add(latency_ms)
                written = tally.written
            if self._progress is not None:
                self._progress(written, total)
            if any(sink.done for sink in self.sinks):
                self.stop_event.set()  # the user closed the window: a clean stop
                return
        if not stop.is_set():
            self._ended = True


# --------------------------------------------------------------------------- conveniences


def build_convert(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike | None,
    settings: StreamSettings | None = None,
    estimator: DepthEstimator | None = None,
    progress: Progress | None = None,
    stop_event: threading.Event | None = None,
    extra_sinks: Iterable[Sink] = (),
) -> Pipeline:
    """A ready (not started) pipeline from a video file to a video file and/or raw depth.

    Cheap checks come first (input, outputs), then the weights, so a bad input or
    output path fails before the model loads.

    Args:
        input_path: the video to convert.
        output_path: ``.mp4``/``.mkv``/``.webm``, or ``None`` for raw depth only.
        settings: layout, colours, raw output, model choice.
        estimator: a built estimator; ``None`` builds one from ``settings`` (and closes
            it when the run ends).
        progress: ``progress(done, total)`` after each written frame.
        stop_event: a cancellation event to share.
        extra_sinks: more sinks (a :class:`stream.publisher.ZmqPublisher`...); they count
            as output.

    Raises:
        SourceError: the input is missing or not a video.
        SinkError: an output cannot be written (missing folder, exists, is the input).
        ConfigError: nothing to write.
        WeightsError: no usable checkpoint.
    """
    settings = settings or StreamSettings()
    sinks: list[Sink] = list(extra_sinks)
    if output_path is None and settings.raw_dir is None and not sinks:
        raise ConfigError("nothing to write: give an output video or a raw depth folder")
    source = FileSource(input_path)
    try:
        if output_path is not None:
            if Path(output_path).resolve() == source.path.resolve():
                raise SinkError(f"output would replace the input: {output_path}")
            sinks.append(VideoFileSink(output_path, settings.renderer(), audio_from=source.path,
                                       overwrite=settings.overwrite))
        if settings.raw_dir is not None:
            sinks.append(RawDepthSink(settings.raw_dir, settings.raw_format, settings.overwrite,
                                      unsmoothed=settings.raw_unsmoothed))
        owns = estimator is None
        if estimator is None:
            from .inference import create_estimator

            estimator = create_estimator(settings.weights, settings.backend, settings.device)
    except BaseException:
        source.close()
        raise
    return Pipeline(source, estimator, sinks, settings, stop_event, progress=progress,
                    close_estimator=owns)


def run(pipeline: Pipeline, stop_timeout_s: float = 60.0) -> RunStats:
    """Start ``pipeline`` and wait for it; on Ctrl+C stop it, let sinks finish, re-raise.

    Raises:
        KeyboardInterrupt: after the pipeline stopped and its files were closed.
        StreamError: what :meth:`Pipeline.join` raises.
    """
    pipeline.start()
    try:
        return pipeline.join()
    except KeyboardInterrupt:
        pipeline.stop()
        try:
            pipeline.join(stop_timeout_s)
        except StreamError:
            pass  # the interrupt is what the caller asked about
        raise


def convert(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike | None,
    settings: StreamSettings | None = None,
    estimator: DepthEstimator | None = None,
    progress: Progress | None = None,
    stop_event: threading.Event | None = None,
    extra_sinks: Iterable[Sink] = (),
) -> RunStats:
    """Convert a video file to a depth video (and/or raw depth); return the run's stats.

    Every frame is converted, in order, at the input's frame rate and timestamps, with
    the input's audio. See :func:`build_convert` for the arguments and errors; a
    truncated input converts what decodes and lists a warning in the stats.
    """
    return run(build_convert(input_path, output_path, settings, estimator, progress,
                             stop_event, extra_sinks))
