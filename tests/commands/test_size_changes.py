"""A video whose frame size changes mid-stream, and runs that fail part of the way.

The clips are one MJPEG stream whose pictures change size (as concatenated clips and
some cameras give): the output video keeps the first size (the others scaled to fit,
one warning line), raw depth keeps every frame's own size, and a run that fails leaves
nothing at its final path.
"""

from __future__ import annotations

import csv

import cv2
import pytest
from support.clips import make_mixed_size_clip, read_video
from support.fakes import cheap_estimator

from stream.cli import main

SIZES = [(6, (64, 64)), (6, (96, 80)), (3, (64, 64))]


@pytest.mark.parametrize("suffix, layout", [(".mp4", "depth"), (".mkv", "side")])
def test_convert_scales_other_sizes_to_the_first_with_one_warning(
        tmp_path, cheap, capsys, suffix, layout):
    clip = make_mixed_size_clip(tmp_path / "mixed.avi", SIZES)
    out, raw = tmp_path / f"out{suffix}", tmp_path / "raw"

    assert main(["convert", str(clip), "-o", str(out), "--raw", str(raw), "--layout", layout,
                 "--no-progress"]) == 0

    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"depthstream: warning: {out}: the input's frame size changes (64x64, then "
                   f"96x80 from frame 6): 6 frames were scaled to fit 64x64"]
    video = read_video(out)
    width = 128 if layout == "side" else 64
    assert video["size_wh"] == (width, 64) and len(video["pts"]) == 15
    scaled = video["images"][8]  # 96x80 in 64x64: 64x53, black bars above and below
    assert scaled[:4].max() < 40 and scaled[-4:].max() < 40 and scaled[10:54].max() > 100
    # raw depth: every frame at its own size, as the CSV lists it
    rows = list(csv.DictReader((raw / "timestamps.csv").open()))
    assert len(rows) == 15
    shapes = [cv2.imread(str(raw / f"depth_{int(r['index']):06d}.png"),
                         cv2.IMREAD_UNCHANGED).shape for r in rows]
    assert shapes == [(64, 64)] * 6 + [(80, 96)] * 6 + [(64, 64)] * 3


def test_robot_outputs_follow_each_frame_size(tmp_path, cheap):
    from mcap.reader import make_reader

    clip = make_mixed_size_clip(tmp_path / "mixed.mkv", SIZES)
    out = tmp_path / "o.mcap"
    assert main(["convert", str(clip), "--mcap", str(out), "--no-progress",
                 "--known-distance", "10,10,2", "--known-distance", "40,40,3"]) == 0
    with out.open("rb") as f:
        summary = make_reader(f).get_summary()
    counts = {summary.channels[i].topic: n
              for i, n in summary.statistics.channel_message_counts.items()}
    assert counts and set(counts.values()) == {15}, counts  # every frame on every topic


def test_a_run_that_fails_part_of_the_way_leaves_nothing_at_the_path(
        tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("stream.engines.estimator.create_estimator",
                        lambda *a, **k: cheap_estimator(fail_at=8))
    clip = make_mixed_size_clip(tmp_path / "mixed.avi", SIZES)
    out = tmp_path / "out.mp4"

    assert main(["convert", str(clip), "-o", str(out), "--no-progress"]) == 1

    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cheap backend failed" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mixed.avi"]


def test_the_size_limit_is_checked_on_every_frame(tmp_path, cheap):
    from stream.core.settings import StreamSettings
    from stream.runtime.builder import build_convert, run
    from stream.sources.capture import FrameTooLarge

    clip = make_mixed_size_clip(tmp_path / "mixed.avi", SIZES)
    out = tmp_path / "out.mp4"
    pipeline = build_convert(clip, out, StreamSettings(), max_size_wh=(80, 80))
    with pytest.raises(FrameTooLarge, match="frame 6 is 96x80, over the limit of 80x80"):
        run(pipeline)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mixed.avi"]
    assert pipeline.stats().frames_written <= 6
