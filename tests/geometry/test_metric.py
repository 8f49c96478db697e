"""Tests for stream.geometry.metric: scale-and-shift fit of inverse depth to known distances."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stream.core.errors import ConfigError
from stream.geometry.metric import DEFAULT_MAX_RANGE_M, MetricScale, fit_metric, fit_metric_scale


def _scene(scale: float = 3.0, shift: float = 0.7, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A metres map and the relative inverse depth ``scale / metres + shift`` a net might give."""
    rng = np.random.default_rng(seed)
    metres = rng.uniform(0.5, 10.0, size=(24, 32))
    depth = (scale / metres + shift).astype(np.float32)
    return metres, depth


@pytest.mark.parametrize("points", [
    [(0, 0), (23, 31)],
    [(1, 2), (5, 30), (12, 7), (20, 20), (-1, -1)],
])
@pytest.mark.parametrize("scale, shift", [(3.0, 0.7), (0.05, -0.002), (1000.0, 25.0)])
def test_exact_affine_inverse_depth_gives_metres_everywhere(points, scale, shift) -> None:
    """Any affine inverse depth plus its true distances at the points gives metres everywhere."""
    metres, depth = _scene(scale, shift)
    samples = [(r, c, metres[r, c]) for r, c in points]
    out = fit_metric(depth, samples)
    assert out.dtype == np.float32 and out.shape == depth.shape
    # float32 depth limits the precision, not the fit.
    np.testing.assert_allclose(out, metres, rtol=2e-4)


def test_fitted_scale_and_shift_and_error() -> None:
    """The fitted scale and shift are the inverse of the scene's affine map; exact fit, no error."""
    metres, depth = _scene(2.0, 0.5)
    fit = fit_metric_scale(depth, [(0, 0, metres[0, 0]), (3, 4, metres[3, 4])])
    # inverse metres = (depth - 0.5) / 2
    assert fit.scale == pytest.approx(0.5, rel=1e-4)
    assert fit.shift == pytest.approx(-0.25, rel=1e-3)
    assert fit.points == 2
    assert fit.rms_rel_error == pytest.approx(0.0, abs=1e-5)


def test_rms_error_reports_inconsistent_points() -> None:
    """A point whose distance disagrees with the others shows in ``rms_rel_error``."""
    metres, depth = _scene()
    good = [(r, c, metres[r, c]) for r, c in [(0, 0), (5, 5), (10, 20), (20, 3)]]
    fit = fit_metric_scale(depth, good)
    bad = good[:-1] + [(20, 3, metres[20, 3] * 1.5)]
    worse = fit_metric_scale(depth, bad)
    assert fit.rms_rel_error < 1e-4
    assert worse.rms_rel_error > 0.05


def test_scale_fitted_on_one_frame_applies_to_another_of_the_same_scale() -> None:
    """A fit reused on a frame in the same scale (a smoothed stream) gives its metres."""
    metres_a, depth_a = _scene(seed=1)
    metres_b, depth_b = _scene(seed=2)
    fit = fit_metric_scale(depth_a, [(0, 0, metres_a[0, 0]), (9, 9, metres_a[9, 9])])
    np.testing.assert_allclose(fit.to_metres(depth_b), metres_b, rtol=2e-4)


def test_far_and_beyond_infinity_pixels_clip_at_max_range() -> None:
    """Far, zero, negative and NaN inverse depth come back as the far limit."""
    depth = np.array([[4.0, 2.0, 1.0, 0.5, 0.0, -3.0, np.nan]], np.float32)
    # depth = 1 / metres exactly at the first two points: s = 1, b = 0.
    samples = [(0, 0, 0.25), (0, 1, 0.5)]
    out = fit_metric(depth, samples, max_range_m=1.5)
    np.testing.assert_allclose(out, [[0.25, 0.5, 1.0, 1.5, 1.5, 1.5, 1.5]], rtol=1e-6)
    default = fit_metric(depth, samples)
    assert default[0, 3] == pytest.approx(2.0)
    assert np.all(default[0, 4:] == np.float32(DEFAULT_MAX_RANGE_M))


