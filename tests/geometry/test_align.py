"""Tests for stream/align.py: the least-squares scale and shift on arrays with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from stream.geometry.align import fit_scale_shift


def _pred(seed: int = 0, shape: tuple[int, ...] = (24, 32)) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.1, 3.0, size=shape)


@pytest.mark.parametrize(
    "scale, shift",
    [(1.0, 0.0), (2.5, -1.0), (-0.5, 3.0), (1e-3, 100.0), (400.0, -7.25)],
)
def test_recovers_a_known_scale_and_shift_exactly(scale, shift):
    pred = _pred()
    s, b = fit_scale_shift(pred, scale * pred + shift)
    assert (s, b) == pytest.approx((scale, shift), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("shape", [(100,), (8, 12), (2, 8, 12)])
def test_any_shape_fits_as_its_flattened_values(shape):
    pred = _pred(1, shape)
    target = 0.75 * pred + 0.2 + np.random.default_rng(2).normal(0, 0.05, size=shape)
    assert fit_scale_shift(pred, target) == pytest.approx(fit_scale_shift(pred.ravel(),
                                                                           target.ravel()))


def test_float32_inputs_are_fitted_in_float64():
    pred = _pred().astype(np.float32)
    target = (3.0 * pred.astype(np.float64) + 0.5).astype(np.float32)
    s, b = fit_scale_shift(pred, target)
    assert type(s) is float and type(b) is float
    assert (s, b) == pytest.approx((3.0, 0.5), rel=1e-6)


def test_noisy_target_matches_numpys_least_squares():
    pred = _pred(3)
    target = -1.3 * pred + 0.4 + np.random.default_rng(4).normal(0, 0.3, size=pred.shape)
    design = np.stack([pred.ravel(), np.ones(pred.size)], axis=1)
    expected, *_ = np.linalg.lstsq(design, target.ravel(), rcond=None)
    assert fit_scale_shift(pred, target) == pytest.approx(tuple(expected), rel=1e-9)


def test_mask_leaves_out_the_pixels_outside_it():
    pred = _pred(5)
    target = 2.0 * pred - 1.0
    mask = np.zeros(pred.shape, bool)
    mask[:, : pred.shape[1] // 2] = True
    target[~mask] = 1e6  # garbage where the mask is off
    assert fit_scale_shift(pred, target, mask=mask) == pytest.approx((2.0, -1.0), rel=1e-9)
    assert fit_scale_shift(pred, target)[0] != pytest.approx(2.0, rel=0.1)


def test_zero_weights_act_as_a_mask():
    pred = _pred(6)
    target = 0.5 * pred + 2.0
    weights = np.ones(pred.shape)
    weights[::2] = 0.0
    target[::2] = -1e3
    assert fit_scale_shift(pred, target, weights=weights) == pytest.approx((0.5, 2.0), rel=1e-9)


def test_integer_weights_equal_repeating_the_pixels():
    rng = np.random.default_rng(7)
    pred = rng.uniform(0, 1, 50)
    target = 1.7 * pred + rng.normal(0, 0.2, 50)
    counts = rng.integers(1, 5, 50)
    repeated = fit_scale_shift(np.repeat(pred, counts), np.repeat(target, counts))
    weighted = fit_scale_shift(pred, target, weights=counts.astype(float))
    assert weighted == pytest.approx(repeated, rel=1e-9)
    assert weighted != pytest.approx(fit_scale_shift(pred, target), rel=1e-3)


def test_non_finite_pixels_are_ignored():
    pred = _pred(8)
    target = 4.0 * pred + 1.0
    pred[0, :5] = np.nan
    target[1, :5] = np.inf
    target[2, :5] = -np.inf
    pred[3, :5] = np.inf
    assert fit_scale_shift(pred, target) == pytest.approx((4.0, 1.0), rel=1e-9)


def test_constant_prediction_gives_unit_scale_and_the_mean_difference():
    pred = np.full((10, 10), 2.0)
    target = np.random.default_rng(9).uniform(0, 1, (10, 10))
    assert fit_scale_shift(pred, target) == pytest.approx((1.0, target.mean() - 2.0))


def test_constant_prediction_counts_only_the_kept_pixels():
    pred = np.full(6, 5.0)
    target = np.array([1.0, 2.0, 3.0, 100.0, 100.0, 100.0])
    weights = np.array([1.0, 1.0, 2.0, 0.0, 0.0, 0.0])
    assert fit_scale_shift(pred, target, weights=weights) == pytest.approx((1.0, 2.25 - 5.0))


@pytest.mark.parametrize("case", ["mask all off", "weights all zero", "all nan", "empty"])
def test_nothing_to_fit_gives_the_identity(case):
    pred, target = _pred(10), _pred(11)
    mask = weights = None
    if case == "mask all off":
        mask = np.zeros(pred.shape, bool)
    elif case == "weights all zero":
        weights = np.zeros(pred.shape)
    elif case == "all nan":
        target = np.full(pred.shape, np.nan)
    else:
        pred, target = np.zeros(0), np.zeros(0)
    assert fit_scale_shift(pred, target, mask=mask, weights=weights) == (1.0, 0.0)
