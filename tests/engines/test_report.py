"""Tests for stream.engines.report (``depthstream info``): the cache, int8's check and speed.

The report's int8 fields are read from a cache entry whose ``meta.json`` the tests write
(injected self-check and timings); one test runs ``info --precision int8`` for real in a
child process on a copy of the package alone (no ``samples/`` anywhere), as an installed
wheel would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stream import cli
from stream.engines import quantize
from stream.engines.base import default_threads
from stream.engines.cache import fingerprint, fp32_entry, int8_entry
from stream.engines.openvino_backend import OpenVinoBackend
from stream.engines.quantize import Agreement, Speed, machine_id
from stream.engines.report import model_report
from stream.models.registry import MIDAS_SMALL_SPEC

ROOT = Path(__file__).resolve().parents[2]
SHAPE = (1, 3, 192, 256)
PASS = Agreement(0.01, 0.995, 0.02, 0.99, 6)

# Runs ``info --precision int8`` from a copy of the package, recording any file of a
# ``samples`` folder that is opened (there must be none).
RUNNER = """
import json, sys
opened = []
sys.addaudithook(lambda event, args: opened.append(str(args[0]))
                 if event == "open" and "samples" in str(args[0]) else None)
sys.path.insert(0, {site!r})
import stream.engines.quantize as q
assert str(q.FRAMES_DIR).startswith({site!r}), q.FRAMES_DIR
q.DEFAULT_RECIPE = q.Recipe(calibration_frames=3, check_frames=1)
import stream.cli as cli
code = cli.main(["info", "--precision", "int8", "--weights", {weights!r}, "--json"])
print(json.dumps({{"code": code, "opened": opened}}))
"""


@pytest.fixture(scope="module")
def cached(weights_file: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The synthetic checkpoint converted into a cache of this module's own."""
    cache = tmp_path_factory.mktemp("report_cache")
    weights = cache / "midas_v21_small_256.pt"
    shutil.copy(weights_file, weights)
    OpenVinoBackend(weights=weights, cache_dir=cache / "openvino").close()
    return {"cache": cache, "weights": weights}


