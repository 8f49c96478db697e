"""Every command with every model: the real networks on synthetic weights, small inputs.

MiDaS v2.1 small and the three Depth Anything V2 Small models (relative, metric indoor,
metric outdoor) each run ``image``, ``convert`` and ``live --file`` through the default
engine (OpenVINO, converted once per model into the session's model cache), and ``info``
reports each model's cache. Inputs are small (``--input-size``) so the transformer runs
in well under a second per frame here; the outputs are checked for what each model's
kind promises (metres within the model's range, relative depth with a real spread).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from support.clips import make_clip

from stream.cli import main
from stream.models.registry import MODELS

SMALL_INPUT = {"midas-small": "64", "dav2-small": "56", "dav2-metric-indoor": "56",
               "dav2-metric-outdoor": "56"}


@pytest.fixture
def weights(request: pytest.FixtureRequest, weights_file: Path) -> dict[str, Path]:
    dav2 = request.getfixturevalue("dav2_weights_file")
    return {name: weights_file if name == "midas-small" else dav2 for name in MODELS}


def _args(model: str, weights: dict[str, Path]) -> list[str]:
    return ["--model", model, "--weights", str(weights[model]), "--input-size",
            SMALL_INPUT[model]]


def _check_depth(model: str, depth: np.ndarray) -> None:
    spec = MODELS[model]
    assert np.isfinite(depth).all()
    if spec.metric:
        assert 0.0 <= float(depth.min()) and float(depth.max()) <= spec.max_depth
    assert float(depth.max()) > float(depth.min())  # a real map, not a constant


@pytest.mark.parametrize("model", list(MODELS))
def test_image_with_every_model(model: str, weights: dict[str, Path], tmp_path: Path) -> None:
    picture = tmp_path / "pic.png"
    rng = np.random.default_rng(0)
    cv2.imwrite(str(picture), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    assert main(["image", str(picture), "-o", str(tmp_path / "out.png"), "--raw",
                 *_args(model, weights)]) == 0
    colour = cv2.imread(str(tmp_path / "out.png"))
    assert colour.shape == (48, 64, 3)
    _check_depth(model, np.load(tmp_path / "out_depth16.npy"))


@pytest.mark.parametrize("model", list(MODELS))
def test_convert_with_every_model(model: str, weights: dict[str, Path], tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "in.mp4", 4, size_wh=(64, 48), audio=False)
    raw = tmp_path / "raw"
    assert main(["convert", str(clip), "-o", str(tmp_path / "out.mp4"), "--raw", str(raw),
                 "--raw-format", "npy", "--no-progress", *_args(model, weights)]) == 0
    frames = sorted(raw.glob("depth_*.npy"))
    assert len(frames) == 4
    for path in frames:
        _check_depth(model, np.load(path))
    header = (raw / "timestamps.csv").read_text().splitlines()[0]
    assert header == ("index,seconds,min_m,max_m,scale" if MODELS[model].metric
                      else "index,seconds,lo,hi,scale")


@pytest.mark.parametrize("model", ["dav2-small", "dav2-metric-outdoor"])
def test_live_file_with_depth_anything(model: str, weights: dict[str, Path],
                                       tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "in.mp4", 4, size_wh=(64, 48), audio=False)
    out = tmp_path / "live.mp4"
    assert main(["live", "--file", str(clip), "--no-window", "-o", str(out),
                 *_args(model, weights)]) == 0
    import av

    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) >= 1


@pytest.mark.parametrize("model", ["dav2-small", "dav2-metric-indoor"])
def test_info_reports_each_model(model: str, weights: dict[str, Path], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--model", model, "--weights", str(weights[model]), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == model
    assert report["output"] == MODELS[model].output.value
    assert main(["info", "--model", model, "--weights", str(weights[model])]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    kind = "depth in metres" if MODELS[model].metric else "relative inverse depth"
    assert first.split() == ["model:", model, *f"({kind})".split()]


@pytest.mark.parametrize("name", ["midas_v21_small_256.pt", "renamed.pt"])
def test_the_midas_checkpoint_for_depth_anything_says_which_it_is(
        name: str, weights: dict[str, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    # By its official name, or by its keys when renamed: one line that names the model.
    given = tmp_path / name
    shutil.copy(weights["midas-small"], given)
    picture = tmp_path / "pic.png"
    cv2.imwrite(str(picture), np.zeros((32, 32, 3), np.uint8))
    code = main(["image", str(picture), "-o", str(tmp_path / "o.png"), "--model", "dav2-small",
                 "--weights", str(given), "--backend", "torch"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "MiDaS v2.1 small checkpoint (--model midas-small)" in err[0]
