"""Depth Anything V2 Small: checkpoint schema, golden outputs of the reference, OpenVINO.

The golden data (``tests/data/dav2``) was made by the official implementation from the
pictures and the synthetic weights of :mod:`support.dav2_weights` (seed 7): the network input
at 266, the relative and the metric network outputs, and both resized to the picture.
Tolerances: ``1e-4`` absolute for the input, ``1e-4 * max|golden|`` for the outputs.
"""

from __future__ import annotations

import hashlib
import json
import warnings

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from support.dav2_weights import CASES, DATA, SCHEMA, synthetic_state_dict

from stream.core.errors import ConfigError
from stream.models import dav2
from stream.models.dav2 import DepthAnythingV2Small
from stream.models.registry import DAV2_SMALL_SPEC
from stream.models.transforms import preprocess_array, resize_depth

SPEC = DAV2_SMALL_SPEC


def preprocess(bgr: np.ndarray, side: int) -> np.ndarray:
    """The spec's preprocessing of a BGR picture (stream.models.transforms)."""
    return preprocess_array(bgr[:, :, ::-1], SPEC, side)


def resize_output(net: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """The spec's output resize (bilinear, corners aligned) of one map ``[h, w]``."""
    return resize_depth(net, size_hw, SPEC.resize)


def network_size(height: int, width: int, side: int) -> tuple[int, int]:
    return SPEC.input.network_size(height, width, side)

SEED = 7
HEADS = ("relative", "metric")
#: sha256 of key, shape and bytes of every tensor of the recipe at seed 7 (the golden weights).
WEIGHTS_SHA256 = "22ca157525faabcba88ec9be2638e07c0a54afc9b5957f259570d62eb8201f56"
#: where each head's output is in a golden file: (network output, resized to the picture)
KEYS = {"relative": ("net", "final"), "metric": ("metric_net", "metric_final")}

def assert_close(ours: np.ndarray, golden: np.ndarray, what: str) -> None:
    """``max|ours - golden| <= 1e-4 * max|golden|`` with equal shapes."""
    assert ours.shape == golden.shape, what
    err = float(np.abs(ours - golden).max())
    scale = float(np.abs(golden).max())
    assert err <= 1e-4 * scale, f"{what}: max error {err:.3g}, {err / scale:.3g} of the range"


@pytest.fixture(scope="module")
def weights() -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in synthetic_state_dict(SEED).items()}


@pytest.fixture(scope="module")
def golden() -> dict[str, dict[str, np.ndarray]]:
    cases = {}
    for case in CASES:
        with np.load(DATA / f"{case}_266.npz") as data:
            cases[case] = {k: data[k] for k in data.files}
        assert int(cases[case]["weights_seed"]) == SEED
        assert int(cases[case]["input_size"]) == 266
    return cases


@pytest.fixture(scope="module")
def models(weights: dict, golden: dict) -> dict[str, DepthAnythingV2Small]:
    max_depth = float(golden[CASES[0]]["max_depth"])
    out = {"relative": DepthAnythingV2Small(), "metric": DepthAnythingV2Small(max_depth)}
    for model in out.values():
        model.load_state_dict(weights, strict=True)
        model.eval()
    return out


@pytest.fixture(scope="module")
def openvino_models(models: dict) -> dict:
    """Each head converted once (dynamic batch, height and width), as OpenVINO models."""
    import openvino as ov

    converted = {}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.trace is deprecated
        for head, model in models.items():
            traced = torch.jit.trace(model, torch.zeros(1, 3, 266, 350), check_trace=False)
            converted[head] = ov.convert_model(traced, example_input=torch.zeros(1, 3, 266, 350))
    return converted


@pytest.fixture(scope="module")
def compiled(openvino_models: dict) -> dict:
    """Each head's dynamic OpenVINO model compiled once for CPU in float32."""
    return {head: compile_f32(model) for head, model in openvino_models.items()}


def compile_f32(model: object) -> object:
    """Compile for CPU in float32 (the default may be bf16, about 10 % off)."""
    import openvino as ov

    return ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


# --- checkpoint -------------------------------------------------------------------------------


@pytest.mark.parametrize("max_depth", [None, 20.0, 80.0])
def test_state_dict_matches_official_schema_exactly(max_depth: float | None) -> None:
    schema = [(k, tuple(s), d) for k, s, d in json.loads(SCHEMA.read_text())]
    model = DepthAnythingV2Small(max_depth)
    ours = [(k, tuple(v.shape), str(v.dtype).removeprefix("torch."))
            for k, v in model.state_dict().items()]
    assert ours == schema
    assert len(schema) == 239
    assert sum(int(np.prod(s)) for _, s, _ in schema) == 24_785_089
    assert sum(p.numel() for p in model.parameters()) == 24_785_089
    assert "pretrained.mask_token" in dict.fromkeys(k for k, _, _ in ours)


