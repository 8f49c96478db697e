"""Inference: picture in, depth at the picture's size out (transform, backend, resize).

The one place that chains :mod:`stream.transforms` and a :class:`stream.backends.Backend`,
used alike by the ``image`` command, the pipeline's inference thread, the Python API and
the web server.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

import numpy as np

from .backends import Backend
from .transforms import preprocess_array, resize_depth

__all__ = ["DepthEstimator", "create_estimator"]

T = TypeVar("T")


class DepthEstimator:
    """Run the network on RGB uint8 pictures; return float32 depth at each picture's size.

    Example:
        >>> est = DepthEstimator(create_backend("auto", load_state_dict()))  # doctest: +SKIP
        >>> depth, ms = est.predict(rgb)  # doctest: +SKIP
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def predict_net(self, rgb: np.ndarray) -> np.ndarray:
        """Network-size output float32 ``[h, w]`` for an RGB uint8 picture."""
        return self.backend.infer(preprocess_array(rgb))

    def predict(self, rgb: np.ndarray) -> tuple[np.ndarray, float]:
        """``(depth, inference_ms)``: float32 ``[H, W]`` depth and the network's time."""
        x = preprocess_array(rgb)
        start = time.perf_counter()
        net = self.backend.infer(x)
        ms = (time.perf_counter() - start) * 1000.0
        return resize_depth(net, rgb.shape[:2]), ms

    def predict_many(self, items: Iterable[tuple[T, np.ndarray]]) -> Iterator[tuple[T, np.ndarray]]:
        """Yield ``(tag, depth)`` for ``(tag, rgb)`` in order, letting the backend pipeline."""
        sizes: dict[int, tuple[int, int]] = {}

        def inputs() -> Iterator[tuple[tuple[int, T], np.ndarray]]:
            for n, (tag, rgb) in enumerate(items):
                sizes[n] = rgb.shape[:2]
                yield (n, tag), preprocess_array(rgb)

        for (n, tag), net in self.backend.imap(inputs()):
            yield tag, resize_depth(net, sizes.pop(n))

    def close(self) -> None:
        """Close the backend."""
        self.backend.close()


def create_estimator(
    weights: str | None = None,
    backend: str = "auto",
    device: str = "cpu",
    live: bool = False,
    progress: bool = True,
) -> DepthEstimator:
    """Load checked weights and build a :class:`DepthEstimator` on the chosen backend.

    Raises:
        WeightsError: no usable checkpoint (one-line message says what to do).
        ConfigError: unknown or unavailable backend/device.
    """
    from .backends import create_backend
    from .weights import load_state_dict

    state = load_state_dict(weights, progress=progress)
    return DepthEstimator(create_backend(backend, state, device=device, live=live))
