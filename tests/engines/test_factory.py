"""Tests for stream.engines.factory: what ``create_backend`` picks, falls back to, refuses."""

from __future__ import annotations

import contextlib
import importlib.abc
import logging
import signal
import sys
import time
from pathlib import Path

import openvino
import pytest
import torch

from engines.conftest import assert_close, refuse_convert
from stream.core.errors import ConfigError, StreamError
from stream.engines.cache import ENV_CACHE
from stream.engines.factory import FALLBACKS, create_backend
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


def test_auto_falls_back_to_torch_without_openvino_and_says_so(
    state_dict: dict, golden: dict, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # makes `import openvino` fail
    with caplog.at_level(logging.WARNING), create_backend("auto", state_dict) as backend:
        assert isinstance(backend, TorchBackend)
        x, net = golden["case_4x3"]
        assert_close(backend.infer(x), net)
    said = [r.getMessage() for r in caplog.records if "using torch" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith(FALLBACKS["import"]), said
    with pytest.raises(ConfigError, match="openvino cannot be imported"):
        create_backend("openvino", state_dict)


def _no_cpu_plugin(*args: object, **kwargs: object) -> None:
    raise RuntimeError("no CPU plugin")


def _no_torch(*args: object, **kwargs: object) -> None:
    raise AssertionError("fell back to torch")


def test_auto_falls_back_only_where_the_cpu_plugin_cannot_run(
    state_dict: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.setenv(ENV_CACHE, str(tmp_path))  # empty cache: a conversion is needed
    monkeypatch.setattr(openvino, "convert_model", _no_cpu_plugin)
    monkeypatch.setattr(openvino.Core, "available_devices", property(lambda self: ["GPU"]))
    with create_backend("auto", state_dict, progress=True) as backend:
        assert isinstance(backend, TorchBackend)
    lines = capsys.readouterr().err.strip().splitlines()
    said = [line for line in lines if "using torch" in line]
    assert said == [f"depthstream: warning: {FALLBACKS['cpu']} (no CPU plugin); using torch "
                    "(slower)"], lines
    with pytest.raises(RuntimeError, match="no CPU plugin"):  # asked for by name: no fallback
        create_backend("openvino", state_dict)


def test_auto_stops_with_one_line_when_openvino_fails_otherwise(
    state_dict: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No silent swap: a CPU OpenVINO runs on, failing for a reason torch would not fix."""
    monkeypatch.setenv(ENV_CACHE, str(tmp_path))
    monkeypatch.setattr(openvino, "convert_model", _no_cpu_plugin)

    monkeypatch.setattr("stream.engines.factory.TorchBackend", _no_torch)
    with pytest.raises(StreamError) as info:
        create_backend("auto", state_dict)
    assert str(info.value) == ("OpenVINO failed: no CPU plugin (--backend torch runs "
                               "without it)")


def _interrupted_inside(kind: str):
    """An OpenVINO step that gets Ctrl+C and reports it as a C++ layer does."""
    def step(*args: object, **kwargs: object) -> None:
        try:
            signal.raise_signal(signal.SIGINT)
            time.sleep(1.0)  # the handler runs here
        except KeyboardInterrupt as exc:
            if kind == "import":  # pybind11: an interrupted module init is an ImportError
                raise ImportError("initialization failed") from exc
            raise RuntimeError("Exception from the frontend: conversion failed") from None
        raise AssertionError("SIGINT did not interrupt")

    return step


@pytest.mark.parametrize("kind", ["import", "convert"])
def test_an_interrupt_that_openvino_turns_into_an_error_is_never_a_fallback(
    state_dict: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str,
) -> None:
    monkeypatch.setenv(ENV_CACHE, str(tmp_path))
    monkeypatch.setattr("stream.engines.factory.TorchBackend", _no_torch)
    if kind == "import":
        monkeypatch.setattr("stream.engines.factory.import_openvino", _interrupted_inside(kind))
    else:
        monkeypatch.setattr(openvino, "convert_model", _interrupted_inside(kind))
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            create_backend("auto", state_dict)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
    finally:
        signal.signal(signal.SIGINT, previous)


def test_an_interrupt_that_an_engine_swallows_still_stops(
    state_dict: dict, monkeypatch: pytest.MonkeyPatch,
) -> None:
    made = []

    class Swallows:
        def __init__(self, *args: object, **kwargs: object) -> None:
            made.append(self)
            self.closed = False
            with contextlib.suppress(KeyboardInterrupt):  # a library that goes on
                signal.raise_signal(signal.SIGINT)
                time.sleep(1.0)

        def close(self) -> None:
            self.closed = True

    monkeypatch.setattr("stream.engines.factory.OpenVinoBackend", Swallows)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            create_backend("openvino", state_dict)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert len(made) == 1 and made[0].closed


class _Mismatched(importlib.abc.MetaPathFinder):
    """``import stream.models.midas`` fails as it does when torchvision's ops do not load."""

    def find_spec(self, name: str, path: object, target: object = None) -> None:
        if name == "stream.models.midas":
            raise RuntimeError("operator torchvision::nms does not exist")


@pytest.mark.parametrize("name", ["auto", "torch", "openvino"])
def test_torch_and_torchvision_that_do_not_match_are_named_with_the_fix(
    state_dict: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv(ENV_CACHE, str(tmp_path))  # empty cache: OpenVINO builds the network
    monkeypatch.delitem(sys.modules, "stream.models.midas", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_Mismatched(), *sys.meta_path])
    with pytest.raises(ConfigError) as info:
        create_backend(name, state_dict)
    message = str(info.value)
    assert message.startswith("torch and torchvision do not match (torch ")
    assert "operator torchvision::nms does not exist" in message
    assert "pip install --force-reinstall torch torchvision" in message and "\n" not in message
    assert "OpenVINO" not in caplog.text  # not blamed on OpenVINO


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
