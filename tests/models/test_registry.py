"""Tests for stream.models.registry and stream.models.spec: a network is its spec.

The central check builds each network family and its preprocessing from nothing but a
:class:`ModelSpec` (its ``build()``, its input rule and output resize, the generic
transforms) and compares the result with the family's golden data.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from support import dav2_weights
from support.golden import CASES as MIDAS_CASES
from support.golden import DATA as MIDAS_DATA

from stream.core.errors import ConfigError, WeightsError
from stream.core.units import DepthKind
from stream.models.registry import DEFAULT_MODEL, MODELS, get_spec, spec_for_checkpoint
from stream.models.spec import Bound, OutputResize
from stream.models.transforms import preprocess_array, resize_depth
from stream.models.weights import check_state_dict, load_file

ROOT = Path(__file__).resolve().parents[2]


def _relative_error(ours: np.ndarray, golden: np.ndarray) -> float:
    return float(np.abs(ours - golden).max() / np.abs(golden).max())


def _run_from_spec(name: str, state: dict, picture: Path, side: int | None):
    """Preprocess, network and resize for one picture, from the spec alone."""
    spec = get_spec(name)
    model = spec.build()
    model.load_state_dict(state, strict=True)
    rgb = cv2.cvtColor(cv2.imread(str(picture)), cv2.COLOR_BGR2RGB)
    x = preprocess_array(rgb, spec, side)
    with torch.inference_mode():
        net = model(torch.from_numpy(x)).numpy()
    return x, net, resize_depth(net, rgb.shape[:2], spec.resize)


@pytest.mark.parametrize("case", MIDAS_CASES)
def test_midas_network_and_preprocessing_from_its_spec(case: str, state_dict: dict) -> None:
    golden = np.load(MIDAS_DATA / f"{case}.npz")
    x, net, final = _run_from_spec("midas-small", state_dict, MIDAS_DATA / f"{case}.png", None)
    assert np.abs(x - golden["input"]).max() <= 1e-5
    assert _relative_error(net, golden["net"]) <= 1e-4
    assert _relative_error(final, golden["final"]) <= 1e-4


@pytest.fixture(scope="module")
def dav2_state() -> dict:
    return dav2_weights.synthetic_torch_state_dict(7)


@pytest.mark.parametrize("name,net_key,final_key", [
    ("dav2-small", "net", "final"),
    ("dav2-metric-indoor", "metric_net", "metric_final"),
])
@pytest.mark.parametrize("case", dav2_weights.CASES)
def test_dav2_networks_and_preprocessing_from_their_specs(case: str, name: str, net_key: str,
                                                          final_key: str, dav2_state: dict
                                                          ) -> None:
    golden = np.load(dav2_weights.DATA / f"{case}_266.npz")
    assert int(golden["weights_seed"]) == 7
    assert get_spec(name).max_depth in (None, float(golden["max_depth"]))
    x, net, final = _run_from_spec(name, dav2_state, dav2_weights.DATA / f"{case}.png", 266)
    assert np.abs(x - golden["input"]).max() <= 1e-4
    assert _relative_error(net, golden[net_key]) <= 1e-4
    assert _relative_error(final, golden[final_key]) <= 1e-4


def test_the_registry_names_and_kinds() -> None:
    assert list(MODELS) == ["midas-small", "dav2-small", "dav2-metric-indoor",
                            "dav2-metric-outdoor"]
    assert DEFAULT_MODEL == "midas-small"
    assert [MODELS[n].output for n in MODELS] == [DepthKind.RELATIVE, DepthKind.RELATIVE,
                                                  DepthKind.METRIC, DepthKind.METRIC]
    assert (MODELS["dav2-metric-indoor"].max_depth, MODELS["dav2-metric-outdoor"].max_depth) \
        == (20.0, 80.0)
    assert MODELS["midas-small"].resize is OutputResize.CUBIC
    assert MODELS["dav2-small"].resize is OutputResize.LINEAR_CORNERS
    for spec in MODELS.values():
        assert spec.checkpoint.url.startswith("https://")
        assert spec.checkpoint.url.endswith("/" + spec.checkpoint.file_name)
        assert spec.source_file.is_file()
        assert spec_for_checkpoint(spec.checkpoint.file_name) is spec
        _, _, h, w = spec.example_shape()
        assert h % spec.input.multiple_of == 0 and w % spec.input.multiple_of == 0


def test_packaged_dav2_schema_equals_the_golden_schema() -> None:
    golden = [(k, tuple(s), d) for k, s, d in json.loads(dav2_weights.SCHEMA.read_text())]
    for name in ("dav2-small", "dav2-metric-indoor", "dav2-metric-outdoor"):
        assert get_spec(name).checkpoint.schema() == golden


def test_an_unknown_model_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown model 'midas-large'; choose one of "
                                          "midas-small, dav2-small"):
        get_spec("midas-large")
    assert get_spec(None) is MODELS["midas-small"]
    assert get_spec(MODELS["dav2-small"]) is MODELS["dav2-small"]


@pytest.mark.parametrize("size,side,want", [
    ((480, 640), 518, (518, 686)), ((480, 640), 266, (266, 350)), ((360, 640), 266, (266, 476)),
    ((640, 480), 266, (350, 266)), ((640, 480), 518, (686, 518)), ((518, 518), 518, (518, 518)),
])
def test_lower_bound_rule_of_depth_anything(size, side, want) -> None:
    rule = MODELS["dav2-small"].input
    assert rule.bound is Bound.LOWER
    assert rule.network_size(*size, side) == want


@pytest.mark.parametrize("size,want", [((480, 640), (192, 256)), ((360, 640), (128, 256)),
                                       ((2000, 10), (256, 32))])
def test_upper_bound_rule_of_midas(size, want) -> None:
    assert MODELS["midas-small"].input.network_size(*size) == want


def test_a_side_below_one_multiple_is_refused() -> None:
    with pytest.raises(ConfigError, match="at least 14"):
        MODELS["dav2-small"].input.network_size(480, 640, 10)


def test_another_models_checkpoint_says_which_model_it_is(state_dict: dict, dav2_state: dict
                                                          ) -> None:
    with pytest.raises(WeightsError, match=r"is the MiDaS v2.1 small checkpoint "
                                           r"\(--model midas-small\)"):
        check_state_dict(state_dict, MODELS["dav2-small"].checkpoint, origin="m.pt")
    with pytest.raises(WeightsError, match=r"Depth Anything V2 Small checkpoint \(--model "
                                           r"dav2-small or dav2-metric-indoor or "
                                           r"dav2-metric-outdoor\)"):
        check_state_dict(dav2_state, MODELS["midas-small"].checkpoint, origin="d.pth")


def test_a_metric_file_given_for_the_relative_model_is_named(dav2_state: dict,
                                                             tmp_path: Path) -> None:
    path = tmp_path / "depth_anything_v2_metric_hypersim_vits.pth"
    torch.save(dav2_state, path)
    with pytest.raises(WeightsError, match="--model dav2-metric-indoor"):
        load_file(path, MODELS["dav2-small"].checkpoint)
    assert set(load_file(path, MODELS["dav2-metric-indoor"].checkpoint)) == set(dav2_state)


def test_the_registry_imports_nothing_heavy() -> None:
    probe = ("import sys, stream.models.registry, stream.models.transforms\n"
             "print(sorted({'torch', 'timm', 'openvino', 'av'} & {m.split('.')[0] "
             "for m in sys.modules}))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert out.strip() == "[]"
