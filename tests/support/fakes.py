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

__all__ = ["CheapBackend", "cheap_estimator"]


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


def cheap_estimator(delay_s: float = 0.0, fail_at: int | None = None) -> DepthEstimator:
    """A :class:`DepthEstimator` on :class:`CheapBackend` (a test double)."""
    return DepthEstimator(CheapBackend(delay_s, fail_at))
