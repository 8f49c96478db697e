"""Stopping a run: Ctrl+C, SIGTERM and SIGHUP finish the files; kill -9 leaves nothing final.

Each run is a child process (``python -c`` running ``cli.main``) with the cheap test
double as its network, slowed down so a signal arrives mid-run. The child sets its own
signal dispositions first: a pytest run in the background (``pytest &``) starts its
children with SIGINT ignored, and ``nohup`` with SIGHUP ignored.
"""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from support.clips import NTSC, make_clip, pattern, read_video
from support.fakes import cheap_estimator

from stream.cli import main

ROOT = Path(__file__).resolve().parents[2]

_CHILD = """
import signal, sys
# What a terminal gives a foreground command, whatever this test's parent ignores.
for name in ("SIGTERM", "SIGHUP"):
    signal.signal(getattr(signal, name), signal.SIG_DFL)
signal.signal(signal.SIGINT, signal.default_int_handler)
if {ignore_hup}:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
sys.path[:0] = [{tests!r}, {root!r}]
import stream.engines.estimator
from support.fakes import cheap_estimator
stream.engines.estimator.create_estimator = lambda *a, **k: cheap_estimator(delay_s={delay})
import stream.cli as cli
sys.exit(cli.main(sys.argv[1:]))
"""


class Child:
    """A depthstream command in a child process, its stderr collected as it comes."""

    def __init__(self, args: list[str], cwd: Path, delay_s: float = 0.05,
                 ignore_hup: bool = False) -> None:
        code = _CHILD.format(tests=str(ROOT / "tests"), root=str(ROOT), delay=delay_s,
                             ignore_hup=ignore_hup)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, *args], cwd=cwd, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self._err: list[str] = []
        self._out: list[str] = []
        self._readers = [
            threading.Thread(target=lambda: self._err.extend(iter(
                lambda: self.proc.stderr.read(1), "")), daemon=True),
            threading.Thread(target=lambda: self._out.extend(iter(
                self.proc.stdout.readline, "")), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @property
    def err(self) -> str:
        return "".join(self._err)

    @property
    def out(self) -> str:
        return "".join(self._out)

    def wait_for(self, predicate, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate() and time.monotonic() < deadline and self.proc.poll() is None:
            time.sleep(0.05)
        assert predicate(), (self.err, self.out)

    def finish(self, timeout_s: float = 60) -> int:
        rc = self.proc.wait(timeout=timeout_s)
        for reader in self._readers:
            reader.join(5)
        return rc


def _frames_done(child: Child, total: int) -> int:
    counts = re.findall(rf"(\d+)/{total}", child.err)
    return int(counts[-1]) if counts else 0


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143),
                                       (signal.SIGHUP, 129)],
                         ids=["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_signal_mid_conversion_finishes_the_files(tmp_path, sig, code):
    clip = make_clip(tmp_path / "in.mp4", 60, (64, 48), audio=True)
    out, raw, stats = tmp_path / "out.mp4", tmp_path / "raw", tmp_path / "stats.json"
    child = Child(["convert", str(clip), "-o", str(out), "--raw", str(raw),
                   "--stats", str(stats)], tmp_path)
    child.wait_for(lambda: _frames_done(child, 60) >= 3)

    child.proc.send_signal(sig)
    rc = child.finish()

    lines = child.err.replace("\r", "\n").strip().splitlines()
    assert rc == code, child.err
    match = re.fullmatch(r"depthstream: interrupted: (\d+) frames written to (.+)", lines[-1])
    assert match, lines[-1]
    written = int(match[1])
    assert match[2] == f"{out}, {raw}"
    video = read_video(out)  # it plays: the trailer was written
    assert 3 <= len(video["pts"]) == written < 60
    assert video["rate"] == NTSC and video["audio"] == [("aac", 48000)]
    rows = list(csv.DictReader((raw / "timestamps.csv").open()))
    assert len(rows) == written
    assert stats.is_file()
    assert not list(tmp_path.rglob("*.part"))


def test_sigterm_while_writing_pictures_keeps_whole_pictures(tmp_path):
    pics = tmp_path / "pics"
    pics.mkdir()
    for n in range(40):
        assert cv2.imwrite(str(pics / f"p{n:02d}.png"), pattern(n, (64, 48)))
    out = tmp_path / "out"
    child = Child(["image", str(pics), "-o", str(out), "--raw"], tmp_path, delay_s=0.2)
    child.wait_for(lambda: child.out.count(" -> ") >= 2)

    child.proc.send_signal(signal.SIGTERM)
    rc = child.finish()

    assert rc == 143, child.err
    done = child.out.count(" -> ")
    assert child.err.strip().splitlines()[-1] == (
        f"depthstream: interrupted: {done} pictures written to {out}")
    assert 2 <= done < 40
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 3 * done and not [n for n in names if n.endswith(".part")]
    for name in names:
        if name.endswith(".png"):
            assert cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED) is not None


def test_sighup_is_left_alone_under_nohup(tmp_path):
    clip = make_clip(tmp_path / "in.mp4", 30, (64, 48), audio=False)
    out = tmp_path / "out.mp4"
    child = Child(["convert", str(clip), "-o", str(out)], tmp_path, delay_s=0.02,
                  ignore_hup=True)
    child.wait_for(lambda: _frames_done(child, 30) >= 2)
    child.proc.send_signal(signal.SIGHUP)
    assert child.finish() == 0, child.err
    assert len(read_video(out)["pts"]) == 30


def test_after_kill_9_the_next_run_in_the_folder_removes_the_stale_temporary(
        tmp_path, monkeypatch):
    clip = make_clip(tmp_path / "in.mp4", 60, (64, 48), audio=False)
    child = Child(["convert", str(clip), "-o", str(tmp_path / "first.mp4")], tmp_path)
    child.wait_for(lambda: _frames_done(child, 60) >= 3)
    child.proc.kill()
    child.finish()
    stale = list(tmp_path.glob("first.mp4.ds*.part"))
    assert len(stale) == 1  # what kill -9 leaves: a temporary, never a half-written final
    reserve = list(tmp_path.glob("first.mp4.reserve.ds*.part"))
    assert len(reserve) == 1  # and the disk space it kept aside to end the video
    assert not (tmp_path / "first.mp4").exists()

    monkeypatch.setattr("stream.engines.estimator.create_estimator",
                        lambda *a, **k: cheap_estimator())
    assert main(["convert", str(clip), "-o", str(tmp_path / "second.mp4"),
                 "--no-progress"]) == 0
    assert not stale[0].exists() and not reserve[0].exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "second.mp4"]
    assert np.array(read_video(tmp_path / "second.mp4")["pts"]).size == 60


# ------------------------------------------------------- Ctrl+C before the command runs

_EARLY_CHILD = """
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.path[:0] = [{root!r}]


class CtrlC:  # Ctrl+C lands while {module} is being imported
    def find_spec(self, name, path=None, target=None):
        if name == {module!r}:
            raise KeyboardInterrupt
        return None


sys.meta_path.insert(0, CtrlC())
sys.argv = [{shim!r}, "info"]
import runpy
runpy.run_path({shim!r}, run_name="__main__")
"""


@pytest.mark.parametrize("module", ["stream.cli", "stream.cli_args"])
def test_ctrl_c_while_the_command_loads_is_one_line_and_130(module):
    """The moment before main() handles signals: no traceback, the interrupted line."""
    code = _EARLY_CHILD.format(root=str(ROOT), module=module, shim=str(ROOT / "cli.py"))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert done.returncode == 130, done.stderr
    assert done.stderr == "depthstream: interrupted\n"


def test_ctrl_c_while_the_arguments_are_parsed_is_one_line_and_130(monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("stream.cli_args.build_parser", interrupted)
    assert main(["info"]) == 130
    assert capsys.readouterr().err == "depthstream: interrupted\n"
