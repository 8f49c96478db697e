"""Shared by the backend tests: the golden data, one OpenVINO conversion, and helpers.

The fixtures are package-scoped so that the one real conversion (``ov_backend``, seconds)
serves ``test_openvino_backend``, ``test_factory``, ``test_cache`` and ``test_base``
alike. ``cache_env`` is not autouse (it would move the model cache of every test in this
folder): the modules that want it say ``pytestmark = pytest.mark.usefixtures("cache_env")``.
The plain helpers are imported as ``from engines.conftest import ...``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from stream.engines.cache import ENV_CACHE
from stream.engines.openvino_backend import OpenVinoBackend

DATA = Path(__file__).parents[1] / "data"
CASES = ("case_4x3", "case_16x9", "case_portrait")  # 192x256, 128x256, 256x192


class ConvertCalled(Exception):
    """Raised by a stand-in ``openvino.convert_model``: proves a conversion was attempted."""


def refuse_convert(*args: object, **kwargs: object) -> None:
    raise ConvertCalled


def assert_close(out: np.ndarray, golden: np.ndarray) -> None:
    """The issue's tolerance: ``max|out - golden| <= 1e-4 * max|golden|``."""
    assert out.shape == golden.shape
    assert out.dtype == np.float32
    err = float(np.abs(out - golden).max())
    assert err <= 1e-4 * float(np.abs(golden).max()), err


@pytest.fixture(scope="package")
def golden() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{case: (input [1, 3, h, w], net [h, w])}`` from the golden files."""
    out = {}
    for case in CASES:
        with np.load(DATA / f"{case}.npz") as d:
            out[case] = (d["input"], d["net"][0])
    return out


@pytest.fixture(scope="package")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``$DEPTHSTREAM_CACHE`` for the backend tests; OpenVINO models go in ``<root>/openvino``."""
    return tmp_path_factory.mktemp("depthstream_cache")


@pytest.fixture
def cache_env(monkeypatch: pytest.MonkeyPatch, cache_root: Path) -> None:
    monkeypatch.setenv(ENV_CACHE, str(cache_root))


@pytest.fixture(scope="package")
def ov_backend(state_dict: dict, cache_root: Path) -> Iterator[OpenVinoBackend]:
    """The one real conversion most tests share (it fills ``cache_root``)."""
    with OpenVinoBackend(state_dict, cache_dir=cache_root / "openvino") as backend:
        yield backend
