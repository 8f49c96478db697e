"""Pipeline: capture, depth and render threads joined by queues, and their lifecycle.

Starts the three threads of a run (and only those). A :class:`Pipeline` reads
:class:`~stream.core.records.Frame` s from a source on the capture thread, runs the
:class:`~stream.runtime.depth_stage.DepthStage` on the inference thread, and hands
:class:`~stream.core.records.DepthFrame` s to its sinks on the render thread::

    source --Frame--> [queue] --> network, smoother, range --DepthFrame--> [queue] --> sinks

Two signals, each with one job: a shared ``threading.Event`` cancels (every loop checks
it), and an end-of-stream sentinel travels downstream. Each thread runs in a wrapper that
keeps the first exception, sets the stop event and passes the sentinel on;
:meth:`Pipeline.join` re-raises it. When a run stops (the input ended, or Ctrl+C) every
sink is closed and publishes what it wrote; when it fails, a sink that has an
``abort(error)`` method is aborted instead (a video leaves nothing at its path, or after
a full disk keeps its frames beside it: the line it returns is added to the error).
Frames keep their own size (a stream whose size changes); the camera model follows each
frame's size. Building a pipeline from settings is :mod:`stream.runtime.builder`'s job.

Example:
    >>> with Pipeline(FileSource("in.mp4"), estimator, [sink]).start() as p:  # doctest: +SKIP
    ...     stats = p.join()
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from stream.core.errors import PipelineError, StreamError
from stream.core.records import DepthFrame, Frame
from stream.core.settings import StreamSettings
from stream.core.stats import RunStats, Tally
from stream.engines.estimator import DepthEstimator
from stream.geometry.camera import PinholeCamera, StreamCamera
from stream.runtime.depth_stage import (
    ColourRange,
    DepthStage,
    Smoother,
    depth_kind,
    make_colour_range,
    make_smoother,
)
from stream.runtime.queues import POLL_S, DropPolicy, FrameQueue, take
from stream.sinks.base import Sink, SinkContext
from stream.sources.capture import Source

if TYPE_CHECKING:
    import numpy as np
    from typing_extensions import Self

__all__ = ["Progress", "Pipeline"]

Progress = Callable[[int, "int | None"], Any]
"""``progress(done, total)``: frames written so far and the source's frame count (or None)."""

# File conversions keep the network busy on every core; decoding, colouring and encoding
# then steal its time slices. A slightly lower priority for the capture and render threads
# (their queues hold a few frames of slack) lets the network keep its cores
# (benchmarks/bench_convert.py). Live runs keep normal priority: latency comes first.
_NICE_IO = 5


