"""Depth stage: the inference thread's loop (network, smoother, colour range -> DepthFrame).

Runs on the thread :class:`stream.runtime.pipeline.Pipeline` gives it; starts no threads itself,
touches no files. It takes :class:`~stream.core.records.Frame` s from one queue and puts
:class:`~stream.core.records.DepthFrame` s on the next. Live input runs one frame at a time
(the newest, as soon as the network is free; where the backend runs in the background,
the next frame starts before the finished one is smoothed); file input streams through
:meth:`~stream.engines.estimator.DepthEstimator.predict_many`, so a backend may keep several
frames in flight.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

import numpy as np

from stream.core.errors import ConfigError
from stream.core.records import DepthFrame, DepthKind, Frame
from stream.core.settings import RANGE_M_NEEDS_METRIC, StreamSettings
from stream.core.stats import Tally
from stream.depth.colormap import DisplayRange, FixedRange
from stream.depth.smoothing import TemporalSmoother
from stream.engines.estimator import DepthEstimator, Pending
from stream.runtime.queues import END, FrameQueue, take

if TYPE_CHECKING:
    from stream.geometry.camera import StreamCamera

__all__ = ["Smoother", "ColourRange", "depth_kind", "make_colour_range", "make_smoother",
           "DepthStage"]


class Smoother(Protocol):
    """The smoothing stage between network and render (:mod:`stream.depth.smoothing`).

    A smoother may also have a ``scene_cut`` attribute: when it is True after an
    update (the smoother started afresh), the colour range is reset too.
    """

    def update(self, depth: np.ndarray, image_bgr: np.ndarray, *,
               consume: bool = False) -> np.ndarray:
        """The depth to show for a frame, given the network's ``depth`` and the picture.

        ``consume``: the caller gives ``depth`` up, so the result may be written into it.
        """

    def reset(self) -> None:
        """Forget the past (a cut, a new input)."""


class ColourRange(Protocol):
    """Where the colours of a stream's depth start and end, frame after frame."""

    def update(self, depth: np.ndarray) -> tuple[float, float]:
        """``(lo, hi)`` to colour ``depth`` with."""

    def reset(self) -> None:
        """Forget the past."""


def _rgb_view(bgr: np.ndarray) -> np.ndarray:
    """The RGB picture of a BGR frame as a view, not a copy.

    The network input is made from it without a full-size copy.
    """
    return bgr[:, :, ::-1]


def _waiting(frames: FrameQueue[Frame], stop: threading.Event) -> Frame | None:
    """The frame waiting in ``frames`` now, without blocking; ``None`` if none (or stopped)."""
    if stop.is_set():
        return None
    try:
        item = frames.get(timeout=0)
    except queue.Empty:
        return None
    return None if item is END else item  # END stays: the next ``take`` sees it too


def depth_kind(estimator: object) -> DepthKind:
    """What ``estimator``'s network outputs (its model spec's kind; relative if it has none)."""
    spec = getattr(estimator, "spec", None)
    return getattr(spec, "output", DepthKind.RELATIVE)


def make_colour_range(settings: StreamSettings, kind: DepthKind) -> ColourRange:
    """``--range-m``'s fixed range for metres, else the running percentiles.

    Raises:
        ConfigError: ``--range-m`` for a network whose depth is not in metres.
    """
    if settings.render.range_m is None:
        return DisplayRange()
    if kind is not DepthKind.METRIC:
        raise ConfigError(RANGE_M_NEEDS_METRIC)
    return FixedRange(*settings.render.range_m)


def make_smoother(settings: StreamSettings,
                  kind: DepthKind = DepthKind.RELATIVE) -> Smoother | None:
    """The smoothing stage ``settings`` ask for; ``None`` when ``smooth`` is 0 (off).

    Relative depth is aligned frame to frame; metres are blended as they are.
    """
    if settings.smooth == 0:
        return None
    return TemporalSmoother(settings.smooth, align=kind is DepthKind.RELATIVE)


