"""Tests for stream.engines.cache: where the cache lives and what keys its entries."""

from __future__ import annotations

import sys
from pathlib import Path

import openvino
import pytest

from engines.conftest import ConvertCalled, refuse_convert
from stream.engines import cache as model_cache
from stream.engines.cache import ENV_CACHE, default_cache_dir
from stream.engines.openvino_backend import OpenVinoBackend
from stream.models.registry import DAV2_METRIC_INDOOR_SPEC, DAV2_SMALL_SPEC, MIDAS_SMALL_SPEC

pytestmark = pytest.mark.usefixtures("cache_env")


def test_cache_is_keyed_by_weights(
    ov_backend: OpenVinoBackend, state_dict: dict, cache_root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    other = dict(state_dict)
    key = "scratch.output_conv.4.bias"
    other[key] = state_dict[key] + 1.0
    root = cache_root / "openvino"
    source = model_cache.CheckpointId.from_state_dict(state_dict)
    mine = model_cache.fp32_entry(source, MIDAS_SMALL_SPEC, root)
    assert mine == ov_backend.cache_entry
    assert mine.path.name.startswith("midas-small-")
    assert model_cache.fp32_entry(model_cache.CheckpointId.from_state_dict(other),
                                  MIDAS_SMALL_SPEC, root) != mine
    # The same weights run as another network (a relative and a metric head) never share.
    assert model_cache.fp32_entry(source, DAV2_SMALL_SPEC, root) != mine
    assert (model_cache.fp32_entry(source, DAV2_SMALL_SPEC, root)
            != model_cache.fp32_entry(source, DAV2_METRIC_INDOOR_SPEC, root))
    # Another OpenVINO release gets its own entry.
    with monkeypatch.context() as m:
        m.setattr(model_cache, "package_version",
                  lambda name: "2099.1.0" if name == "openvino" else "1")
        assert model_cache.fp32_entry(source, MIDAS_SMALL_SPEC,
                                      root).path.name != mine.path.name
    # Different weights must not be served the cached model of the first ones.
    monkeypatch.setattr(openvino, "convert_model", refuse_convert)
    with pytest.raises(ConvertCalled):
        OpenVinoBackend(other, cache_dir=cache_root / "openvino")


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(ENV_CACHE, str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv(ENV_CACHE)
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert default_cache_dir() == tmp_path / "xdg" / "depthstream"
    assert default_cache_dir().name in ("depthstream", "Cache")