def _lower_thread_priority(increment: int) -> None:
    """Raise this thread's nice value (Linux threads are tasks); no-op where unsupported."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + increment)
    except (AttributeError, OSError):
        pass


QUEUE_BUDGET_BYTES = 128 << 20
"""About how much each queue between two threads may hold (at least one frame)."""


# File frames larger than this (a little over 4K) are inferred one at a time: a frame in
# flight holds its full-size picture, and at such sizes the rest of the frame's work, not
# the network, sets the pace.
ONE_AT_A_TIME_PIXELS = 4096 * 2304


def _frames_within(queue_size: int, frame_bytes: int) -> int:
    """``queue_size``, or fewer frames when that many would pass the queue's byte budget."""
    return max(1, min(queue_size, QUEUE_BUDGET_BYTES // max(1, frame_bytes)))


def _scaled_pixel(index: int, scale: float, size: int) -> int:
    """The pixel whose centre is pixel ``index``'s centre in a picture ``scale`` times larger."""
    return max(0, min(size - 1, round((index + 0.5) * scale - 0.5)))


class SizedCamera:
    """A stream's camera for frames of any size: the first size's model, scaled to each other.

    A frame of another size (a stream whose size changes) gets the same camera seen at
    that size: focal lengths, principal point and known-distance pixels scaled with the
    picture. Has what :class:`~stream.runtime.depth_stage.DepthStage` uses of a
    :class:`~stream.geometry.camera.StreamCamera` (``reset``, ``for_frame``).
    """

    def __init__(self, camera: StreamCamera) -> None:
        self.stream = camera
        self._by_size: dict[tuple[int, int], StreamCamera] = {camera.camera.size_wh: camera}

    def reset(self) -> None:
        """Forget every size's fit (a new run)."""
        for camera in self._by_size.values():
            camera.reset()

    def for_frame(self, depth: np.ndarray, *, smoothed: bool,
                  scene_cut: bool = False) -> PinholeCamera:
        """The camera for a frame of ``depth``'s size (see ``StreamCamera.for_frame``)."""
        size = (int(depth.shape[1]), int(depth.shape[0]))
        camera = self._by_size.get(size)
        if camera is None:
            camera = self._by_size[size] = self._scaled(*size)
        return camera.for_frame(depth, smoothed=smoothed, scene_cut=scene_cut)

    def _scaled(self, width: int, height: int) -> StreamCamera:
        first = self.stream.camera
        sx, sy = width / first.width, height / first.height
        pinhole = PinholeCamera(width, height, first.fx * sx, first.fy * sy,
                                min(width - 1.0, (first.cx + 0.5) * sx - 0.5),
                                min(height - 1.0, (first.cy + 0.5) * sy - 0.5))
        known = [(_scaled_pixel(row, sy, height), _scaled_pixel(col, sx, width), metres)
                 for row, col, metres in self.stream.known]
        return StreamCamera(pinhole, known, self.stream.warnings)


class Pipeline:
    """Three threads (capture, inference, render) from a source through the model to sinks.

    The estimator comes built (weights are checked before any thread starts) and is
    used only on the inference thread. Sinks are opened, written and closed on the
    render thread; the source is read and closed on the capture thread.

    Args:
        source: a :class:`stream.sources.capture.Source`; ``source.info.live`` picks the queues.
        estimator: the network (:func:`stream.engines.estimator.create_estimator`).
        sinks: where the DepthFrames go (video file, window, raw depth, a QueueSink...).
        settings: what to do; the pipeline reads ``smooth``, ``duration_s`` and
            ``queue_size``.
        stop_event: a shared cancellation event (a server's cancel button); one is made
            if not given.
        smoother: the smoothing stage; default :func:`make_smoother` of ``settings``.
        colour_range: the colour range; default a :class:`stream.depth.colormap.DisplayRange`
            (robust percentiles, eased over time).
        progress: ``progress(done, total)`` on the render thread after each frame.
        close_estimator: close the estimator when the inference thread ends.
        camera: the stream's camera model; each DepthFrame gets it (with its metric fit),
            scaled to the frame's own size (:class:`SizedCamera`).

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
        camera: StreamCamera | None = None,
    ) -> None:
        self.source = source
        self.estimator = estimator
        self.sinks = list(sinks)
        self.settings = settings or StreamSettings()
        self.stop_event = stop_event or threading.Event()
        self.live = source.info.live
        policy = DropPolicy.LATEST if self.live else DropPolicy.BLOCK
        # Frames (BGR) and DepthFrames (BGR, depth, network depth) of large videos hold
        # hundreds of megabytes each: the queues are bounded in bytes as well as frames.
        pixels = source.info.width * source.info.height
        network_depth = any(getattr(sink, "needs_network_depth", False) for sink in self.sinks)
        self._frames: FrameQueue[Frame] = FrameQueue(
            policy, _frames_within(self.settings.queue_size, pixels * 3))
        self._depths: FrameQueue[DepthFrame] = FrameQueue(
            policy, _frames_within(self.settings.queue_size,
                                   pixels * (11 if network_depth else 7)))
        kind = depth_kind(estimator)
        self.depth_stage = DepthStage(
            estimator, smoother if smoother is not None else make_smoother(self.settings, kind),
            colour_range or make_colour_range(self.settings, kind), live=self.live,
            close_estimator=close_estimator,
            camera=SizedCamera(camera) if isinstance(camera, StreamCamera) else camera,
            keep_network_depth=network_depth,
            one_at_a_time=pixels > ONE_AT_A_TIME_PIXELS)
        self._progress = progress
        self._tally = Tally()
        self._threads: list[threading.Thread] = []
        self._error: tuple[str, BaseException] | None = None
        self._notes: list[str] = []  # what aborted sinks kept, added to the error's line
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
                thread.join(POLL_S if remaining is None else min(POLL_S, remaining))
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            raise PipelineError(f"pipeline did not stop within {timeout} s ({', '.join(alive)})")
        if self._error is not None:
            name, exc = self._error
            notes = "".join(f"; {note}" for note in self._notes)
            if isinstance(exc, StreamError):
                if notes and not str(exc).endswith(notes):
                    exc.args = (f"{exc}{notes}",)  # the same error (its type), one line
                raise exc
            message = " ".join(str(exc).split())
            raise PipelineError(f"{name} thread failed: {type(exc).__name__}: "
                                f"{message}{notes}") from exc
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

    @property
    def dropped(self) -> int:
        """Frames dropped so far by the latest-wins queues (live input)."""
        return self._frames.dropped + self._depths.dropped

    def stats(self) -> RunStats:
        """A snapshot of the counters (final once :meth:`join` has returned)."""
        end = self._finished or time.monotonic()
        elapsed = end - self._started if self._started is not None else 0.0
        interrupted = (self._started is not None and self.stop_event.is_set()
                       and not self._ended)
        return self._tally.to_stats(self.dropped, elapsed, interrupted,
                                    tuple(self.source.warnings))

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
            # Decode only when the frame has somewhere to go: a decoded frame waiting
            # for room is one more picture in memory.
            while self._frames.wait_for_room(stop) and not stop.is_set():
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

    def _infer(self) -> None:
        self.depth_stage.run(self._frames, self._depths, self.stop_event, self._tally)

    def _render(self) -> None:
        try:
            self._render_frames()
        except BaseException as exc:  # noqa: BLE001 - kept before the sinks' close errors
            self._fail("render", exc)
        finally:
            for sink in self.sinks:
                try:
                    self._close_sink(sink)
                except BaseException as exc:  # noqa: BLE001
                    self._fail("render", exc)
            self._finished = time.monotonic()

    def _close_sink(self, sink: Sink) -> None:
        """Close ``sink``; after a failure abort it instead, where it can be aborted."""
        abort = getattr(sink, "abort", None)
        error = self._error
        if error is None or abort is None:
            sink.close()
            return
        note = abort(error[1])
        if note:
            self._notes.append(note)

    def _render_frames(self) -> None:
        stop, tally = self.stop_event, self._tally
        context = SinkContext(self.source.info, stop, lambda: self.dropped,
                              kind=self.depth_stage.kind)
        for sink in self.sinks:
            sink.open(context)
        total = None if self.live else self.source.info.frames
        while (frame := take(self._depths, stop)) is not None:
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
