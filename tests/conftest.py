"""Shared fixtures: synthetic MiDaS small weights and caches kept apart from the user's.

Helpers that are not fixtures live in the ``support`` package (``tests/support``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from support.fakes import cheap_estimator
from support.weights import synthetic_torch_state_dict


@pytest.fixture(scope="session")
def state_dict() -> dict:
    """Synthetic weights (seed 0, as the golden data) as a dict of torch tensors."""
    return synthetic_torch_state_dict(0)


@pytest.fixture(scope="session")
def weights_file(state_dict: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic weights saved as a ``.pt`` checkpoint file."""
    path = tmp_path_factory.mktemp("weights") / "midas_v21_small_256.pt"
    torch.save(state_dict, path)
    return path


@pytest.fixture(scope="session")
def dav2_weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic Depth Anything V2 Small weights (seed 7, as its golden data) as a file.

    Relative and metric checkpoints share their keys: one file serves all three models.
    """
    from support.dav2_weights import synthetic_torch_state_dict as dav2_state_dict

    path = tmp_path_factory.mktemp("weights") / "dav2_synthetic.pth"
    torch.save(dav2_state_dict(7), path)
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


@pytest.fixture
def cheap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replace the network with the cheap test double (``support.fakes.cheap_estimator``)."""
    monkeypatch.setattr("stream.engines.estimator.create_estimator",
                        lambda *a, **k: cheap_estimator())


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail if the network is made: user mistakes must be reported before that."""
    def create(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the inputs and outputs were checked")

    monkeypatch.setattr("stream.engines.estimator.create_estimator", create)