def test_negative_indices_count_from_the_end() -> None:
    """Rows and columns index like numpy."""
    metres, depth = _scene()
    a = fit_metric(depth, [(-1, -1, metres[-1, -1]), (0, 0, metres[0, 0])])
    b = fit_metric(depth, [(23, 31, metres[23, 31]), (0, 0, metres[0, 0])])
    np.testing.assert_array_equal(a, b)


_DEPTH = np.array([[1.0, 2.0, 3.0], [4.0, np.nan, 6.0]], np.float32)


@pytest.mark.parametrize("depth, samples, match", [
    (_DEPTH, [], "at least 2 points"),
    (_DEPTH, [(0, 0, 1.0)], "at least 2 points"),
    (_DEPTH, [(0, 0, 1.0), (2, 0, 2.0)], "outside"),
    (_DEPTH, [(0, 0, 1.0), (0, 3, 2.0)], "outside"),
    (_DEPTH, [(0, 0, 1.0), (0, 1, 0.0)], "positive number of metres"),
    (_DEPTH, [(0, 0, 1.0), (0, 1, -2.0)], "positive number of metres"),
    (_DEPTH, [(0, 0, 1.0), (0, 1, math.nan)], "positive number of metres"),
    (_DEPTH, [(0, 0, 1.0), (0, 1)], "expected \\(row, col, metres\\)"),
    (_DEPTH, [(0, 0, 1.0), (1, 1, 2.0)], "not finite"),
    # both points at the same relative depth: no scale can be fixed
    (_DEPTH, [(0, 0, 1.0), (0, 0, 2.0)], "same relative depth"),
    # the point with the larger inverse depth is said to be farther
    (_DEPTH, [(0, 0, 1.0), (0, 2, 3.0)], "contradict"),
    # different depths, equal distances
    (_DEPTH, [(0, 0, 2.0), (0, 2, 2.0)], "contradict"),
    (np.zeros((2, 2, 3), np.float32), [(0, 0, 1.0), (1, 1, 2.0)], "\\[H, W\\]"),
])
def test_bad_input_is_a_config_error(depth, samples, match) -> None:
    """Each kind of unusable input is a ConfigError with a message that names it."""
    with pytest.raises(ConfigError, match=match):
        fit_metric(depth, samples)


def test_fit_that_puts_a_known_point_behind_the_camera_is_an_error() -> None:
    """A fit with a non-positive inverse depth at a known point is refused."""
    # Least squares on these points gives a negative inverse depth at the first one.
    depth = np.array([[0.0, 0.1, 10.0]], np.float32)
    samples = [(0, 0, 100.0), (0, 1, 100.0), (0, 2, 0.1)]
    with pytest.raises(ConfigError, match="in front of the camera"):
        fit_metric(depth, samples)


@pytest.mark.parametrize("max_range_m", [0.0, -1.0, math.inf, math.nan, "far"])
def test_bad_max_range_is_a_config_error(max_range_m) -> None:
    """The far limit must be a positive finite number."""
    with pytest.raises(ConfigError, match="max_range_m"):
        fit_metric(_DEPTH, [(0, 0, 1.0), (0, 2, 0.5)], max_range_m=max_range_m)


def test_config_error_is_a_value_error() -> None:
    """Library users can catch the errors as ValueError."""
    with pytest.raises(ValueError):
        fit_metric(_DEPTH, [(0, 0, 1.0)])


def test_metric_scale_rejects_non_positive_scale() -> None:
    """A MetricScale cannot be built with a scale that flips near and far."""
    with pytest.raises(ConfigError):
        MetricScale(scale=-1.0, shift=0.0, points=2, rms_rel_error=0.0)
