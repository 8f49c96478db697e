"""Statistics: what a run did (frame counts, time per stage, latency percentiles).

Starts no threads, touches no files. The pipeline's threads add to a :class:`Tally`
(memory bounded for any run length: latencies are kept as a uniform reservoir sample);
:meth:`Tally.to_stats` turns it into the frozen :class:`RunStats` users see.
"""

from __future__ import annotations

import random
import threading
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["RunStats", "Reservoir", "Tally"]


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
        inference_ms_mean: mean time from a picture to its depth at the picture's size
            (pre-processing, network, resize), live and files alike; for files, a
            backend with several frames in flight makes this the time per frame.
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


class Reservoir:
    """A uniform sample of at most ``capacity`` values (memory bounded for any run length)."""

    def __init__(self, capacity: int = 20_000, seed: int = 0) -> None:
        self.capacity = capacity
        self.values: list[float] = []
        self.seen = 0
        self._rng = random.Random(seed)

    def add(self, value: float) -> None:
        """Offer one value to the sample."""
        self.seen += 1
        if len(self.values) < self.capacity:
            self.values.append(value)
            return
        slot = self._rng.randrange(self.seen)
        if slot < self.capacity:
            self.values[slot] = value

    def percentile(self, q: float) -> float | None:
        """The ``q``-th percentile of the sample, ``None`` when empty."""
        return float(np.percentile(self.values, q)) if self.values else None


class Tally:
    """Counters the three threads update (each its own fields) and ``stats()`` reads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.read = self.inferred = self.written = 0
        self.capture_ms = self.inference_ms = self.smoothing_ms = self.render_ms = 0.0
        self.latency_ms = Reservoir()

    def to_stats(self, dropped: int, elapsed_s: float, interrupted: bool,
                 warnings: tuple[str, ...] = ()) -> RunStats:
        """A :class:`RunStats` snapshot of the counters."""
        with self.lock:
            read, inferred, written = self.read, self.inferred, self.written
            sums = (self.capture_ms, self.inference_ms, self.smoothing_ms, self.render_ms)
            p50, p95 = self.latency_ms.percentile(50), self.latency_ms.percentile(95)
        return RunStats(
            frames_read=read,
            frames_inferred=inferred,
            frames_written=written,
            frames_dropped=dropped,
            capture_ms_mean=sums[0] / read if read else 0.0,
            inference_ms_mean=sums[1] / inferred if inferred else 0.0,
            smoothing_ms_mean=sums[2] / inferred if inferred else 0.0,
            render_ms_mean=sums[3] / written if written else 0.0,
            latency_ms_p50=p50,
            latency_ms_p95=p95,
            elapsed_s=elapsed_s,
            fps=written / elapsed_s if elapsed_s > 0 else 0.0,
            interrupted=interrupted,
            warnings=warnings,
        )
