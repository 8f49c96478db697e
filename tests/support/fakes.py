"""Test doubles: a cheap stand-in for the network (no threads, no files).

For tests about the pipeline, sinks and front ends rather than the model::

    from support.fakes import cheap_estimator

    estimator = cheap_estimator(delay_s=0.01)
"""

from __future__ import annotations

import time

import cv2
import numpy as np

from stream.engines.base import Backend
from stream.engines.estimator import DepthEstimator
from stream.models.registry import DAV2_METRIC_INDOOR_SPEC, DAV2_SMALL_SPEC
from stream.models.spec import ModelSpec

__all__ = ["CheapBackend", "MetricRampBackend", "ShapeRecorder", "cheap_estimator",
           "metric_estimator", "ramp_m"]


class CheapBackend(Backend):
    """TEST DOUBLE, not the network: a blur of the input's channel mean, plus a fixed delay.

    For tests about the pipeline (memory, latency, drops, threads) rather than the
    model: it runs in about a millisecond (plus ``delay_s``, slept, so it costs no CPU)
    and its output still depends on the picture. ``fail_at`` raises on that call, to
    test how a failing inference thread stops the others.
    """

    name = "cheap-test-double"

    def __init__(self, delay_s: float = 0.0, fail_at: int | None = None) -> None:
        self.delay_s = delay_s
        self.fail_at = fail_at
        self.calls = 0

    def infer(self, x: np.ndarray) -> np.ndarray:  # noqa: D102
        self.calls += 1
        if self.fail_at is not None and self.calls > self.fail_at:
            raise RuntimeError(f"cheap backend failed on call {self.calls} (as asked)")
        if self.delay_s:
            time.sleep(self.delay_s)
        mean = x[0].mean(axis=0).astype(np.float32)
        return cv2.GaussianBlur(mean, (9, 9), 0) + np.float32(3.0)


class ShapeRecorder(CheapBackend):
    """TEST DOUBLE: :class:`CheapBackend` as another model, recording each input's size.

    The model is Depth Anything V2 Small unless ``spec`` says otherwise; each input's
    ``(h, w)`` goes to :attr:`shapes`.
    """

    def __init__(self, spec: ModelSpec = DAV2_SMALL_SPEC) -> None:
        super().__init__()
        self.spec = spec
        self.shapes: list[tuple[int, ...]] = []

    def infer(self, x: np.ndarray) -> np.ndarray:  # noqa: D102
        self.shapes.append(x.shape[2:])
        return super().infer(x)


def cheap_estimator(delay_s: float = 0.0, fail_at: int | None = None) -> DepthEstimator:
    """A :class:`DepthEstimator` on :class:`CheapBackend` (a test double)."""
    return DepthEstimator(CheapBackend(delay_s, fail_at))


class MetricRampBackend(Backend):
    """TEST DOUBLE of a metric model: every frame's depth is a known ramp in metres.

    Depth grows linearly from ``near_m`` at the left edge to ``far_m`` at the right, the
    same in every row and frame. A bilinear resize with aligned corners (the metric
    models' output resize) keeps a linear ramp exact, so at the picture's size pixel
    column ``c`` of ``W`` holds ``near_m + (far_m - near_m) * c / (W - 1)`` metres.
    """

    name = "metric-ramp-test-double"
    spec = DAV2_METRIC_INDOOR_SPEC

    def __init__(self, near_m: float = 1.0, far_m: float = 5.0) -> None:
        self.near_m, self.far_m = near_m, far_m

    def infer(self, x: np.ndarray) -> np.ndarray:  # noqa: D102
        h, w = x.shape[2:]
        ramp = np.linspace(self.near_m, self.far_m, w, dtype=np.float32)
        return np.repeat(ramp[None, :], h, axis=0)


def metric_estimator(near_m: float = 1.0, far_m: float = 5.0) -> DepthEstimator:
    """A :class:`DepthEstimator` on :class:`MetricRampBackend` (a test double)."""
    return DepthEstimator(MetricRampBackend(near_m, far_m))


def ramp_m(width: int, near_m: float = 1.0, far_m: float = 5.0) -> np.ndarray:
    """The metres :class:`MetricRampBackend` gives each pixel column of a ``width`` picture."""
    return near_m + (far_m - near_m) * np.arange(width, dtype=np.float64) / (width - 1)