@pytest.fixture()
def report_env(cached: dict, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setenv("DEPTHSTREAM_CACHE", str(cached["cache"]))
    return cached


def _fake_int8(cached: dict, speed: Speed | None, layers: str = "all") -> Path:
    """An int8 entry (the fp32 files under the int8 name) with the given meta."""
    root = cached["cache"] / "openvino"
    source = fingerprint(cached["weights"], root)
    digest = quantize.recipe_for(MIDAS_SMALL_SPEC).digest()
    entry = int8_entry(source, MIDAS_SMALL_SPEC, digest, root)
    shutil.rmtree(entry.path, ignore_errors=True)
    shutil.copytree(fp32_entry(source, MIDAS_SMALL_SPEC, root).path, entry.path)
    meta = {"precision": "int8", "layers": layers, "self_check": PASS.to_dict(),
            "speed": None if speed is None else speed.to_dict()}
    (entry.path / "meta.json").write_text(json.dumps(meta))
    return entry.path


def test_without_int8_the_report_says_auto_is_fp32(report_env: dict) -> None:
    shutil.rmtree(_fake_int8(report_env, None))
    report = model_report(report_env["weights"])
    assert report["fp32_model"] and Path(report["fp32_model"]).is_dir()
    assert report["int8_model"] is None and report["int8_speed"] is None
    assert report["auto"].startswith("fp32: no int8 model yet")
    assert report["machine"] == machine_id(report["threads"])


def test_the_report_shows_both_timings_and_what_auto_uses(report_env: dict,
                                                          capsys: pytest.CaptureFixture) -> None:
    here = machine_id(default_threads())
    entry = _fake_int8(report_env, Speed(61.0, 30.5, SHAPE, here, 5))
    report = model_report(report_env["weights"])
    assert report["int8_model"] == str(entry)
    assert report["int8_layers"] == "all" and report["int8_agreement"] == PASS.to_dict()
    assert report["int8_speed"] == Speed(61.0, 30.5, SHAPE, here, 5).to_dict()
    assert report["auto"].startswith("int8: int8 agrees with fp32")
    assert "faster than fp32 here (int8 30.5 ms, fp32 61.0 ms" in report["auto"]
    assert cli.main(["info", "--weights", str(report_env["weights"])]) == 0
    text = capsys.readouterr().out
    assert ("int8 speed:      fp32 61.0 ms, int8 30.5 ms per 192x256 input (2.00x), "
            "timed on this machine") in text
    assert "int8 layers:     all" in text and "auto uses:       int8:" in text


@pytest.mark.parametrize(
    ("int8_ms", "machine", "auto", "where"),
    [(75.5, None, "int8 is slower than fp32 on this machine (int8 75.5 ms, fp32 61.0 ms",
      "timed on this machine"),
     (30.5, "another CPU, 2 threads", "timed on another CPU, 2 threads",
      "timed on another machine (another CPU, 2 threads)")],
)
def test_auto_is_fp32_where_int8_is_slower_or_was_timed_elsewhere(
    report_env: dict, capsys: pytest.CaptureFixture, int8_ms: float, machine: str | None,
    auto: str, where: str,
) -> None:
    here = machine_id(default_threads())
    _fake_int8(report_env, Speed(61.0, int8_ms, SHAPE, machine or here, 5), "dpt-head")
    report = model_report(report_env["weights"])
    assert report["auto"].startswith("fp32: ") and auto in report["auto"]
    assert cli.main(["info", "--weights", str(report_env["weights"])]) == 0
    text = capsys.readouterr().out
    assert where in text and "int8 layers:     dpt-head" in text


def test_info_int8_works_from_the_package_alone(weights_file: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    shutil.copytree(ROOT / "stream", site / "stream",
                    ignore=shutil.ignore_patterns("__pycache__"))
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER.format(site=str(site), weights=str(weights_file)))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["DEPTHSTREAM_CACHE"] = str(tmp_path / "cache")
    done = subprocess.run([sys.executable, str(runner)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    report = json.loads(done.stdout[:done.stdout.rindex("\n{")])
    assert result == {"code": 0, "opened": []}
    assert report["int8_model"] and Path(report["int8_model"]).is_dir()
    assert report["int8_agreement"]["frames"] == 1 and report["int8_layers"] == "all"
    speed = report["int8_speed"]
    assert speed["machine"] == report["machine"] and speed["shape"] == list(SHAPE)
    assert speed["fp32_ms"] > 0 and speed["int8_ms"] > 0
    assert "quantizing" in done.stderr and "int8 ready" in done.stderr


@pytest.mark.parametrize(("model", "input_size", "sides"), [
    ("dav2-small", None, {"pictures": 518, "video files": 364, "live": 196}),
    ("midas-small", None, {"pictures": 256, "video files": 256, "live": 256}),
    ("dav2-metric-indoor", 280, {"pictures": 280, "video files": 280, "live": 280}),
])
def test_info_says_the_input_size_of_each_use(weights_file: Path, model: str,
                                              input_size: int | None, sides: dict,
                                              capsys: pytest.CaptureFixture) -> None:
    """Nothing is loaded for this: the sizes come from the model's spec (or --input-size)."""
    report = model_report(weights_file, model=model, input_size=input_size)
    assert report["input_sizes"] == sides
    argv = ["info", "--weights", str(weights_file), "--model", model]
    assert cli.main(argv + (["--input-size", str(input_size)] if input_size else [])) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("input size:"))
    assert line == ("input size:      " + ", ".join(f"{v} {k}" for k, v in sides.items())
                    + (" (--input-size)" if input_size else ""))


def test_info_refuses_an_input_size_the_model_cannot_take(weights_file: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["info", "--weights", str(weights_file), "--input-size", "5"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
