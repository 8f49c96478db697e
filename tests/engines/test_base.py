"""Tests for the stream.engines.base contract that every backend keeps: closing."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.core.errors import StreamError
from stream.engines.openvino_backend import OpenVinoBackend
from stream.engines.torch_backend import TorchBackend

pytestmark = pytest.mark.usefixtures("cache_env")


@pytest.mark.parametrize("make", ["torch", "openvino"])
def test_close_twice_then_infer_is_an_error(
    make: str, ov_backend: OpenVinoBackend, state_dict: dict, cache_root: Path, golden: dict
) -> None:
    backend = (TorchBackend(state_dict) if make == "torch"
               else OpenVinoBackend(state_dict, cache_dir=cache_root / "openvino"))
    backend.close()
    backend.close()
    with pytest.raises(StreamError, match="closed"):
        backend.infer(golden["case_4x3"][0])

