"""Tests for stream.engines.quantize and the choice of precision (int8 against fp32).

The agreement metric, the threshold, the sample frames, and the int8 path end to end
(NNCF on a small recipe, cached, checked).

Synthetic weights quantize badly (their activations are not those of a trained network),
so ``auto`` picks fp32 for them; the tests that need a passing check inject the numbers
into the cached entry's ``meta.json``, which is what ``auto`` reads.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openvino
import pytest

from stream.core.errors import ConfigError
from stream.engines import quantize
from stream.engines.estimator import create_estimator
from stream.engines.factory import create_backend, model_report
from stream.engines.openvino_backend import OpenVinoBackend
from stream.engines.quantize import Agreement, Recipe, agreement_passes, frame_agreement

#: A small recipe so that a test quantizes in seconds, not a minute (same code path).
SMALL = Recipe(calibration_frames=6, calibration_step=60, check_frames=2, check_step=150,
               check_offset=7)


def _refuse_convert(*args: object, **kwargs: object) -> None:
    raise AssertionError("the network was converted again")


# -- the metric and the threshold -------------------------------------------------------


def test_identical_outputs_agree_perfectly() -> None:
    rng = np.random.default_rng(0)
    fp32 = rng.uniform(1.0, 10.0, (24, 32)).astype(np.float32)
    assert frame_agreement(fp32, fp32) == pytest.approx((0.0, 1.0), abs=1e-9)


def test_scale_and_shift_do_not_count() -> None:
    rng = np.random.default_rng(1)
    fp32 = rng.uniform(1.0, 10.0, (24, 32))
    abs_rel, delta1 = frame_agreement(3.0 * fp32 + 0.5, fp32)
    assert abs_rel < 1e-9 and delta1 == 1.0


def test_a_region_gone_wrong_shows_in_both_numbers() -> None:
    rng = np.random.default_rng(2)
    fp32 = rng.uniform(1.0, 10.0, (100, 100))
    int8 = fp32.copy()
    int8[:10] *= 2.0  # a tenth of the picture twice as near
    abs_rel, delta1 = frame_agreement(int8, fp32)
    assert abs_rel > 0.02
    assert 0.5 < delta1 < 0.95  # the fit spreads part of the error over the rest


def test_noise_of_one_percent_is_small() -> None:
    rng = np.random.default_rng(3)
    fp32 = rng.uniform(1.0, 10.0, (100, 100))
    int8 = fp32 * (1 + 0.01 * rng.standard_normal(fp32.shape))
    abs_rel, delta1 = frame_agreement(int8, fp32)
    assert 0.005 < abs_rel < 0.012 and delta1 == 1.0


@pytest.mark.parametrize(
    ("abs_rel", "delta1", "passes"),
    [(0.0, 1.0, True), (0.02, 0.98, True), (0.0201, 0.99, False), (0.01, 0.979, False),
     (0.24, 0.5, False)],
)
def test_threshold(abs_rel: float, delta1: float, passes: bool) -> None:
    ok, why = agreement_passes(Agreement(abs_rel, delta1, abs_rel, delta1, 10))
    assert ok is passes
    assert "\n" not in why and f"{abs_rel:.3f}" in why
    assert agreement_passes(None)[0] is False


def test_agreement_round_trips_through_json() -> None:
    check = Agreement(0.01, 0.99, 0.02, 0.97, 10)
    assert Agreement.from_dict(json.loads(json.dumps(check.to_dict()))) == check
    assert Agreement.from_dict({"abs_rel": 1}) is None
    assert Agreement.from_dict(None) is None


# -- the sample frames ------------------------------------------------------------------


def test_calibration_and_check_frames_are_deterministic_and_disjoint() -> None:
    calibration = quantize.calibration_inputs(SMALL)
    again = quantize.calibration_inputs(SMALL)
    check = quantize.held_out_inputs(SMALL)
    assert len(calibration) == SMALL.calibration_frames + len(SMALL.calibration_pictures)
    assert len(check) == SMALL.check_frames + len(SMALL.check_pictures)
    for a, b in zip(calibration, again):
        np.testing.assert_array_equal(a, b)
    for x in check:  # no checked frame is a calibration frame
        assert not any(x.shape == c.shape and np.array_equal(x, c) for c in calibration)
    # the default recipe keeps them apart too
    default = quantize.DEFAULT_RECIPE
    cal = {default.calibration_step * k for k in range(default.calibration_frames)}
    chk = {default.check_offset + default.check_step * k for k in range(default.check_frames)}
    assert not cal & chk


def test_a_recipe_that_checks_calibration_frames_is_refused() -> None:
    with pytest.raises(ConfigError, match="reuse calibration frames"):
        quantize.held_out_inputs(Recipe(check_offset=0, check_step=9))


def test_missing_samples_are_a_one_line_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="use --precision fp32") as info:
        quantize.calibration_inputs(SMALL, tmp_path)
    assert "\n" not in str(info.value)


# -- int8 end to end --------------------------------------------------------------------


@pytest.fixture(scope="module")
def int8_cache(weights_file: Path, _model_cache: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """One real quantization (small recipe), shared by the module.

    It goes in the session's model cache (where the fp32 model of ``weights_file`` may
    already be); its entry is keyed by the small recipe, so no other test meets it.
    """
    weights = tmp_path_factory.mktemp("int8") / "w.pt"
    shutil.copy(weights_file, weights)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(quantize, "DEFAULT_RECIPE", SMALL)
        backend = OpenVinoBackend(weights=weights, precision="int8",
                                  cache_dir=_model_cache / "openvino")
    yield {"weights": weights, "backend": backend}
    backend.close()


@pytest.fixture()
def small_recipe(int8_cache: dict, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setattr(quantize, "DEFAULT_RECIPE", SMALL)
    return int8_cache


def _set_check(entry_path: Path, abs_rel: float, delta1: float) -> None:
    meta_path = entry_path / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["self_check"] = Agreement(abs_rel, delta1, abs_rel, delta1, 4).to_dict()
    meta_path.write_text(json.dumps(meta))


def test_int8_is_made_checked_and_cached(small_recipe: dict) -> None:
    backend = small_recipe["backend"]
    assert backend.precision == "int8"
    entry = backend.cache_entry.path
    assert entry.name.startswith(backend.fp32_entry.path.name + "-int8-")
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["precision"] == "int8" and meta["recipe"]["calibration_frames"] == 6
    check = Agreement.from_dict(meta["self_check"])
    assert check is not None and check.frames == SMALL.check_frames + 2
    assert backend.describe()["int8_agreement"] == check.to_dict()
    # it runs, at every aspect ratio, and differs from fp32 (it is another network)
    for shape in ((1, 3, 192, 256), (1, 3, 256, 160)):
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        out = backend.infer(x)
        assert out.shape == shape[2:] and out.dtype == np.float32 and np.isfinite(out).all()
    assert any(n.get_type_name() == "FakeQuantize" for n in backend._ir.get_ops())


def test_int8_second_start_reads_the_cache(small_recipe: dict,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def no_quantize(*args: object, **kwargs: object) -> None:
        raise AssertionError("quantized again")

    monkeypatch.setattr(quantize, "_quantize", no_quantize)
    monkeypatch.setattr(openvino, "convert_model", _refuse_convert)
    with create_backend("auto", weights=small_recipe["weights"], precision="int8") as backend:
        assert backend.precision == "int8"
        assert backend.cache_entry == small_recipe["backend"].cache_entry


def test_auto_picks_fp32_when_the_check_fails(small_recipe: dict,
                                              capsys: pytest.CaptureFixture) -> None:
    _set_check(small_recipe["backend"].cache_entry.path, 0.2, 0.6)
    estimator = create_estimator(str(small_recipe["weights"]), precision="auto")
    described = estimator.describe()
    estimator.close()
    assert described["precision"] == "fp32"
    assert "AbsRel 0.200" in described["reason"]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "using fp32" in err and "AbsRel 0.200" in err


def test_auto_picks_int8_when_the_check_passes(small_recipe: dict,
                                               capsys: pytest.CaptureFixture) -> None:
    _set_check(small_recipe["backend"].cache_entry.path, 0.01, 0.995)
    estimator = create_estimator(str(small_recipe["weights"]), precision="auto")
    described = estimator.describe()
    rgb = np.full((48, 64, 3), 128, np.uint8)
    depth, _ = estimator.predict(rgb)
    estimator.close()
    assert described["precision"] == "int8"
    assert described["int8_agreement"]["abs_rel"] == 0.01
    assert depth.shape == (48, 64)
    assert capsys.readouterr().err == ""  # a passing check is not news
    report = model_report(small_recipe["weights"])
    assert report["auto"].startswith("int8") and report["int8_model"]
    # fp32 asked for is fp32 whatever the check says
    with create_backend("openvino", weights=small_recipe["weights"], precision="fp32") as fp32:
        assert fp32.precision == "fp32"


def test_auto_without_an_int8_model_is_fp32_and_makes_none(
    monkeypatch: pytest.MonkeyPatch, small_recipe: dict,
) -> None:
    # the cache holds the fp32 model, and no int8 model for this recipe
    monkeypatch.setattr(quantize, "DEFAULT_RECIPE", Recipe(calibration_frames=5))

    def no_quantize(*args: object, **kwargs: object) -> None:
        raise AssertionError("auto must not quantize by itself")

    monkeypatch.setattr(quantize, "_quantize", no_quantize)
    with create_backend("auto", weights=small_recipe["weights"], precision="auto") as backend:
        assert backend.precision == "fp32"
        assert "no int8 model" in backend.reason


def test_int8_with_torch_is_a_config_error(weights_file: Path) -> None:
    with pytest.raises(ConfigError, match="int8 runs on OpenVINO"):
        create_backend("torch", weights=weights_file, precision="int8")
    with pytest.raises(ConfigError, match="unknown precision"):
        create_backend("auto", weights=weights_file, precision="int4")