def test_synthetic_weights_are_the_golden_recipe() -> None:
    digest = hashlib.sha256()
    for key, value in synthetic_state_dict(SEED).items():
        assert value.dtype == np.float32
        digest.update(key.encode())
        digest.update(str(value.shape).encode())
        digest.update(value.tobytes())
    assert digest.hexdigest() == WEIGHTS_SHA256


def test_strict_load_and_a_missing_key(weights: dict) -> None:
    DepthAnythingV2Small(80.0).load_state_dict(weights, strict=True)
    partial = dict(weights)
    partial.pop("depth_head.scratch.output_conv2.2.bias")
    with pytest.raises(RuntimeError, match="Missing key"):
        DepthAnythingV2Small().load_state_dict(partial, strict=True)


@pytest.mark.parametrize("max_depth", [0.0, -1.0])
def test_max_depth_must_be_positive(max_depth: float) -> None:
    with pytest.raises(ValueError, match="max_depth"):
        DepthAnythingV2Small(max_depth)


# --- golden: preprocessing, torch network, output resize -----------------------------------


@pytest.mark.parametrize("case", CASES)
def test_preprocess_matches_golden_input(case: str, golden: dict) -> None:
    bgr = cv2.imread(str(DATA / f"{case}.png"))
    x = preprocess(bgr, 266)
    expected = golden[case]["input"]
    assert x.dtype == np.float32 and x.shape == expected.shape and x.flags.c_contiguous
    assert np.abs(x - expected).max() <= 1e-6  # float64 resize, as the reference


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("case", CASES)
def test_torch_network_matches_golden(case: str, head: str, golden: dict, models: dict) -> None:
    data = golden[case]
    net_key, final_key = KEYS[head]
    with torch.inference_mode():
        net = models[head](torch.from_numpy(data["input"])).numpy()
    assert net.dtype == np.float32
    assert_close(net, data[net_key], f"{case} {head} net")
    final = resize_output(net[0], data[final_key].shape)
    assert final.dtype == np.float32
    assert_close(final, data[final_key], f"{case} {head} final")


@pytest.mark.parametrize("case", CASES)
def test_resize_output_of_golden_net_matches_golden_final(case: str, golden: dict) -> None:
    data = golden[case]
    for net_key, final_key in KEYS.values():
        ours = resize_output(data[net_key], data[final_key].shape)  # [1, h, w] -> [H, W]
        assert_close(ours, data[final_key], f"{case} {final_key}")


# --- OpenVINO -------------------------------------------------------------------------------


@pytest.mark.parametrize("head", HEADS)
def test_openvino_dynamic_model_matches_golden(head: str, golden: dict, openvino_models: dict,
                                               compiled: dict) -> None:
    shape = openvino_models[head].inputs[0].get_partial_shape()
    assert shape[1].get_length() == 3 and all(shape[i].is_dynamic for i in (0, 2, 3))
    net_key, final_key = KEYS[head]
    for case in CASES:  # three input sizes through one compiled model
        data = golden[case]
        net = compiled[head](data["input"])[0]
        assert_close(net, data[net_key], f"{case} {head} openvino net")
        final = resize_output(net[0], data[final_key].shape)
        assert_close(final, data[final_key], f"{case} {head} openvino final")


def test_openvino_model_reshaped_to_static_sizes_matches_golden(golden: dict,
                                                                openvino_models: dict) -> None:
    for case in CASES:
        data = golden[case]
        static = openvino_models["relative"].clone()
        static.reshape({0: list(data["input"].shape)})
        assert static.inputs[0].get_partial_shape().is_static
        net = compile_f32(static)(data["input"])[0]
        assert_close(net, data["net"], f"{case} openvino static net")


def test_end_to_end_from_the_picture_with_openvino(golden: dict, compiled: dict) -> None:
    case = "case_portrait"
    bgr = cv2.imread(str(DATA / f"{case}.png"))
    depth = resize_output(compiled["metric"](preprocess(bgr, 266))[0][0], bgr.shape[:2])
    assert_close(depth, golden[case]["metric_final"], "picture to metric depth")