class DepthStage:
    """Frames in, DepthFrames out: the network, then the smoother and the colour range.

    Args:
        estimator: the network; used only on the thread that calls :meth:`run`.
        smoother: the smoothing stage, or ``None`` for the network's own depth.
        colour_range: the colour range (default a :class:`DisplayRange`).
        live: one frame at a time (live) or a stream with frames in flight (files).
        close_estimator: close the estimator when :meth:`run` ends.
        camera: the stream's camera (:class:`stream.geometry.camera.StreamCamera`); each
            DepthFrame gets its model, with the metric fit when known distances are set.
        keep_network_depth: give smoothed DepthFrames the network's own depth as
            ``raw_depth`` (a full-size float map each); off, ``raw_depth`` stays ``None``
            and the smoother writes its result into the network's map.
        one_at_a_time: run file input one frame at a time too (for large frames: each
            frame in flight holds its full-size picture).
    """

    def __init__(self, estimator: DepthEstimator, smoother: Smoother | None,
                 colour_range: ColourRange | None = None, live: bool = False,
                 close_estimator: bool = False, camera: StreamCamera | None = None,
                 keep_network_depth: bool = True, one_at_a_time: bool = False) -> None:
        self.keep_network_depth = keep_network_depth
        self.one_at_a_time = one_at_a_time
        self.estimator = estimator
        self.kind = depth_kind(estimator)
        self.camera = camera
        self.smoother = smoother
        self.colour_range = colour_range or DisplayRange()
        self.live = live
        self.close_estimator = close_estimator

    def run(self, frames: FrameQueue[Frame], depths: FrameQueue[DepthFrame],
            stop: threading.Event, tally: Tally) -> None:
        """Turn every frame of ``frames`` into a DepthFrame on ``depths`` until the end."""
        if self.smoother is not None:
            self.smoother.reset()  # a new run: nothing from an earlier one carries over
        self.colour_range.reset()
        if self.camera is not None:
            self.camera.reset()
        estimates = self._estimates(frames, depths, stop)
        try:
            for frame, depth, inference_ms in estimates:
                start = time.perf_counter()
                depth_frame = self._depth_frame(frame, depth, inference_ms)
                with tally.lock:
                    tally.inferred += 1
                    tally.inference_ms += inference_ms
                    tally.smoothing_ms += (time.perf_counter() - start) * 1000.0
                if not depths.put(depth_frame, stop):
                    break
        finally:
            estimates.close()
            if self.close_estimator:
                self.estimator.close()

    def _depth_frame(self, frame: Frame, depth: np.ndarray, inference_ms: float) -> DepthFrame:
        """Smooth ``depth``, pick its colour range, and make the record."""
        raw_depth = None
        cut = False
        if self.smoother is not None:
            network = np.asarray(depth, dtype=np.float32)
            raw_depth = network if self.keep_network_depth else None
            # Nobody reads the network's map when it is not kept: the result may go into it.
            depth = self.smoother.update(network, frame.image, consume=raw_depth is None)
            cut = bool(getattr(self.smoother, "scene_cut", False))
            if cut:
                self.colour_range.reset()  # a new scale: the old range means nothing
        lo, hi = self.colour_range.update(depth)
        depth = np.asarray(depth, dtype=np.float32)
        camera = None
        if self.camera is not None:
            camera = self.camera.for_frame(depth, smoothed=self.smoother is not None,
                                           scene_cut=cut)
        return DepthFrame(
            index=frame.index, timestamp=frame.timestamp, image=frame.image,
            depth=depth, inference_ms=inference_ms,
            lo=float(lo), hi=float(hi), smoothed=self.smoother is not None, pts=frame.pts,
            captured=frame.captured, raw_depth=raw_depth, camera=camera, kind=self.kind,
        )

    def _overlapped(self, frames: FrameQueue[Frame],
                    stop: threading.Event) -> Iterator[tuple[Frame, np.ndarray, float]]:
        """Live, one frame in flight: the next frame starts before a result is handed on.

        So the consumer smooths one frame while the network runs on the next. When no
        frame waits, the result goes first and the loop then waits for a frame. A request
        in flight is always waited for, also when the generator is closed.
        """
        pending: tuple[Frame, Pending] | None = None
        try:
            frame = take(frames, stop)
            if frame is not None:
                pending = frame, self.estimator.submit(_rgb_view(frame.image))
            while pending is not None:
                frame, job = pending
                depth, ms = job.result()
                pending = None
                if (newer := _waiting(frames, stop)) is not None:
                    pending = newer, self.estimator.submit(_rgb_view(newer.image))
                yield frame, depth, ms
                if pending is None and (newer := take(frames, stop)) is not None:
                    pending = newer, self.estimator.submit(_rgb_view(newer.image))
        finally:
            if pending is not None:
                # Stopped with a frame in flight: let its request end before leaving; its
                # result (or failure) no longer matters.
                with contextlib.suppress(Exception):
                    pending[1].result()

    def _estimates(self, frames: FrameQueue[Frame], depths: FrameQueue[DepthFrame],
                   stop: threading.Event) -> Iterator[tuple[Frame, np.ndarray, float]]:
        """``(frame, depth, inference_ms)`` in order, for the frames the capture queued."""
        if self.live and self.estimator.submits_in_background:
            yield from self._overlapped(frames, stop)
            return
        if self.live or self.one_at_a_time:
            # A file frame is taken only once its DepthFrame will have somewhere to go: a
            # finished one waiting for room would be one more large frame in memory
            # (live queues always have room: the newest frame replaces the last).
            while depths.wait_for_room(stop) and (frame := take(frames, stop)) is not None:
                depth, ms = self.estimator.predict(_rgb_view(frame.image))
                yield frame, depth, ms
            return
        # The time spent waiting for input is not the network's.
        waited = [0.0]

        def inputs() -> Iterator[tuple[Frame, np.ndarray]]:
            while True:
                start = time.perf_counter()
                frame = take(frames, stop)
                waited[0] += time.perf_counter() - start
                if frame is None:
                    return
                yield frame, _rgb_view(frame.image)

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
