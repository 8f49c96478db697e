"""MidasSmall: checkpoint schema and golden outputs of the reference implementation."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from support.golden import CASES, DATA

from stream.models.midas import MidasSmall
from stream.models.transforms import preprocess, resize_depth
from stream.models.weights import MIDAS_SMALL


@pytest.fixture(scope="module")
def model(state_dict: dict) -> MidasSmall:
    m = MidasSmall().eval()
    m.load_state_dict(state_dict, strict=True)
    return m


def test_state_dict_matches_official_schema_exactly() -> None:
    golden = {k: tuple(s) for k, s, _ in json.loads((DATA / "schema.json").read_text())}
    ours = {k: tuple(v.shape) for k, v in MidasSmall().state_dict().items()}
    assert ours == golden
    assert len(golden) == 482
    assert sum(int(np.prod(s)) for k, s in golden.items()
               if not k.endswith("num_batches_tracked")) == 21_394_657


def test_packaged_schema_equals_golden_schema() -> None:
    golden = [(k, tuple(s), d) for k, s, d in json.loads((DATA / "schema.json").read_text())]
    assert MIDAS_SMALL.schema() == golden


def test_strict_load_rejects_a_missing_key(state_dict: dict) -> None:
    partial = dict(state_dict)
    partial.pop("scratch.output_conv.4.bias")
    with pytest.raises(RuntimeError, match="Missing key"):
        MidasSmall().load_state_dict(partial, strict=True)


@pytest.mark.parametrize("case", CASES)
def test_golden_case(case: str, model: MidasSmall) -> None:
    golden = np.load(DATA / f"{case}.npz")
    assert int(golden["weights_seed"]) == 0
    rgb = cv2.cvtColor(cv2.imread(str(DATA / f"{case}.png")), cv2.COLOR_BGR2RGB)

    x = preprocess(rgb)
    assert x.dtype == torch.float32 and tuple(x.shape) == golden["input"].shape
    assert np.abs(x.numpy() - golden["input"]).max() <= 1e-5

    with torch.inference_mode():
        net = model(torch.from_numpy(golden["input"])).numpy()
    assert net.shape == golden["net"].shape
    assert np.abs(net - golden["net"]).max() <= 1e-4 * np.abs(golden["net"]).max()

    final = resize_depth(torch.from_numpy(golden["net"]), rgb.shape[:2])
    assert final.dtype == np.float32 and final.shape == golden["final"].shape
    assert np.abs(final - golden["final"]).max() <= 1e-4 * np.abs(golden["final"]).max()


def test_end_to_end_from_picture_matches_golden(model: MidasSmall) -> None:
    golden = np.load(DATA / "case_4x3.npz")
    rgb = cv2.cvtColor(cv2.imread(str(DATA / "case_4x3.png")), cv2.COLOR_BGR2RGB)
    with torch.inference_mode():
        final = resize_depth(model(preprocess(rgb)), rgb.shape[:2])
    assert np.abs(final - golden["final"]).max() <= 1e-4 * np.abs(golden["final"]).max()


def test_output_is_non_negative_and_batched(model: MidasSmall) -> None:
    x = torch.randn(2, 3, 64, 96)
    with torch.inference_mode():
        out = model(x)
    assert tuple(out.shape) == (2, 64, 96)
    assert float(out.min()) >= 0.0
