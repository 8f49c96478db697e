"""Tests for stream.engines.quantize and the choice of precision (int8 against fp32).

The agreement metric (relative and metric), the threshold, the rule of ``auto`` (self-check
and speed on this machine), the frames shipped in the package, and the int8 path end to
end (NNCF on a small recipe, cached, checked, timed) for MiDaS and Depth Anything.

Synthetic weights quantize badly (their activations are not those of a trained network),
and timings vary from run to run; so the tests that need a passing check or a given
speed inject the numbers (into ``measure_speed`` or the cached entry's ``meta.json``,
which is what ``auto`` reads).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import openvino
import pytest

from stream.core.errors import ConfigError
from stream.engines import quantize
from stream.engines.estimator import create_estimator
from stream.engines.factory import create_backend
from stream.engines.openvino_backend import OpenVinoBackend
from stream.engines.quantize import (
    ALL_LAYERS,
    FRAMES_DIR,
    SPEED_ROUNDS,
    Agreement,
    Recipe,
    Speed,
    agreement_passes,
    frame_agreement,
    int8_verdict,
    machine_id,
)
from stream.models.registry import MIDAS_SMALL_SPEC, get_spec

#: A small recipe so that a test quantizes in seconds, not a minute (same code path).
SMALL = Recipe(calibration_frames=5, check_frames=2)
PASS = Agreement(0.01, 0.995, 0.02, 0.99, 2)
FAIL = Agreement(0.2, 0.6, 0.3, 0.5, 2)
HERE = machine_id(2)
SHAPE = (1, 3, 192, 256)


def _refuse_convert(*args: object, **kwargs: object) -> None:
    raise AssertionError("the network was converted again")


def _no_quantize(*args: object, **kwargs: object) -> None:
    raise AssertionError("quantized again")


def _timings(**ms: float):  # noqa: ANN202
    """A stand-in for ``measure_speed`` that gives ``ms`` per model name (no timing)."""
    calls: list[dict] = []

    def measure(core: object, models: dict, shape: tuple, threads: int, rounds: int = 5
                ) -> dict[str, float]:
        calls.append({"models": sorted(models), "shape": tuple(shape), "threads": threads})
        return {name: ms[name.replace("-", "_")] for name in models}

    measure.calls = calls  # type: ignore[attr-defined]
    return measure


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


def test_metric_depth_is_compared_in_metres() -> None:
    rng = np.random.default_rng(4)
    metres = rng.uniform(0.5, 20.0, (24, 32))
    # a relative network may differ from fp32 by a scale; a metric one may not
    assert frame_agreement(2.0 * metres, metres) == pytest.approx((0.0, 1.0), abs=1e-9)
    abs_rel, delta1 = frame_agreement(2.0 * metres, metres, metric=True)
    assert abs_rel == pytest.approx(1.0) and delta1 == 0.0
    assert frame_agreement(metres * 1.01, metres, metric=True) == pytest.approx((0.01, 1.0))
    check = quantize.agreement([2.0 * metres, metres], [metres, metres], metric=True)
    assert (check.abs_rel, check.abs_rel_worst, check.delta1_worst) == pytest.approx(
        (0.5, 1.0, 0.0))


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


def test_records_round_trip_through_json() -> None:
    check = Agreement(0.01, 0.99, 0.02, 0.97, 10)
    assert Agreement.from_dict(json.loads(json.dumps(check.to_dict()))) == check
    assert Agreement.from_dict({"abs_rel": 1}) is None
    assert Agreement.from_dict(None) is None
    speed = Speed(61.0, 30.5, SHAPE, HERE, 5)
    assert Speed.from_dict(json.loads(json.dumps(speed.to_dict()))) == speed
    assert Speed.from_dict({"fp32_ms": 1.0}) is None


# -- the rule of auto -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("check", "speed", "uses", "says"),
    [(PASS, Speed(60.0, 30.0, SHAPE, HERE, 5), True, "faster than fp32 here (int8 30.0 ms, "
      "fp32 60.0 ms per 192x256 input)"),
     (PASS, Speed(60.0, 75.5, SHAPE, HERE, 5), False, "int8 is slower than fp32 on this "
      "machine (int8 75.5 ms, fp32 60.0 ms per 192x256 input)"),
     (PASS, Speed(60.0, 30.0, SHAPE, "elsewhere, 2 threads", 5), False,
      "not timed against fp32 on this machine (it was timed on elsewhere, 2 threads)"),
     (PASS, None, False, "not timed against fp32 on this machine; --precision int8 times it"),
     (FAIL, Speed(60.0, 30.0, SHAPE, HERE, 5), False, "int8 differs from fp32"),
     (FAIL, Speed(60.0, 75.5, SHAPE, HERE, 5), False, "AbsRel 0.200"),
     (None, Speed(60.0, 30.0, SHAPE, HERE, 5), False, "no self-check")],
)
def test_auto_uses_int8_only_where_it_passes_and_is_faster_here(
    check: Agreement | None, speed: Speed | None, uses: bool, says: str,
) -> None:
    used, why = int8_verdict(check, speed, HERE)
    assert used is uses
    assert says in why and "\n" not in why
    if check is FAIL and speed is not None and not speed.faster:  # both reasons, one line
        assert "slower" in why


def test_the_fastest_passing_variant_is_kept() -> None:
    keep = quantize._keep_variant
    assert keep({"all": PASS, "dpt-head": PASS}, {"all": 30.0, "dpt-head": 20.0}) == "dpt-head"
    assert keep({"all": PASS, "dpt-head": FAIL}, {"all": 30.0, "dpt-head": 20.0}) == "all"
    assert keep({"all": FAIL, "dpt-head": FAIL}, {"all": 10.0, "dpt-head": 20.0}) == "all"


def test_the_machine_is_this_cpu_its_features_and_the_thread_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert machine_id(2) != machine_id(1) and machine_id(2) == HERE
    quantize._cpu.cache_clear()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # other kernels: another machine
    try:
        assert machine_id(2) != HERE
    finally:
        quantize._cpu.cache_clear()


# -- the shipped frames -----------------------------------------------------------------


def test_the_frames_ship_in_the_package_small_and_disjoint() -> None:
    calibrate = sorted(FRAMES_DIR.glob("calibrate-*.jpg"))
    check = sorted(FRAMES_DIR.glob("check-*.jpg"))
    assert FRAMES_DIR.parent == Path(quantize.__file__).parent
    assert (len(calibrate), len(check)) == (14, 6)
    assert sum(p.stat().st_size for p in calibrate + check) < 500_000
    assert not {p.read_bytes() for p in calibrate} & {p.read_bytes() for p in check}
    clip = {p.stem.split("-")[-1] for p in calibrate + check if "-clip-" in p.name}
    assert len(clip) == 16  # no clip frame is both calibrated with and checked on
    pyproject = (Path(quantize.__file__).parents[2] / "pyproject.toml").read_text()
    assert '"engines/calibration/*.jpg"' in pyproject  # in the wheel too


def test_calibration_and_check_inputs_are_deterministic_and_disjoint() -> None:
    calibration = quantize.calibration_inputs(SMALL)
    again = quantize.calibration_inputs(SMALL)
    check = quantize.held_out_inputs(SMALL)
    assert (len(calibration), len(check)) == (SMALL.calibration_frames, SMALL.check_frames)
    for a, b in zip(calibration, again):
        np.testing.assert_array_equal(a, b)
    for x in check:  # no checked frame is a calibration frame
        assert not any(x.shape == c.shape and np.array_equal(x, c) for c in calibration)
    assert {x.shape for x in calibration} >= {SHAPE}  # the spec's example shape
    dav2 = get_spec("dav2-small")
    assert dav2.example_shape() in {x.shape for x in quantize.calibration_inputs(SMALL,
                                                                                spec=dav2)}


def test_the_recipe_digest_keys_the_frames_and_the_variants(tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    shutil.copytree(FRAMES_DIR, frames)
    digest = SMALL.digest(frames)
    assert digest == SMALL.digest() and len(digest) == 10
    head = quantize.variants_for(get_spec("dav2-small"))[1]
    assert replace(SMALL, variants=(ALL_LAYERS, head)).digest() != digest
    first = sorted(frames.glob("calibrate-*.jpg"))[0]
    first.write_bytes(first.read_bytes() + b"\0")
    assert SMALL.digest(frames) != digest
    assert quantize.recipe_for(MIDAS_SMALL_SPEC).variants == (ALL_LAYERS,)
    for name in ("dav2-small", "dav2-metric-indoor", "dav2-metric-outdoor"):
        variants = quantize.recipe_for(get_spec(name)).variants
        assert [v.name for v in variants] == ["all", "dpt-head"]
        assert variants[1].skip_patterns == (r".*\.pretrained\..*",)


def test_missing_frames_are_a_one_line_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="use --precision fp32") as info:
        quantize.calibration_inputs(SMALL, tmp_path)
    assert "\n" not in str(info.value) and "reinstall depthstream" in str(info.value)


def test_the_self_check_of_a_metric_network_compares_metres(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ramp = np.tile(np.linspace(1.0, 5.0, 32), (24, 1))
    outputs = {"fp32": ramp, "int8": 2.0 * ramp}  # int8 twice as far: wrong in metres

    def runner(core: object, model: str, threads: int):  # noqa: ANN202
        return lambda x: outputs[model]

    monkeypatch.setattr(quantize, "_runner", runner)
    metric = quantize.self_check(None, {"all": "int8"}, "fp32", 2, SMALL,
                                 spec=get_spec("dav2-metric-indoor"))["all"]
    assert metric.abs_rel == pytest.approx(1.0) and metric.frames == SMALL.check_frames
    relative = quantize.self_check(None, {"all": "int8"}, "fp32", 2, SMALL,
                                   spec=get_spec("dav2-small"))["all"]
    assert relative.abs_rel == pytest.approx(0.0, abs=1e-9)


# -- int8 end to end --------------------------------------------------------------------


@pytest.fixture(scope="module")
def int8_cache(weights_file: Path, _model_cache: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """One real quantization (small recipe, injected timings), shared by the module.

    It goes in the session's model cache (where the fp32 model of ``weights_file`` may
    already be); its entry is keyed by the small recipe, so no other test meets it.
    """
    weights = tmp_path_factory.mktemp("int8") / "w.pt"
    shutil.copy(weights_file, weights)
    measure = _timings(fp32=61.0, all=30.5)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(quantize, "DEFAULT_RECIPE", SMALL)
        m.setattr(quantize, "measure_speed", measure)
        backend = OpenVinoBackend(weights=weights, precision="int8", threads=2,
                                  cache_dir=_model_cache / "openvino")
    yield {"weights": weights, "backend": backend, "measured": measure.calls}
    backend.close()


@pytest.fixture()
def small_recipe(int8_cache: dict, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setattr(quantize, "DEFAULT_RECIPE", SMALL)
    return int8_cache


def _set_meta(entry_path: Path, check: Agreement, speed: Speed | None) -> None:
    meta_path = entry_path / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["self_check"] = check.to_dict()
    meta["speed"] = None if speed is None else speed.to_dict()
    meta_path.write_text(json.dumps(meta))


def test_int8_is_made_checked_timed_and_cached(small_recipe: dict) -> None:
    backend = small_recipe["backend"]
    assert backend.precision == "int8"
    entry = backend.cache_entry.path
    assert entry.name.startswith(backend.fp32_entry.path.name + "-int8-")
    assert entry.name.endswith(SMALL.digest())
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["precision"] == "int8" and meta["recipe"]["calibration_frames"] == 5
    check = Agreement.from_dict(meta["self_check"])
    assert check is not None and check.frames == SMALL.check_frames
    assert backend.describe()["int8_agreement"] == check.to_dict()
    # fp32 and int8 timed together, here, on the spec's example shape
    assert small_recipe["measured"] == [{"models": ["all", "fp32"], "shape": SHAPE,
                                         "threads": 2}]
    speed = Speed(61.0, 30.5, SHAPE, HERE, SPEED_ROUNDS)
    assert Speed.from_dict(meta["speed"]) == speed
    assert backend.describe()["int8_speed"] == speed.to_dict()
    assert meta["layers"] == "all" and meta["variants"]["all"]["int8_ms"] == 30.5
    # it runs, at every aspect ratio, and differs from fp32 (it is another network)
    for shape in ((1, 3, 192, 256), (1, 3, 256, 160)):
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        out = backend.infer(x)
        assert out.shape == shape[2:] and out.dtype == np.float32 and np.isfinite(out).all()
    assert any(n.get_type_name() == "FakeQuantize" for n in backend._ir.get_ops())


def test_int8_second_start_reads_the_cache(small_recipe: dict,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    _set_meta(small_recipe["backend"].cache_entry.path, PASS, Speed(61.0, 30.5, SHAPE, HERE, 5))
    monkeypatch.setattr(quantize, "_quantize", _no_quantize)
    monkeypatch.setattr(quantize, "measure_speed", _timings())  # timed here already
    monkeypatch.setattr(openvino, "convert_model", _refuse_convert)
    with create_backend("auto", weights=small_recipe["weights"], precision="int8",
                        threads=2) as backend:
        assert backend.precision == "int8"
        assert backend.cache_entry == small_recipe["backend"].cache_entry


def test_the_measured_speed_is_a_median_per_model(small_recipe: dict) -> None:
    backend = small_recipe["backend"]
    models = {"fp32": backend._core.read_model(str(backend.fp32_entry.xml)), "int8": backend._ir}
    times = quantize.measure_speed(backend._core, models, (1, 3, 64, 96), 1, rounds=2)
    assert sorted(times) == ["fp32", "int8"] and all(ms > 0.0 for ms in times.values())


def test_auto_picks_fp32_when_the_check_fails(small_recipe: dict,
                                              capsys: pytest.CaptureFixture) -> None:
    _set_meta(small_recipe["backend"].cache_entry.path, FAIL, Speed(61.0, 30.5, SHAPE, HERE, 5))
    estimator = create_estimator(str(small_recipe["weights"]), precision="auto", threads=2)
    described = estimator.describe()
    estimator.close()
    assert described["precision"] == "fp32"
    assert "AbsRel 0.200" in described["reason"]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "using fp32" in err and "AbsRel 0.200" in err


def test_auto_picks_int8_when_it_passes_and_is_faster_here(
    small_recipe: dict, capsys: pytest.CaptureFixture,
) -> None:
    _set_meta(small_recipe["backend"].cache_entry.path, PASS, Speed(61.0, 30.5, SHAPE, HERE, 5))
    estimator = create_estimator(str(small_recipe["weights"]), precision="auto", threads=2)
    described = estimator.describe()
    rgb = np.full((48, 64, 3), 128, np.uint8)
    depth, _ = estimator.predict(rgb)
    estimator.close()
    assert described["precision"] == "int8"
    assert described["int8_agreement"]["abs_rel"] == 0.01
    assert described["int8_speed"]["int8_ms"] == 30.5
    assert "faster than fp32 here" in described["reason"]
    assert depth.shape == (48, 64)
    assert capsys.readouterr().err == ""  # a passing check is not news
    # fp32 asked for is fp32 whatever the check says
    with create_backend("openvino", weights=small_recipe["weights"], precision="fp32") as fp32:
        assert fp32.precision == "fp32"


def test_auto_picks_fp32_where_int8_is_slower_and_int8_says_so(
    small_recipe: dict, capsys: pytest.CaptureFixture,
) -> None:
    entry = small_recipe["backend"].cache_entry.path
    _set_meta(entry, PASS, Speed(61.0, 75.5, SHAPE, HERE, 5))
    with create_backend("auto", weights=small_recipe["weights"], precision="auto", threads=2,
                        progress=True) as backend:
        assert backend.precision == "fp32"
        assert "int8 75.5 ms, fp32 61.0 ms" in backend.reason
    assert "slower than fp32" in capsys.readouterr().err
    with create_backend("auto", weights=small_recipe["weights"], precision="int8", threads=2,
                        progress=True) as backend:
        assert backend.precision == "int8"  # asked for by name: it runs
        assert backend.cache_entry.path == entry
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "int8 is slower than fp32 on this machine (int8 75.5 ms, fp32 61.0 ms" in err


def test_int8_times_again_on_another_machine_and_auto_follows(
    small_recipe: dict, monkeypatch: pytest.MonkeyPatch,
) -> None:
    entry = small_recipe["backend"].cache_entry.path
    _set_meta(entry, PASS, Speed(61.0, 30.5, SHAPE, "another CPU, 2 threads", 5))
    monkeypatch.setattr(quantize, "_quantize", _no_quantize)
    with create_backend("auto", weights=small_recipe["weights"], precision="auto",
                        threads=2) as backend:  # auto never times by itself
        assert backend.precision == "fp32" and "timed on another CPU" in backend.reason
    measure = _timings(fp32=50.0, int8=20.0)
    monkeypatch.setattr(quantize, "measure_speed", measure)
    with create_backend("auto", weights=small_recipe["weights"], precision="int8",
                        threads=2) as backend:
        assert backend.precision == "int8"
    assert measure.calls == [{"models": ["fp32", "int8"], "shape": SHAPE, "threads": 2}]
    meta = json.loads((entry / "meta.json").read_text())
    assert Speed.from_dict(meta["speed"]) == Speed(50.0, 20.0, SHAPE, HERE, SPEED_ROUNDS)
    assert Agreement.from_dict(meta["self_check"]) == PASS  # the rest of meta is kept
    with create_backend("auto", weights=small_recipe["weights"], precision="auto",
                        threads=2) as backend:
        assert backend.precision == "int8"


def test_auto_without_an_int8_model_is_fp32_and_makes_none(
    monkeypatch: pytest.MonkeyPatch, small_recipe: dict,
) -> None:
    # the cache holds the fp32 model, and no int8 model for this recipe
    monkeypatch.setattr(quantize, "DEFAULT_RECIPE", Recipe(calibration_frames=4))
    monkeypatch.setattr(quantize, "_quantize", _no_quantize)
    with create_backend("auto", weights=small_recipe["weights"], precision="auto") as backend:
        assert backend.precision == "fp32"
        assert "no int8 model" in backend.reason


def test_int8_with_torch_is_a_config_error(weights_file: Path) -> None:
    with pytest.raises(ConfigError, match="int8 runs on OpenVINO"):
        create_backend("torch", weights=weights_file, precision="int8")
    with pytest.raises(ConfigError, match="unknown precision"):
        create_backend("auto", weights=weights_file, precision="int4")


# -- Depth Anything: variants by layer ----------------------------------------------------


def test_depth_anything_keeps_the_fastest_variant_and_checks_in_metres(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from support.dav2_weights import synthetic_torch_state_dict

    # a small example side keeps two quantizations of the ViT to seconds
    spec = replace(get_spec("dav2-metric-indoor"), example_side=70)
    measure = _timings(fp32=100.0, all=120.0, dpt_head=80.0)
    checked = []
    real_check = quantize.self_check

    def check(*args: object, **kwargs: object) -> dict[str, Agreement]:
        real = real_check(*args, **kwargs)  # run for real, in metres ...
        checked.append(real)
        return {name: PASS for name in real}  # ... and passing, so that speed decides

    monkeypatch.setattr(quantize, "DEFAULT_RECIPE", Recipe(calibration_frames=2,
                                                           check_frames=1))
    monkeypatch.setattr(quantize, "measure_speed", measure)
    monkeypatch.setattr(quantize, "self_check", check)
    with OpenVinoBackend(synthetic_torch_state_dict(7), precision="int8", threads=2,
                         cache_dir=tmp_path / "openvino", model=spec) as backend:
        assert backend.precision == "int8"
        meta = backend.cache_entry.meta()
        ops = backend._ir.get_ops()
    assert measure.calls == [{"models": ["all", "dpt-head", "fp32"], "shape": (1, 3, 70, 98),
                              "threads": 2}]
    assert sorted(checked[0]) == ["all", "dpt-head"] and checked[0]["all"].frames == 1
    assert meta["layers"] == "dpt-head" and sorted(meta["variants"]) == ["all", "dpt-head"]
    assert meta["speed"]["fp32_ms"] == 100.0 and meta["speed"]["int8_ms"] == 80.0
    # the ViT backbone's matrix products stay fp32; the head's convolutions are int8
    fed = {t.get_node().get_type_name() for op in ops if op.get_type_name() == "FakeQuantize"
           for out in op.outputs() for t in out.get_target_inputs()}
    assert "Convolution" in fed and "MatMul" not in fed
