"""Shared fixtures: synthetic MiDaS small weights (official keys and shapes, seeded values)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))

from synthetic_weights import synthetic_state_dict  # noqa: E402

DATA = TESTS / "data"
CASES = ("case_4x3", "case_16x9", "case_portrait")


@pytest.fixture(scope="session")
def state_dict() -> dict:
    """Synthetic weights (seed 0, as the golden data) as a dict of torch tensors."""
    return {k: torch.from_numpy(v) for k, v in synthetic_state_dict(0).items()}


@pytest.fixture(scope="session")
def weights_file(state_dict: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic weights saved as a ``.pt`` checkpoint file."""
    path = tmp_path_factory.mktemp("weights") / "midas_v21_small_256.pt"
    torch.save(state_dict, path)
    return path


@pytest.fixture(scope="session")
def _model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One OpenVINO model cache for the session (a conversion takes seconds)."""
    return tmp_path_factory.mktemp("depthstream_cache")


@pytest.fixture(autouse=True)
def _no_real_weights(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, _model_cache: Path) -> None:
    """Keep tests away from a user's real caches and env, and from the network."""
    monkeypatch.setenv("DEPTHSTREAM_CACHE", str(_model_cache))
    monkeypatch.delenv("DEPTHSTREAM_WEIGHTS", raising=False)
    monkeypatch.setenv("DEPTHSTREAM_WEIGHTS_URL", "http://127.0.0.1:9/unreachable.pt")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
