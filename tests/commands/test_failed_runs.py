"""A run that fails part of the way leaves nothing at any of its output paths.

Interrupts publish what was written (tests/commands/test_signals.py); an error does not:
the video, the ROS 2 bag and the MCAP file are all dropped, and the one error line is the
only trace.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.clips import make_clip
from support.fakes import cheap_estimator

from stream.cli import main


def test_a_failed_run_leaves_no_video_bag_or_mcap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # Slow enough that the outputs have frames before the network fails.
    monkeypatch.setattr("stream.engines.estimator.create_estimator",
                        lambda *a, **k: cheap_estimator(delay_s=0.03, fail_at=8))
    clip = make_clip(tmp_path / "in.mp4", 12, audio=False)
    code = main(["convert", str(clip), "-o", str(tmp_path / "out.mp4"), "--rosbag",
                 str(tmp_path / "bag"), "--mcap", str(tmp_path / "run.mcap"), "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cheap backend failed" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]
