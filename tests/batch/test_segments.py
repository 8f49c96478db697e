"""Segments joined frame-exactly: every frame's pts equals a one-machine convert's.

Cuts fall where a time is not a whole millisecond (MP4 stores a segment's start in an
edit list of milliseconds), on three time bases. The worker body runs in-process, with
the cheap test double for the network.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest
from support.clips import read_video
from support.fakes import cheap_estimator

from batch.test_batch_plan import CHEAP, make_gop_clip
from stream.batch.options import BatchSettings
from stream.batch.plan import plan_jobs
from stream.batch.segments import plan_video
from stream.batch.worker import ConvertTask, JoinTask, Worker
from stream.core.settings import StreamSettings
from stream.runtime.builder import convert


@pytest.mark.parametrize(("suffix", "rate", "time_base"), [
    (".mp4", Fraction(30), Fraction(1, 15360)),
    (".mp4", Fraction(30000, 1001), Fraction(1, 30000)),
    (".ts", Fraction(30), Fraction(1, 90000)),
])
def test_every_pts_equals_convert(tmp_path: Path, suffix: str, rate: Fraction,
                                  time_base: Fraction) -> None:
    clip = make_gop_clip(tmp_path / "in" / f"long{suffix}", 120, gop=25, rate=rate,
                         audio=False)
    reference = tmp_path / "ref.mp4"
    convert(clip, reference, StreamSettings(), estimator=cheap_estimator())
    batch = BatchSettings(out_dir=tmp_path / "out", estimator_factory=CHEAP)
    job = plan_jobs([clip], batch)[0]
    plan = plan_video(clip, 1.0, 0.5)
    assert plan.time_base == time_base and len(plan.segments) >= 2
    cuts = [s.start_pts * time_base * 1000 for s in plan.segments[1:]]
    assert all(cut.denominator != 1 for cut in cuts), cuts  # not whole milliseconds
    worker = Worker(StreamSettings(), batch)
    parts = []
    for segment in plan.segments:
        parts.append(tmp_path / "parts" / str(segment.number))
        worker.run(ConvertTask(job, parts[-1], segment))
    starts = tuple(s.start_pts for s in plan.segments)
    joined = worker.run(JoinTask(job, tuple(parts), plan.has_audio, plan.time_base,
                                 plan.rate, starts))
    assert joined.frames == 120
    ref, out = read_video(reference), read_video(job.output)
    assert out["time_base"] == ref["time_base"]
    assert len(ref["pts"]) == 120
    assert out["pts"] == ref["pts"]
