"""Stopping a run during its start-up: Ctrl+C, SIGTERM and SIGHUP always stop it.

Each trial runs ``convert`` in a child process on the real OpenVINO path (the synthetic
checkpoint, its model cached once for the module) and sends a stop signal at a moment
of its start-up: some at random from the moment ``main`` starts, some aimed inside
OpenVINO's start-up. There the child's OpenVINO turns an interrupt into an ordinary
exception, as C++ layers do (pybind11 makes a failed module import an ``ImportError``,
a failed callback a ``RuntimeError``), and is slowed down so the aimed signals land
inside. Whatever the moment, the run must stop with 128 + the signal and the
"interrupted" line: never fall back to torch and convert the whole file.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from support.clips import make_clip, read_video

from stream.engines.openvino_backend import OpenVinoBackend

ROOT = Path(__file__).resolve().parents[2]
FRAMES = 300  # several seconds of OpenVINO: a run cannot end inside the window
WINDOW_S = 2.5  # random moments from main()'s start: parsing, decoder, model, first frames
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

# The child: a terminal's signal dispositions, OpenVINO made slow and its interrupts
# disguised, then the real command line. It prints "main" when main() starts and
# "openvino <step>" when it enters a disguised step.
_CHILD = """
import signal, sys, time
for name in ("SIGTERM", "SIGHUP"):
    signal.signal(getattr(signal, name), signal.SIG_DFL)
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.path[:0] = [{root!r}]
import openvino
import stream.engines.factory as factory
import stream.engines.openvino_backend as backend

def enter(step):
    print("openvino " + step, flush=True)
    time.sleep({pause})

imported = backend.import_openvino

def import_openvino():
    try:
        enter("import")
        return imported()
    except KeyboardInterrupt as exc:  # what pybind11 does with an interrupted module init
        raise ImportError("initialization failed") from exc

factory.import_openvino = backend.import_openvino = import_openvino
converter = openvino.convert_model

def convert_model(*args, **kwargs):
    try:
        enter("convert")
        return converter(*args, **kwargs)
    except KeyboardInterrupt:  # an interrupted callback, as a C++ layer reports it
        raise RuntimeError("Exception from the PyTorch frontend: conversion failed") from None

openvino.convert_model = convert_model
import stream.cli as cli
print("main", flush=True)
sys.exit(cli.main(sys.argv[1:]))
"""


class _Child:
    """``convert`` in a child process; its stdout lines and stderr collected as they come."""

    def __init__(self, args: list[str], cwd: Path, cache: Path, pause_s: float) -> None:
        code = _CHILD.format(root=str(ROOT), pause=pause_s)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "DEPTHSTREAM_CACHE": str(cache)}
        self.proc = subprocess.Popen([sys.executable, "-c", code, *args], cwd=cwd, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[tuple[float, str]] = []
        self.err: list[str] = []
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=lambda: self.err.extend(self.proc.stderr), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self) -> None:
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.strip()))

    def wait_for(self, text: str, timeout_s: float = 120) -> float:
        """When the child printed ``text`` (monotonic seconds)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for at, line in list(self.lines):
                if line == text:
                    return at
            if self.proc.poll() is not None:
                break
            time.sleep(0.005)
        raise AssertionError(f"the child never printed {text!r}: {''.join(self.err)}")

    def finish(self, timeout_s: float = 60) -> tuple[int | str, str]:
        """The exit status, or "still running" (then killed) after ``timeout_s``."""
        try:
            rc: int | str = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = f"still running {timeout_s} s after the signal"
        for reader in self._readers:
            reader.join(5)
        return rc, "".join(self.err)


@pytest.fixture(scope="module")
def warm_cache(weights_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model cache holding the synthetic checkpoint's OpenVINO model."""
    cache = tmp_path_factory.mktemp("interrupt_cache")
    OpenVinoBackend(weights=weights_file, cache_dir=cache / "openvino").close()
    return cache


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "in.mp4", FRAMES, (64, 48),
                     audio=False)


def _trial(tmp_path: Path, number: int, clip: Path, weights: Path, cache: Path, sig: int,
           aim: str | None, delay_s: float, pause_s: float) -> dict:
    """One run, stopped by ``sig`` ``delay_s`` after main() starts (or after ``aim``)."""
    out = tmp_path / f"out{number}.mp4"
    child = _Child(["convert", str(clip), "-o", str(out), "--weights", str(weights),
                    "--backend", "auto", "--no-progress"], tmp_path, cache, pause_s)
    start = child.wait_for(f"openvino {aim}" if aim else "main")
    time.sleep(max(0.0, start + delay_s - time.monotonic()))
    if child.proc.poll() is None:
        child.proc.send_signal(sig)
    rc, err = child.finish()
    frames = len(read_video(out)["pts"]) if out.exists() else 0
    return {"rc": rc, "err": err, "frames": frames, "sig": sig, "aim": aim,
            "delay": round(delay_s, 3)}


def _stopped(result: dict) -> bool:
    """Stopped as an interrupt: 128 + signal, the interrupted line, no torch, not whole."""
    lines = result["err"].strip().splitlines()
    return (result["rc"] == 128 + result["sig"] and bool(lines)
            and lines[-1].startswith("depthstream: interrupted")
            and "using torch" not in result["err"] and "preparing" not in result["err"]
            and result["frames"] < FRAMES)


@pytest.mark.slow
def test_a_stop_signal_at_any_moment_of_start_up_stops_the_run(
        tmp_path, clip, weights_file, warm_cache):
    rng = random.Random(22)
    results = []
    for number in range(24):
        sig = SIGNALS[number % len(SIGNALS)]
        if number % 2:  # aimed inside OpenVINO's (slowed) import
            results.append(_trial(tmp_path, number, clip, weights_file, warm_cache, sig,
                                  "import", rng.uniform(0.02, 0.25), pause_s=0.3))
        else:  # anywhere in the start-up
            results.append(_trial(tmp_path, number, clip, weights_file, warm_cache, sig,
                                  None, rng.uniform(0.0, WINDOW_S), pause_s=0.1))
        assert _stopped(results[-1]), results[-1]
    assert not list(tmp_path.glob("*.part"))


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_signal_while_the_model_converts_stops_the_run(
        tmp_path, clip, weights_file, sig):
    """A first start (empty cache): interrupted inside OpenVINO's conversion."""
    result = _trial(tmp_path, 0, clip, weights_file, tmp_path / "cache", sig, "convert",
                    random.Random(int(sig)).uniform(0.05, 0.5), pause_s=0.6)
    assert result["rc"] == 128 + sig, result
    lines = result["err"].strip().splitlines()
    assert lines[-1].startswith("depthstream: interrupted"), result
    assert "using torch" not in result["err"] and result["frames"] == 0, result
