"""Warm start: a cached OpenVINO model is found without torch, timm or a rebuild.

A changed checkpoint file (new size or time, so a new hash) finds neither the fp32 nor
the int8 entry of the old one. Process-level checks run the real CLI in a child process
and read its ``sys.modules``, so this process's imports cannot hide an import there.
"""

from __future__ import annotations

import importlib.abc
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import openvino
import pytest
import torch
from support.clips import make_clip

from stream.core.errors import WeightsError
from stream.engines import cache as model_cache
from stream.engines import quantize
from stream.engines.base import default_threads
from stream.engines.cache import fingerprint, fp32_entry, int8_entry
from stream.engines.estimator import create_estimator
from stream.engines.factory import create_backend
from stream.engines.openvino_backend import OpenVinoBackend
from stream.models.registry import MIDAS_SMALL_SPEC

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "timm", "nncf", "torchvision")

# Runs cli.main in a child process and reports which heavy modules it imported.
RUNNER = """
import json, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.path.insert(0, {root!r})
import stream.cli as cli
code = cli.main(sys.argv[1:])
print(json.dumps({{"code": code, "heavy": [m for m in {heavy!r} if m in sys.modules]}}))
"""


class _Converted(Exception):
    """Raised by a stand-in ``openvino.convert_model``."""


def _refuse_convert(*args: object, **kwargs: object) -> None:
    raise _Converted


