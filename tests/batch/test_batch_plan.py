"""Batch without Ray: videos found and mirrored, the manifest, segments, joins, usage errors.

The worker body runs in-process here, with the cheap test double for the network.
"""

from __future__ import annotations

import dataclasses
import json
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from support.clips import (
    _write_tone,
    audio_duration_s,
    make_clip,
    mux_frames,
    pattern,
    read_video,
)
from support.fakes import cheap_estimator

from stream.batch.options import BatchSettings, OutputFormat
from stream.batch.plan import Manifest, find_videos, plan_jobs, settings_record
from stream.batch.segments import join_videos, plan_video
from stream.batch.worker import ConvertTask, JoinTask, Worker
from stream.cli import main
from stream.core.errors import ConfigError, SinkError, SourceError
from stream.core.settings import StreamSettings
from stream.runtime.builder import convert

CHEAP = "support.fakes:cheap_estimator"


def make_gop_clip(path: Path, frames: int, gop: int = 30, rate: Fraction = Fraction(30000, 1001),
                  audio: bool = True, size_wh: tuple[int, int] = (64, 48)) -> Path:
    """A clip with a keyframe every ``gop`` frames (``make_clip`` has one per 250)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = *size_wh, "yuv420p"
        video.options = {"preset": "ultrafast", "g": str(gop), "keyint_min": str(gop),
                         "sc_threshold": "0"}
        video.codec_context.time_base = 1 / rate
        sound = None
        if audio:
            sound = container.add_stream("aac", rate=48000)
            sound.layout = "mono"
        mux_frames(container, video, (pattern(index, size_wh) for index in range(frames)))
        if sound is not None:
            _write_tone(container, sound, float(frames / rate))
    return path


def clip_at(path: Path, frames: int, **kwargs: object) -> Path:
    """``make_clip`` into a folder it makes first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return make_clip(path, frames, **kwargs)


def mean_diffs(a: list[np.ndarray], b: list[np.ndarray]) -> list[float]:
    return [float(np.abs(x.astype(np.int16) - y.astype(np.int16)).mean()) for x, y in zip(a, b)]


