"""Tests for stream.engines.factory: what ``create_backend`` picks, falls back to, refuses."""

from __future__ import annotations

import sys
from pathlib import Path

import openvino
import pytest
import torch

from engines.conftest import assert_close, refuse_convert
from stream.core.errors import ConfigError
from stream.engines.cache import ENV_CACHE
from stream.engines.factory import create_backend
from stream.engines.openvino_backend import OpenVinoBackend
from stream.engines.torch_backend import TorchBackend

pytestmark = pytest.mark.usefixtures("cache_env")


def test_auto_picks_openvino_on_cpu_and_uses_the_env_cache(
    ov_backend: OpenVinoBackend, state_dict: dict, golden: dict,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(openvino, "convert_model", refuse_convert)  # $DEPTHSTREAM_CACHE hit
    with create_backend("auto", state_dict, live=True, threads=2) as backend:
        assert isinstance(backend, OpenVinoBackend)
        assert backend.live and backend.threads == 2
        assert backend.cache_entry == ov_backend.cache_entry
        x, net = golden["case_4x3"]
        assert_close(backend.infer(x), net)


def test_auto_falls_back_to_torch_without_openvino(
    state_dict: dict, golden: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # makes `import openvino` fail
    with create_backend("auto", state_dict) as backend:
        assert isinstance(backend, TorchBackend)
        x, net = golden["case_4x3"]
        assert_close(backend.infer(x), net)
    with pytest.raises(ConfigError, match="openvino cannot be imported"):
        create_backend("openvino", state_dict)


def test_auto_falls_back_to_torch_when_openvino_fails(
    state_dict: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_CACHE, str(tmp_path))  # empty cache: a conversion is needed

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no CPU plugin")

    monkeypatch.setattr(openvino, "convert_model", broken)
    with create_backend("auto", state_dict) as backend:
        assert isinstance(backend, TorchBackend)
    with pytest.raises(RuntimeError, match="no CPU plugin"):  # asked for by name: no fallback
        create_backend("openvino", state_dict)


@pytest.mark.parametrize(
    ("name", "device", "match"),
    [
        ("tensorrt", "cpu", "unknown backend"),
        ("torch", "tpu", "unknown device"),
        ("auto", "gpu", "unknown device"),
        ("openvino", "cuda", "runs on the cpu"),
    ],
)
def test_bad_settings_are_config_errors(
    state_dict: dict, name: str, device: str, match: str
) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        create_backend(name, state_dict, device=device)
    assert "\n" not in str(info.value)


def test_missing_state_dict_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="state dict"):
        create_backend("torch", None)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")
@pytest.mark.parametrize("name", ["auto", "torch"])
def test_cuda_without_gpu_is_a_one_line_config_error(state_dict: dict, name: str) -> None:
    with pytest.raises(ConfigError, match="no CUDA GPU") as info:
        create_backend(name, state_dict, device="cuda")
    assert "\n" not in str(info.value)