@pytest.mark.parametrize("shape", [(2, 3, 56, 84), (1, 3, 518, 518)])
def test_openvino_batch_and_square_native_size(shape: tuple, models: dict,
                                               compiled: dict) -> None:
    # 518x518 is the one size where the reference uses the position table unresized.
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    with torch.inference_mode():
        expected = models["relative"](torch.from_numpy(x)).numpy()
    assert_close(compiled["relative"](x)[0], expected, f"shape {shape}")


# --- the position-embedding resize ----------------------------------------------------------


@pytest.mark.parametrize("ph, pw", [(19, 25), (25, 19), (19, 34), (49, 37), (37, 49), (5, 80)])
def test_position_resize_is_dinov2_scale_factor_bicubic(ph: int, pw: int) -> None:
    table = torch.from_numpy(np.random.default_rng(1).normal(size=(1, 8, 37, 37)))
    table = table.to(torch.float32)
    expected = F.interpolate(table, scale_factor=((ph + 0.1) / 37, (pw + 0.1) / 37),
                             mode="bicubic", antialias=False)
    assert tuple(expected.shape[-2:]) == (ph, pw)
    wy, wx = dav2._position_matrices(torch.zeros(1, 1, ph, pw))
    ours = wy @ table[0] @ wx.T
    assert float((ours - expected[0]).abs().max()) <= 1e-5 * float(table.abs().max())


def test_position_table_is_unchanged_at_37_by_37() -> None:
    wy, wx = dav2._position_matrices(torch.zeros(1, 1, 37, 37))
    assert torch.equal(wy, torch.eye(37)) and torch.equal(wx, torch.eye(37))


def test_outputs_shapes_and_ranges(models: dict) -> None:
    x = torch.randn(2, 3, 28, 42)
    with torch.inference_mode():
        relative = models["relative"](x)
        metric = models["metric"](x)
    assert tuple(relative.shape) == tuple(metric.shape) == (2, 28, 42)
    assert float(relative.min()) >= 0.0
    assert 0.0 <= float(metric.min()) and float(metric.max()) <= 20.0
    with pytest.raises(ValueError, match="multiples of 14"):
        models["relative"](torch.zeros(1, 3, 28, 43))


# --- network_size and resize_output ---------------------------------------------------------


@pytest.mark.parametrize(
    "height, width, side, expected",
    [
        (480, 640, 266, (266, 350)),
        (480, 640, 518, (518, 686)),
        (360, 640, 266, (266, 476)),
        (640, 480, 266, (350, 266)),
        (640, 480, 518, (686, 518)),
        (518, 518, 518, (518, 518)),
        (1000, 1000, 518, (518, 518)),
        (100, 100, 266, (266, 266)),
        (266, 357, 266, (266, 364)),  # 25.5 patches: halves to even (26)
        (266, 371, 266, (266, 364)),  # 26.5 patches: halves to even (26), not 27
        (510, 600, 510, (518, 602)),  # 510 rounds to 504 < 510: ceil to 518
        (1080, 1920, 518, (518, 924)),
        (1, 1000, 14, (14, 14000)),
    ],
)
def test_network_size(height: int, width: int, side: int, expected: tuple[int, int]) -> None:
    assert network_size(height, width, side) == expected


def test_network_size_is_a_multiple_of_14_and_at_least_side() -> None:
    rng = np.random.default_rng(2)
    for height, width, side in rng.integers(14, 3000, size=(300, 3)):
        h, w = network_size(int(height), int(width), int(side))
        assert h % 14 == 0 and w % 14 == 0 and h >= side and w >= side


@pytest.mark.parametrize("args", [(0, 10, 14), (10, -1, 14), (10, 10, 0), (10, 10, 13)])
def test_network_size_rejects_bad_sizes(args: tuple[int, int, int]) -> None:
    with pytest.raises(ConfigError):
        network_size(*args)


@pytest.mark.parametrize("src, dst", [((266, 350), (480, 640)), ((19, 25), (7, 300)),
                                      ((350, 266), (640, 480)), ((1, 5), (3, 9))])
def test_resize_output_is_torch_bilinear_align_corners(src: tuple, dst: tuple) -> None:
    net = np.random.default_rng(3).normal(size=(2, *src)).astype(np.float32)
    expected = F.interpolate(torch.from_numpy(net)[:, None], dst, mode="bilinear",
                             align_corners=True)[:, 0].numpy()
    ours = np.stack([resize_output(one, dst) for one in net])
    assert ours.dtype == np.float32 and ours.shape == expected.shape
    assert np.abs(ours - expected).max() <= 1e-6 * np.abs(expected).max()
