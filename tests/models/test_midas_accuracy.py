"""Tests for benchmarks/accuracy.py: alignment, AbsRel and delta1 on constructed cases."""

import accuracy  # benchmarks/accuracy.py; benchmarks/ is on pytest's pythonpath
import numpy as np
import pytest


def _gt_inv(seed=0, shape=(24, 32)):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.2, 2.0, size=shape)  # inverse depth of 0.5 m to 5 m


def test_perfect_prediction_scores_zero_and_one():
    """The ground truth itself: AbsRel 0, delta1 1, identity fit."""
    gt = _gt_inv()
    r = accuracy.evaluate(gt.copy(), gt)
    assert r["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    assert r["delta1"] == 1.0
    assert (r["scale"], r["shift"]) == pytest.approx((1.0, 0.0), abs=1e-12)
    assert r["pixels"] == gt.size


@pytest.mark.parametrize("scale, shift", [(3.7, -0.4), (0.01, 5.0), (250.0, 0.0)])
def test_affine_distortion_of_inverse_depth_is_undone(scale, shift):
    """``s * inv + b`` aligns back exactly, whatever s and b."""
    gt = _gt_inv(1)
    r = accuracy.evaluate(scale * gt + shift, gt)
    assert r["abs_rel"] == pytest.approx(0.0, abs=1e-9)
    assert r["delta1"] == 1.0
    assert r["scale"] == pytest.approx(1.0 / scale)
    assert r["shift"] == pytest.approx(-shift / scale)


def test_hand_computed_residual():
    """A two-level prediction leaves a residual computed by hand."""
    # pred takes two values, so the fit maps each group to the mean of its targets:
    # aligned inverse depth [2, 2, 4, 4] against ground truth [1, 3, 4, 4], i.e.
    # depth [1/2, 1/2, 1/4, 1/4] against [1, 1/3, 1/4, 1/4]:
    # relative errors [1/2, 1/2, 0, 0] -> AbsRel 0.25; ratios [2, 1.5, 1, 1] -> delta1 0.5
    pred = np.array([[0.0, 0.0], [1.0, 1.0]])
    gt = np.array([[1.0, 3.0], [4.0, 4.0]])
    r = accuracy.evaluate(pred, gt)
    assert r["scale"] == pytest.approx(2.0)
    assert r["shift"] == pytest.approx(2.0)
    assert r["abs_rel"] == pytest.approx(0.25)
    assert r["delta1"] == pytest.approx(0.5)


def test_abs_rel_and_delta1_on_depth():
    """The two metrics on depth directly, with the strict delta threshold."""
    pred = np.array([1.0, 1.2, 2.0, 0.5])
    gt = np.array([1.0, 1.0, 1.0, 1.0])
    assert accuracy.abs_rel(pred, gt) == pytest.approx((0 + 0.2 + 1.0 + 0.5) / 4)
    # 1.2 passes, 2 and 1 / 0.5 = 2 fail both ways round
    assert accuracy.delta1(pred, gt) == pytest.approx(0.5)
    # the threshold is strict: a ratio of exactly 1.25 does not count
    assert accuracy.delta1(np.array([1.25, 0.8]), np.array([1.0, 1.0])) == 0.0


def test_invalid_pixels_are_ignored():
    """Invalid ground truth and masked-out pixels do not change the scores."""
    pred = np.array([[0.0, 0.0], [1.0, 1.0]])
    gt = np.array([[1.0, 3.0], [4.0, 4.0]])
    clean = accuracy.evaluate(pred, gt)
    # ground truth that is inf, nan, 0 or negative, with wild predictions, changes nothing
    pred_bad = np.concatenate([pred, [[1e6, -1e6], [np.nan, 7.0]]], axis=1)
    gt_bad = np.concatenate([gt, [[np.inf, np.nan], [0.0, -2.0]]], axis=1)
    assert accuracy.evaluate(pred_bad, gt_bad) == pytest.approx(clean)
    # and so does a mask that leaves out valid-looking ground truth
    gt_masked = np.concatenate([gt, [[9.0, 0.1], [5.0, 2.0]]], axis=1)
    mask = np.concatenate([np.ones((2, 2), bool), np.zeros((2, 2), bool)], axis=1)
    assert accuracy.evaluate(pred_bad, gt_masked, mask) == pytest.approx(clean)
    with pytest.raises(ValueError):
        accuracy.evaluate(pred, gt, np.zeros((2, 2), bool))


def test_non_positive_aligned_inverse_depth_is_clamped_to_the_depth_cap():
    """A fit negative somewhere yields depth_cap there, not nan or inf."""
    # a prediction that the best fit makes negative somewhere must not yield nan or inf
    pred = np.array([0.0, 1.0, 2.0, 3.0])
    gt = np.array([0.1, 0.1, 0.1, 4.0])  # the fit is 1.17 * pred - 0.68
    r = accuracy.evaluate(pred, gt, depth_cap=100.0)
    aligned, s, b = accuracy.align_inverse_depth(pred, gt)
    assert aligned.min() < 0
    depth = accuracy.inverse_to_depth(aligned, 1 / 100.0)
    assert np.isfinite(depth).all() and depth.max() == pytest.approx(100.0)
    assert r["abs_rel"] == pytest.approx(accuracy.abs_rel(depth, 1 / gt))


def test_disparity_to_inverse_depth_marks_invalid_and_adds_offset():
    """``(d + doffs) / (f * B)``; inf, 0 and nan become nan."""
    d = np.array([10.0, np.inf, 0.0, np.nan])
    inv = accuracy.disparity_to_inverse_depth(d, focal_px=100.0, baseline_m=0.5, doffs_px=2.0)
    assert inv[0] == pytest.approx(12.0 / 50.0)
    assert np.isnan(inv[1:]).all()


def test_motorcycle_ground_truth_scores_itself_perfectly():
    """The real disparity from skimage, inf holes and all, scores its own depth perfectly."""
    skimage_data = pytest.importorskip("skimage.data")
    _, _, disparity_px = skimage_data.stereo_motorcycle()
    gt_inv = accuracy.disparity_to_inverse_depth(disparity_px)
    depth_m = 1 / gt_inv[np.isfinite(gt_inv)]
    assert 1.5 < depth_m.min() < depth_m.max() < 6.0  # a workshop scene, 2 to 5 m away
    # raw disparity is an affine function of inverse depth, so it aligns exactly;
    # its invalid pixels (inf in skimage's copy) are left out
    r = accuracy.evaluate(disparity_px.astype(np.float64), gt_inv)
    assert r["abs_rel"] == pytest.approx(0.0, abs=1e-9)
    assert r["delta1"] == 1.0
    assert r["pixels"] == int(np.isfinite(disparity_px).sum())


def test_main_without_weights_exits_2(tmp_path, capsys):
    """A missing weights file: one-line error, exit status 2."""
    assert accuracy.main(["--weights", str(tmp_path / "missing.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: weights file not found") and err.count("\n") == 1


def test_main_runs_end_to_end_with_weights_file(weights_file, capsys):
    """The whole script on the real picture with a weights file exits 0."""
    # synthetic weights: the scores are meaningless, but every stage runs on the real picture
    assert accuracy.main(["--weights", str(weights_file), "--backend", "torch"]) == 0
    out = capsys.readouterr().out
    assert "AbsRel" in out and "MiDaS v2.1 small" in out and "constant (baseline)" in out
