"""Tests for benchmarks/accuracy.py with Depth Anything: metres scored as they are, --model."""

import accuracy  # benchmarks/accuracy.py; benchmarks/ is on pytest's pythonpath
import numpy as np
import pytest


def _gt_depth(seed=0, shape=(24, 32)):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.5, 5.0, size=shape)  # metres


def test_metres_equal_to_the_ground_truth_score_perfectly():
    gt = _gt_depth()
    r = accuracy.evaluate_metric(gt.copy(), 1.0 / gt)
    assert r["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    assert r["delta1"] == 1.0
    assert r["scale"] == pytest.approx(1.0)
    assert r["pixels"] == gt.size


def test_metres_are_not_fitted_a_wrong_scale_counts_in_full():
    """Twice too far: AbsRel 1, no pixel within 1.25, scale 0.5 (no alignment hides it)."""
    gt = _gt_depth(1)
    r = accuracy.evaluate_metric(2.0 * gt, 1.0 / gt)
    assert r["abs_rel"] == pytest.approx(1.0)
    assert r["delta1"] == 0.0
    assert r["scale"] == pytest.approx(0.5)
    # while the aligned score of the same prediction is perfect
    rows = dict(accuracy.score("m", 2.0 * gt, True, 1.0 / gt))
    assert set(rows) == {"m, aligned", "m, metres as given"}
    assert rows["m, aligned"]["abs_rel"] == pytest.approx(0.0, abs=1e-9)
    assert rows["m, metres as given"]["abs_rel"] == pytest.approx(1.0)


def test_relative_output_gets_the_aligned_row_only():
    gt = _gt_depth(2)
    rows = accuracy.score("r", 3.0 / gt + 0.5, False, 1.0 / gt)
    assert [name for name, _ in rows] == ["r"]
    assert rows[0][1]["abs_rel"] == pytest.approx(0.0, abs=1e-9)


def test_invalid_predictions_and_ground_truth_are_ignored():
    gt = _gt_depth(3, shape=(2, 4))
    clean = accuracy.evaluate_metric(gt[:, :2], 1.0 / gt[:, :2])
    pred = gt.copy()
    pred[:, 2:] = [[0.0, np.nan], [-1.0, np.inf]]  # no depth there
    assert accuracy.evaluate_metric(pred, 1.0 / gt) == pytest.approx(clean)
    gt_inv = 1.0 / gt
    gt_inv[:, 2:] = [[np.inf, np.nan], [0.0, -2.0]]
    assert accuracy.evaluate_metric(gt * 7, gt_inv)["pixels"] == 4
    with pytest.raises(ValueError):
        accuracy.evaluate_metric(np.zeros((2, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError):
        accuracy.evaluate_metric(np.ones((2, 2)), np.ones((2, 3)))


def test_main_scores_a_metric_model_aligned_and_as_given(dav2_weights_file, capsys):
    """The whole script with a metric model on the real picture exits 0 with both rows."""
    pytest.importorskip("skimage.data")
    argv = ["--model", "dav2-metric-indoor", "--weights", str(dav2_weights_file),
            "--backend", "torch", "--input-size", "196"]
    assert accuracy.main(argv) == 0
    out = capsys.readouterr().out
    assert "model:    dav2-metric-indoor" in out and "input side 196" in out
    assert "metric indoor (Hypersim) fp32, aligned" in out
    assert "metric indoor (Hypersim) fp32, metres as given" in out


def test_main_names_the_models_checkpoint_when_it_is_missing(tmp_path, capsys):
    assert accuracy.main(["--model", "dav2-small", "--weights",
                          str(tmp_path / "missing.pth")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: weights file not found") and err.count("\n") == 1
    assert "depth_anything_v2_vits.pth" in err


def test_main_refuses_an_input_size_the_model_cannot_take(dav2_weights_file, capsys):
    assert accuracy.main(["--model", "dav2-small", "--weights", str(dav2_weights_file),
                          "--backend", "torch", "--input-size", "5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
