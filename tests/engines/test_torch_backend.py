"""Tests for stream.engines.torch_backend: golden outputs, in-order ``imap``, the GPU."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from engines.conftest import CASES, assert_close
from stream.engines.factory import create_backend
from stream.engines.torch_backend import TorchBackend

pytestmark = pytest.mark.usefixtures("cache_env")


@pytest.fixture(scope="module")
def torch_backend(state_dict: dict) -> Iterator[TorchBackend]:
    with TorchBackend(state_dict) as backend:
        yield backend


@pytest.mark.parametrize("case", CASES)
def test_torch_matches_golden(torch_backend: TorchBackend, golden: dict, case: str) -> None:
    x, net = golden[case]
    assert_close(torch_backend.infer(x), net)


def test_torch_imap_keeps_order_and_tags(torch_backend: TorchBackend, golden: dict) -> None:
    items = [(("frame", n), golden[case][0]) for n, case in enumerate(CASES)]
    results = list(torch_backend.imap(items))
    assert [tag for tag, _ in results] == [("frame", n) for n in range(len(CASES))]
    for (_, out), case in zip(results, CASES):
        assert_close(out, golden[case][1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
@pytest.mark.parametrize("case", CASES)
def test_cuda_auto_is_torch_on_the_gpu(state_dict: dict, golden: dict, case: str) -> None:
    with create_backend("auto", state_dict, device="cuda") as backend:
        assert isinstance(backend, TorchBackend) and backend.device == "cuda"
        x, net = golden[case]
        assert_close(backend.infer(x), net)
