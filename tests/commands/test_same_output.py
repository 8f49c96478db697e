"""Two runs writing the same output without --overwrite: one publishes, the other says where.

A path checked free when a run starts is published only if it is still free when the run
ends: the finished output that lost the race is kept beside it (``out-2.mp4``) and one
line says so (exit 2). Without the race, or with --overwrite, nothing changes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from support.clips import make_clip, pattern, read_video
from support.fakes import cheap_estimator

from stream.cli import main

ROOT = Path(__file__).resolve().parents[2]

# A run whose outputs are checked (the model comes after the checks) waits for "go",
# so both runs have found the path free before either publishes.
_CHILD = """
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.path[:0] = [{tests!r}, {root!r}]
import stream.engines.estimator
from support.fakes import cheap_estimator

def create_estimator(*args, **kwargs):
    print("ready", flush=True)
    while not os.path.exists({go!r}):
        time.sleep(0.01)
    return cheap_estimator(delay_s=0.01)

stream.engines.estimator.create_estimator = create_estimator
import stream.cli as cli
sys.exit(cli.main(sys.argv[1:]))
"""


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    code = _CHILD.format(tests=str(ROOT / "tests"), root=str(ROOT), go=str(cwd / "go"))
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_two_concurrent_runs_to_one_path_lose_nothing(tmp_path):
    a = make_clip(tmp_path / "a.mp4", 20, (64, 48), audio=False)
    b = make_clip(tmp_path / "b.mkv", 30, (64, 48), audio=False)
    out = tmp_path / "same.mp4"
    runs = [_start(["convert", str(clip), "-o", str(out), "--no-progress"], tmp_path)
            for clip in (a, b)]
    for run in runs:
        assert run.stdout.readline() == "ready\n", run.communicate()
    (tmp_path / "go").touch()
    results = [(run.wait(timeout=120), *run.communicate()) for run in runs]

    codes = [rc for rc, _, _ in results]
    assert sorted(codes) == [0, 2], results
    loser = codes.index(2)
    kept = tmp_path / "same-2.mp4"
    line = results[loser][2].strip().splitlines()[-1]
    assert line == (f"depthstream: error: {out} appeared while this run was writing it "
                    f"(another run?); the finished output was kept in {kept}")
    frames = {0: 20, 1: 30}
    assert len(read_video(out)["pts"]) == frames[1 - loser]  # the winner's, whole
    assert len(read_video(kept)["pts"]) == frames[loser]  # the loser's, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "b.mkv", "go",
                                                          "same-2.mp4", "same.mp4"]


def _appearing(path: Path, at_call: int = 2):
    """An estimator that creates ``path`` (someone else's file) while the run works."""
    estimator = cheap_estimator()
    infer, calls = estimator.backend.infer, [0]

    def infer_and_race(x):
        calls[0] += 1
        if calls[0] == at_call:
            path.write_bytes(b"someone else's")
        return infer(x)

    estimator.backend.infer = infer_and_race
    return estimator


def test_image_does_not_replace_a_picture_that_appeared_meanwhile(
        tmp_path, monkeypatch, capsys):
    picture = tmp_path / "pic.png"
    assert cv2.imwrite(str(picture), pattern(0, (64, 48)))
    out = tmp_path / "depth.png"
    monkeypatch.setattr("stream.engines.estimator.create_estimator",
                        lambda *a, **k: _appearing(out, at_call=1))

    assert main(["image", str(picture), "-o", str(out)]) == 2

    kept = tmp_path / "depth-2.png"
    assert capsys.readouterr().err.strip().splitlines() == [
        f"depthstream: error: {out} appeared while this run was writing it (another run?); "
        f"the finished output was kept in {kept}"]
    assert out.read_bytes() == b"someone else's"
    assert cv2.imread(str(kept)).shape == (48, 64, 3)


def test_stats_do_not_replace_a_file_that_appeared_meanwhile(tmp_path, monkeypatch, capsys):
    clip = make_clip(tmp_path / "in.mp4", 6, (64, 48), audio=False)
    stats = tmp_path / "stats.json"
    monkeypatch.setattr("stream.engines.estimator.create_estimator",
                        lambda *a, **k: _appearing(stats))
    out = tmp_path / "out.mp4"

    assert main(["convert", str(clip), "-o", str(out), "--stats", str(stats),
                 "--no-progress"]) == 2

    assert "the finished output was kept in" in capsys.readouterr().err
    assert stats.read_bytes() == b"someone else's"
    assert json.loads((tmp_path / "stats-2.json").read_text())["frames_written"] == 6
    assert len(read_video(out)["pts"]) == 6


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_path_that_stays_free_or_overwrite_publishes_in_place(tmp_path, cheap, overwrite):
    clip = make_clip(tmp_path / "in.mp4", 6, (64, 48), audio=False)
    out = tmp_path / "out.mp4"
    if overwrite:
        out.write_bytes(b"old")
    assert main(["convert", str(clip), "-o", str(out), "--no-progress",
                 *(["--overwrite"] if overwrite else [])]) == 0
    assert len(read_video(out)["pts"]) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "out.mp4"]
