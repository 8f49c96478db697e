"""The wheel: built from the checkout, installed into a fresh venv, run from another folder.

The fresh venv reuses the test venv's installed packages (torch, OpenVINO, ...) through a
``.pth`` line, without the editable install of this checkout, so what runs is the wheel's
own copy of the package: no ``samples/`` folder, no top-level ``cli`` module. Needs no
network (the wheel is built without build isolation, from the test venv's setuptools).
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from support.clips import make_clip

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out), str(ROOT)], check=True, capture_output=True,
                   timeout=300)
    (path,) = out.glob("depthstream-*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed; returns its ``bin`` folder."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.create(env_dir, with_pip=False)
    bin_dir = env_dir / "bin"
    py = bin_dir / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], check=True, capture_output=True,
                          text=True).stdout.strip()
    # The test venv's packages, as a plain path: its own .pth files (the editable
    # install of this checkout among them) are not run.
    (Path(site) / "test_venv_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps",
                    "-q", str(wheel)], check=True, capture_output=True, timeout=300)
    return bin_dir


def test_the_wheel_holds_the_package_and_nothing_beside_it(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"stream", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1]
                   + ".dist-info"}
    assert "stream/cli.py" in names and "cli.py" not in names
    assert "stream/models/depth_anything_v2_vits.schema.json" in names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "depthstream = stream.__main__:run" in zipfile.ZipFile(wheel).read(entry).decode()
    metadata = next(n for n in names if n.endswith("METADATA"))
    assert "License-Expression: MIT" in zipfile.ZipFile(wheel).read(metadata).decode()


@pytest.mark.slow
def test_the_installed_command_runs_from_another_folder(installed: Path, weights_file: Path,
                                                        tmp_path: Path) -> None:
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["DEPTHSTREAM_CACHE"] = str(tmp_path / "cache")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(installed / "depthstream"), *args], cwd=work, env=env,
                              capture_output=True, text=True, timeout=600)

    probe = "import stream; print(stream.__file__)"
    where = subprocess.run([str(installed / "python"), "-c", probe], cwd=work, env=env,
                           capture_output=True, text=True, check=True)
    assert str(ROOT) not in where.stdout  # the wheel's copy, not this checkout
    assert run("--help").returncode == 0
    cv2.imwrite(str(work / "pic.png"), np.random.default_rng(0).integers(
        0, 255, (48, 64, 3), dtype=np.uint8))
    result = run("image", "pic.png", "--weights", str(weights_file))
    assert result.returncode == 0, result.stderr
    assert (work / "pic_depth.png").is_file()
    clip = make_clip(work / "clip.mp4", 6, audio=False)
    result = run("convert", "clip.mp4", "-o", "out.mp4", "--precision", "int8", "--weights",
                 str(weights_file), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert (work / "out.mp4").is_file() and clip.is_file()