# -- options ---------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [
    {"workers": 0}, {"workers": 1.5}, {"cpus_per_worker": -1}, {"segment_s": -1},
    {"segment_s": float("nan")}, {"retries": -1}, {"video_format": "avi"}, {"address": " "},
    {"estimator_factory": "no-colon"},
])
def test_batch_settings_reject(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        BatchSettings(out_dir=tmp_path, **kwargs)


def test_batch_settings_parse(tmp_path: Path) -> None:
    batch = BatchSettings(out_dir=str(tmp_path), video_format="webm", workers=2,
                          cpus_per_worker="1.5", segment_s=0)
    assert batch.video_format is OutputFormat.WEBM and batch.video_format.suffix == ".webm"
    assert batch.out_dir == tmp_path and batch.cpus_per_worker == 1.5 and batch.segment_s == 0


# -- plan ------------------------------------------------------------------------------


def test_tree_is_mirrored(tmp_path: Path) -> None:
    src = tmp_path / "in"
    clip_at(src / "a.mp4", 3)
    clip_at(src / "sub" / "deep" / "c.mkv", 3)
    (src / "notes.txt").write_text("not a video")
    (src / ".hidden").mkdir()
    clip_at(src / ".hidden" / "h.mp4", 3)
    single = clip_at(tmp_path / "single.webm", 3, codec="libvpx-vp9", audio=False)
    out = src / "depth"  # inside the input: earlier outputs are not inputs
    clip_at(out / "old.mp4", 3)
    jobs = plan_jobs([src, single], BatchSettings(out_dir=out, raw=True))
    assert [j.rel for j in jobs] == ["a.mp4", "sub/deep/c.mp4", "single.mp4"]
    assert jobs[1].output == out / "sub" / "deep" / "c.mp4"
    assert jobs[1].raw_dir == out / "sub" / "deep" / "c_raw"
    assert jobs[0].input == (src / "a.mp4").absolute()


def test_plan_refuses_collisions_and_missing_inputs(tmp_path: Path) -> None:
    clip_at(tmp_path / "in" / "a.mp4", 3)
    clip_at(tmp_path / "in" / "a.mkv", 3)
    with pytest.raises(ConfigError, match="both be written"):
        plan_jobs([tmp_path / "in"], BatchSettings(out_dir=tmp_path / "out"))
    with pytest.raises(SourceError, match="no such file"):
        find_videos([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no videos"):
        find_videos([tmp_path / "empty"])


def test_settings_key_follows_what_changes_the_output(tmp_path: Path) -> None:
    base = BatchSettings(out_dir=tmp_path)
    _, key = settings_record(StreamSettings(), base)
    assert settings_record(StreamSettings(), dataclasses.replace(base, workers=3))[1] == key
    assert settings_record(StreamSettings(overwrite=True), base)[1] == key
    assert settings_record(StreamSettings(layout="side"), base)[1] != key
    assert settings_record(StreamSettings(), dataclasses.replace(base, raw=True))[1] != key
    assert settings_record(StreamSettings(), dataclasses.replace(base, segment_s=10))[1] != key


def test_manifest_done_needs_same_settings_and_input(tmp_path: Path) -> None:
    clip = clip_at(tmp_path / "in" / "a.mp4", 3)
    out = tmp_path / "out"
    job = plan_jobs([clip], BatchSettings(out_dir=out))[0]
    manifest = Manifest(out)
    assert not manifest.owns(job)
    manifest.mark(job, "k1", "done", frames=3)
    manifest.save(force=True)
    again = Manifest(out)
    assert again.owns(job) and not again.is_done(job, "k1")  # no output file yet
    job.output.write_bytes(b"x")
    assert again.is_done(job, "k1") and not again.is_done(job, "k2")
    clip.write_bytes(clip.read_bytes() + b"\0")  # the input changed
    assert not again.is_done(plan_jobs([clip], BatchSettings(out_dir=out))[0], "k1")
    assert json.loads((out / ".depthstream-batch.json").read_text())["files"]["a.mp4"]


# -- segments --------------------------------------------------------------------------


def test_plan_video_cuts_at_keyframes_with_warmup(tmp_path: Path) -> None:
    clip = make_gop_clip(tmp_path / "long.mp4", 400, gop=30)
    plan = plan_video(clip, 3.0, 2.0)
    segments = plan.segments
    assert plan.frames == 400 and len(segments) == 5
    assert sum(s.frames for s in segments) == 400
    assert [s.start_index for s in segments] == [0, 90, 180, 270, 360]
    for before, after in zip(segments, segments[1:]):
        assert before.end_pts == after.start_pts
        assert after.start_index % 30 == 0 and after.seek_pts % 1001 == 0
        assert after.seek_pts <= after.warm_pts < after.start_pts
        assert after.warmup_frames == 60  # 2 s at 29.97 fps
    assert segments[0].warmup_frames == 0 and segments[-1].end_pts is None
    assert plan_video(clip, 0, 2.0).segments == ()
    assert plan_video(clip, 60, 2.0).segments == ()  # shorter than one segment


# Mean picture difference allowed: each segment's encoder starts afresh with a keyframe, so
# the lossy codec's own error differs from a one-machine run's (VP9 at its realtime speed more).
@pytest.mark.parametrize(("fmt", "levels"), [("mp4", 4.0), ("mkv", 4.0), ("webm", 6.0)])
def test_segments_joined_equal_convert(tmp_path: Path, fmt: str, levels: float) -> None:
    """In-process: every segment converted alone and joined = one convert, joins included."""
    clip = make_gop_clip(tmp_path / "in" / "long.mp4", 180, gop=30)
    reference = tmp_path / f"ref.{fmt}"
    convert(clip, reference, StreamSettings(raw_dir=tmp_path / "ref_raw"),
            estimator=cheap_estimator())
    batch = BatchSettings(out_dir=tmp_path / "out", video_format=fmt, raw=True,
                          estimator_factory=CHEAP)
    job = plan_jobs([clip], batch)[0]
    plan = plan_video(clip, 2.0, 2.0)
    assert len(plan.segments) >= 3
    worker = Worker(StreamSettings(), batch)
    parts = []
    for segment in plan.segments:
        parts.append(tmp_path / "parts" / str(segment.number))
        result = worker.run(ConvertTask(job, parts[-1], segment))
        assert result.frames == segment.frames
    joined = worker.run(JoinTask(job, tuple(parts), plan.has_audio, plan.time_base, plan.rate))
    assert joined.frames == 180
    ref, out = read_video(reference), read_video(job.output)
    assert out["pts"] == ref["pts"] and out["time_base"] == ref["time_base"]
    assert out["rate"] == ref["rate"] and out["audio"] == ref["audio"]
    assert audio_duration_s(job.output) == pytest.approx(audio_duration_s(reference), abs=1e-3)
    diffs = mean_diffs(ref["images"], out["images"])
    assert max(diffs) < levels, max(diffs)  # a few levels, at the joins too
    assert max(diffs[s.start_index] for s in plan.segments) < levels
    names = sorted(p.name for p in job.raw_dir.iterdir())
    assert names == sorted(p.name for p in (tmp_path / "ref_raw").iterdir())
    for index in (0, plan.segments[1].start_index, 179):
        a = cv2.imread(str(job.raw_dir / f"depth_{index:06d}.png"), cv2.IMREAD_UNCHANGED)
        b = cv2.imread(str(tmp_path / "ref_raw" / f"depth_{index:06d}.png"),
                       cv2.IMREAD_UNCHANGED)
        assert np.abs(a.astype(np.int32) - b.astype(np.int32)).mean() < 300  # of 65535


def test_segment_finished_by_an_earlier_run_is_kept(tmp_path: Path) -> None:
    clip = make_gop_clip(tmp_path / "long.mp4", 120, gop=30, audio=False)
    batch = BatchSettings(out_dir=tmp_path / "out", estimator_factory=CHEAP)
    job = plan_jobs([clip], batch)[0]
    segment = plan_video(clip, 2.0, 1.0).segments[1]
    worker = Worker(StreamSettings(), batch)
    first = worker.run(ConvertTask(job, tmp_path / "part", segment))
    again = worker.run(ConvertTask(job, tmp_path / "part", segment))
    assert not first.reused and again.reused and again.frames == first.frames


def test_join_refuses_segments_encoded_differently(tmp_path: Path) -> None:
    a = make_gop_clip(tmp_path / "a.mp4", 10, audio=False)
    b = tmp_path / "b.mp4"
    with av.open(str(b), "w") as container:  # other encoder settings (CABAC on)
        rate = Fraction(30000, 1001)
        video = container.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        video.options = {"preset": "medium"}
        video.codec_context.time_base = 1 / rate
        for index in range(10, 20):
            frame = av.VideoFrame.from_ndarray(pattern(index, (64, 48)), format="bgr24")
            frame.pts, frame.time_base = index, 1 / rate
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
    with pytest.raises(SinkError, match="other settings"):
        join_videos([a, b], tmp_path / "joined.mp4")
    assert not (tmp_path / "joined.mp4").exists()
    assert not list(tmp_path.glob("*.part"))


# -- command line ----------------------------------------------------------------------


@pytest.mark.parametrize("extra", [
    ["--workers", "0"], ["--zmq", "tcp://127.0.0.1:5599"], ["--format", "webm", "--codec",
                                                            "h264"],
    ["--segment-seconds", "-1"], ["--rosbag", "bags"],
])
def test_cli_usage_errors_before_ray(tmp_path: Path, extra: list[str],
                                     capsys: pytest.CaptureFixture) -> None:
    clip_at(tmp_path / "in" / "a.mp4", 3)
    code = main(["batch", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *extra])
    assert code == 2
    assert "error" in capsys.readouterr().err


def test_cli_missing_input_and_foreign_output(tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    assert main(["batch", str(tmp_path / "nope"), "-o", str(tmp_path / "out")]) == 2
    clip_at(tmp_path / "in" / "a.mp4", 3)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.mp4").write_bytes(b"someone else's")
    assert main(["batch", str(tmp_path / "in"), "-o", str(tmp_path / "out")]) == 2
    assert "output exists" in capsys.readouterr().err
    assert (tmp_path / "out" / "a.mp4").read_bytes() == b"someone else's"