@pytest.fixture(scope="module")
def warm(weights_file: Path, _model_cache: Path,
         tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The synthetic checkpoint converted once into the session's cache (by file)."""
    folder = tmp_path_factory.mktemp("warm")
    weights = folder / "midas_v21_small_256.pt"
    shutil.copy(weights_file, weights)
    OpenVinoBackend(weights=weights, cache_dir=_model_cache / "openvino").close()
    return {"weights": weights, "cache": _model_cache, "folder": folder}


def _run_cli(args: list[str], cache: Path, tmp_path: Path, timeout_s: float = 300) -> dict:
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER.format(root=str(ROOT), heavy=HEAVY))
    env = dict(os.environ, DEPTHSTREAM_CACHE=str(cache))
    done = subprocess.run([sys.executable, str(runner), *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=timeout_s,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["stderr"] = done.stderr
    return result


def test_image_with_a_cached_model_imports_neither_torch_nor_timm(warm: dict,
                                                                  tmp_path: Path) -> None:
    out = tmp_path / "depth.png"
    result = _run_cli(["image", str(ROOT / "samples" / "coffee.jpg"), "-o", str(out),
                       "--weights", str(warm["weights"])], warm["cache"], tmp_path)
    assert result["code"] == 0 and out.is_file()
    assert result["heavy"] == []
    assert "preparing" not in result["stderr"]  # nothing was converted


@pytest.mark.parametrize("command", ["convert", "live"])
def test_video_commands_with_a_cached_model_import_neither_torch_nor_timm(
    warm: dict, tmp_path: Path, command: str
) -> None:
    clip = make_clip(tmp_path / "in.mp4", 6, size_wh=(96, 64))
    out = tmp_path / "out.mp4"
    args = (["convert", str(clip), "-o", str(out), "--no-progress"] if command == "convert"
            else ["live", "--file", str(clip), "--no-window", "-o", str(out)])
    result = _run_cli([*args, "--weights", str(warm["weights"]), "--precision", "fp32"],
                      warm["cache"], tmp_path)
    assert result["code"] == 0 and out.is_file()
    assert result["heavy"] == []


def test_a_missing_cached_model_converts_and_says_so_once(weights_file: Path,
                                                          tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    out = tmp_path / "a.png"
    args = ["image", str(ROOT / "samples" / "chelsea.jpg"), "-o", str(out), "--overwrite",
            "--weights", str(weights_file)]
    first = _run_cli(args, cache, tmp_path)
    assert "torch" in first["heavy"]  # converting needs the network in torch
    lines = [line for line in first["stderr"].splitlines() if "preparing" in line]
    assert lines == [f"depthstream: preparing MiDaS v2.1 small for this CPU, once "
                     f"(cached in {cache / 'openvino'})"]
    second = _run_cli(args, cache, tmp_path)
    assert second["heavy"] == [] and "preparing" not in second["stderr"]
    assert list((cache / "openvino" / "compiled").iterdir())  # OpenVINO's blob cache


def test_fingerprint_hashes_only_a_changed_file(warm: dict, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    weights = tmp_path / "w.pt"
    shutil.copy(warm["weights"], weights)
    root = tmp_path / "cache"
    first = fingerprint(weights, root)
    assert json.loads((root / "checkpoints.json").read_text())[str(weights.resolve())][
        "sha256"] == first.digest

    def no_hash(path: Path) -> str:
        raise AssertionError("hashed an unchanged file")

    monkeypatch.setattr(model_cache, "_hash_file", no_hash)
    assert fingerprint(weights, root) == first
    monkeypatch.undo()
    # Same bytes, new time: hashed again, same id. New bytes: a new id.
    os.utime(weights, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert fingerprint(weights, root).digest == first.digest
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert fingerprint(weights, root).digest != first.digest


def test_a_changed_checkpoint_finds_neither_cached_model(
    warm: dict, tmp_path: Path, state_dict: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = tmp_path / "midas_v21_small_256.pt"
    shutil.copy(warm["weights"], weights)
    root = warm["cache"] / "openvino"
    old = fingerprint(weights, root)
    assert fp32_entry(old, MIDAS_SMALL_SPEC, root).exists()  # the same bytes as the warm checkpoint
    # a fake int8 entry for the old file, checked and faster on this machine: a real one
    # is made in tests/engines/test_quantize.py
    recipe = quantize.recipe_for(MIDAS_SMALL_SPEC).digest()
    fake_int8 = int8_entry(old, MIDAS_SMALL_SPEC, recipe, root)
    shutil.copytree(fp32_entry(old, MIDAS_SMALL_SPEC, root).path, fake_int8.path,
                    dirs_exist_ok=True)
    speed = quantize.Speed(60.0, 30.0, MIDAS_SMALL_SPEC.example_shape(),
                           quantize.machine_id(default_threads()), 5)
    (fake_int8.path / "meta.json").write_text(json.dumps(
        {"self_check": quantize.Agreement(0.0, 1.0, 0.0, 1.0, 10).to_dict(),
         "speed": speed.to_dict()}))
    with create_backend("openvino", weights=weights, precision="auto") as backend:
        assert backend.precision == "int8"  # the old file finds both entries
    changed = dict(state_dict)
    changed["scratch.output_conv.4.bias"] = state_dict["scratch.output_conv.4.bias"] + 1.0
    torch.save(changed, weights)  # rewritten in place: new time and bytes
    new = fingerprint(weights, root)
    assert new.digest != old.digest
    assert new.weights is None  # unknown until the file is loaded again
    monkeypatch.setattr(openvino, "convert_model", _refuse_convert)
    with pytest.raises(_Converted):  # not served the old model: loaded and converted again
        create_backend("openvino", weights=weights, precision="auto")
    new = fingerprint(weights, root)
    assert new.weights is not None and new.weights != old.weights
    assert not fp32_entry(new, MIDAS_SMALL_SPEC, root).exists()
    assert not int8_entry(new, MIDAS_SMALL_SPEC, recipe, root).exists()
    shutil.rmtree(fake_int8.path)


def test_a_missing_weights_file_is_a_weights_error_before_anything_loads(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not found") as info:
        create_estimator(str(tmp_path / "nope.pt"))
    assert "\n" not in str(info.value)


def test_a_garbage_file_with_no_cached_model_is_a_one_line_weights_error(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(os.urandom(4096))
    with pytest.raises(WeightsError) as info:
        create_estimator(str(bad), backend="openvino")
    message = str(info.value)
    assert "\n" not in message and "weights_only" not in message and "--weights PATH" in message


def test_argument_errors_do_not_import_heavy_modules(tmp_path: Path) -> None:
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); import stream.cli as cli; "
            "rc = cli.main(['convert', 'x.mp4', '--precision', 'int4']); "
            f"print(rc, [m for m in {HEAVY + ('openvino', 'av')!r} if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert done.stdout.split(None, 1) == ["2", "[]\n"]


def test_info_reports_the_cached_models(warm: dict, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture) -> None:
    from stream import cli

    monkeypatch.setenv("DEPTHSTREAM_CACHE", str(warm["cache"]))
    assert cli.main(["info", "--weights", str(warm["weights"]), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["weights"] == str(warm["weights"].resolve())
    assert report["fp32_model"] and Path(report["fp32_model"]).is_dir()
    assert report["auto"].startswith("fp32")
    assert report["int8_speed"] is None and report["machine"].endswith(" threads")
    assert "off" in report["telemetry"]
    assert cli.main(["info", "--weights", str(warm["weights"])]) == 0
    text = capsys.readouterr().out
    assert "fp32 model:" in text and "auto uses:" in text and "int8 speed:      -" in text
    assert cli.main(["info", "--weights", str(warm["folder"] / "nope.pt")]) == 2


class _TorchvisionMismatch(importlib.abc.MetaPathFinder):
    """The network's module fails to import as with a CPU torch and a CUDA torchvision."""

    def find_spec(self, name: str, path: object, target: object = None) -> None:
        if name == "stream.models.midas":
            raise RuntimeError("operator torchvision::nms does not exist")


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_torch_and_torchvision_that_do_not_match_are_one_line_exit_2(
        weights_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture, backend: str) -> None:
    from stream.cli import main

    monkeypatch.setenv("DEPTHSTREAM_CACHE", str(tmp_path / "cache"))  # a model must be made
    monkeypatch.delitem(sys.modules, "stream.models.midas", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_TorchvisionMismatch(), *sys.meta_path])
    out = tmp_path / "depth.png"
    assert main(["image", str(ROOT / "samples" / "coffee.jpg"), "-o", str(out),
                 "--weights", str(weights_file), "--backend", backend]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0] == err.strip().splitlines()[-1], err
    assert errors[0].startswith("depthstream: error: torch and torchvision do not match (torch ")
    assert "operator torchvision::nms does not exist" in errors[0]
    assert "pip install --force-reinstall torch torchvision --index-url" in errors[0]
    assert "OpenVINO" not in err and "RuntimeError" not in err  # the real cause only
    assert not out.exists()
