"""Metric: turn relative inverse depth into metres from a few points of known distance.

The network predicts *relative inverse depth*: larger = nearer, in an unknown scale and
shift that may differ from frame to frame (raw) or stay fixed across a stream (smoothed).
It is not metres. If you know the distance to two or more points of a frame (a tape
measure, a depth sensor, a fiducial of known size), a least-squares fit of
``s * depth + b ~= 1 / metres`` at those points gives the scale and shift, and
``1 / (s * depth + b)`` is then an estimate of metric depth for the whole frame.

Honest limits: the estimate is only as good as the network's relative depth (errors of
a noticeable fraction of the distance are common) and the points you give; points spread
over near and far give a much better fit than points at about the same distance. Pixels
the fit puts at or beyond ``max_range_m`` (sky, far background) come back as
``max_range_m``.

Starts no threads, touches no files.

Example:
    >>> metres = fit_metric(frame.depth, [(240, 320, 1.5), (400, 100, 0.8)])  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stream.core.errors import ConfigError
from stream.geometry.align import fit_scale_shift

__all__ = ["DEFAULT_MAX_RANGE_M", "MetricScale", "fit_metric", "fit_metric_scale"]

#: Default far limit of :func:`fit_metric`'s output, in metres.
DEFAULT_MAX_RANGE_M = 100.0

# Sampled depths whose spread is below this fraction of their magnitude cannot fix a
# scale: the points are (as far as the network can tell) at the same distance.
_MIN_SPREAD = 1e-6


@dataclass(frozen=True)
class MetricScale:
    """A fitted map from relative inverse depth to metres: ``1 / (scale * depth + shift)``.

    Attributes:
        scale: ``s`` in ``s * depth + shift ~= 1 / metres`` (positive).
        shift: ``b`` in 1 / metres.
        points: number of known points the fit used.
        rms_rel_error: root mean square of ``(fitted - known) / known`` metres at the
            points (0 for an exact fit, always 0 for two points).
    """

    scale: float
    shift: float
    points: int
    rms_rel_error: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.scale) and self.scale > 0 and math.isfinite(self.shift)):
            raise ConfigError(f"MetricScale needs a finite positive scale and a finite shift, "
                              f"got scale={self.scale}, shift={self.shift}")

    def to_metres(self, depth: np.ndarray,
                  max_range_m: float = DEFAULT_MAX_RANGE_M) -> np.ndarray:
        """Metres, float32, same shape as ``depth``; at most ``max_range_m``.

        A pixel whose fitted inverse depth is at or below ``1 / max_range_m`` (including
        zero and negative values: "beyond infinity" for the fit) and a non-finite pixel
        come back as ``max_range_m``.

        Raises:
            ConfigError: ``max_range_m`` is not a positive finite number.
        """
        max_range_m = _check_max_range(max_range_m)
        inv = self.scale * np.asarray(depth, dtype=np.float64) + self.shift
        out = np.full(inv.shape, max_range_m, dtype=np.float64)
        near = np.isfinite(inv) & (inv > 1.0 / max_range_m)
        np.divide(1.0, inv, out=out, where=near)
        return out.astype(np.float32)


def fit_metric_scale(
    depth: np.ndarray,
    samples: Sequence[tuple[int, int, float]],
) -> MetricScale:
    """Fit scale and shift of inverse depth to points of known distance.

    Args:
        depth: float ``[H, W]`` relative inverse depth (a :class:`DepthFrame`'s ``depth``).
        samples: ``(row, col, metres)`` for two or more pixels whose distance from the
            camera you know. Rows and columns index ``depth``; negative ones count from the
            end, as numpy does.

    Returns:
        The fitted :class:`MetricScale`. Apply it to this frame, or to later frames of a
        smoothed stream (whose scale stays fixed until a scene cut).

    Raises:
        ConfigError: fewer than two points, a point outside the frame, a distance that is
            not a positive number, a non-finite depth at a point, points the network puts
            at the same relative depth, or points whose order contradicts the depth map
            (the nearer point has the smaller inverse depth), so no positive scale fits.
    """
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ConfigError(f"depth must be a [H, W] map, got shape {depth.shape}")
    points = list(samples)
    if len(points) < 2:
        raise ConfigError(f"fit_metric needs at least 2 points of known distance, "
                          f"got {len(points)}")
    pred = np.empty(len(points))
    metres = np.empty(len(points))
    height, width = depth.shape
    for n, point in enumerate(points):
        try:
            row, col, dist = point
            row, col, dist = int(row), int(col), float(dist)
        except (TypeError, ValueError):
            raise ConfigError(f"point {n}: expected (row, col, metres), got {point!r}") from None
        if not (-height <= row < height and -width <= col < width):
            raise ConfigError(f"point {n}: ({row}, {col}) is outside the {height}x{width} "
                              f"depth map")
        if not (math.isfinite(dist) and dist > 0):
            raise ConfigError(f"point {n}: distance must be a positive number of metres, "
                              f"got {dist}")
        pred[n] = float(depth[row, col])
        if not math.isfinite(pred[n]):
            raise ConfigError(f"point {n}: depth at ({row}, {col}) is not finite")
        metres[n] = dist
    spread = pred.max() - pred.min()
    if spread <= _MIN_SPREAD * max(1.0, float(np.abs(pred).max())):
        raise ConfigError("the known points have the same relative depth; give points at "
                          "clearly different distances")
    target = 1.0 / metres
    scale, shift = fit_scale_shift(pred, target)
    # A scale that moves the fitted inverse depth by (almost) nothing across the points
    # means equal distances for different depths: the points contradict the map.
    if not (math.isfinite(scale) and scale * spread > _MIN_SPREAD * float(target.max())):
        raise ConfigError("the known distances contradict the depth map (a nearer point has "
                          "a smaller inverse depth, or all points are equally far); check "
                          "the points' rows, columns and metres")
    fitted_inv = scale * pred + shift
    if np.any(fitted_inv <= 0):
        raise ConfigError("no fit puts every known point in front of the camera; check the "
                          "points or give more of them")
    rel = (1.0 / fitted_inv - metres) / metres
    return MetricScale(float(scale), float(shift), len(points),
                       float(np.sqrt(np.mean(rel * rel))))


def fit_metric(
    depth: np.ndarray,
    samples: Sequence[tuple[int, int, float]],
    max_range_m: float = DEFAULT_MAX_RANGE_M,
) -> np.ndarray:
    """Metric depth in metres from relative inverse depth and two or more known distances.

    Fits ``s * depth + b ~= 1 / metres`` at the given points (least squares) and returns
    ``1 / (s * depth + b)`` for every pixel.

    Args:
        depth: float ``[H, W]`` relative inverse depth (larger = nearer).
        samples: ``(row, col, metres)`` for at least two pixels of known distance.
        max_range_m: far limit; pixels the fit puts farther (or behind infinity) get it.

    Returns:
        float32 ``[H, W]`` metres, in ``(0, max_range_m]``.

    Raises:
        ConfigError: see :func:`fit_metric_scale`; also a ``max_range_m`` that is not
            positive.

    Example:
        >>> depth = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
        >>> fit_metric(depth, [(0, 0, 1.0), (1, 1, 0.25)])  # 1 / depth here
        array([[1.        , 0.5       ],
               [0.33333334, 0.25      ]], dtype=float32)
    """
    max_range_m = _check_max_range(max_range_m)
    return fit_metric_scale(depth, samples).to_metres(depth, max_range_m)


def _check_max_range(max_range_m: float) -> float:
    try:
        value = float(max_range_m)
    except (TypeError, ValueError):
        raise ConfigError(f"max_range_m must be a number, got {max_range_m!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"max_range_m must be a positive number of metres, got {max_range_m!r}")
    return value
