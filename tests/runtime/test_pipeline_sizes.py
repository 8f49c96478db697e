"""The pipeline with frames that change size, and with runs that fail: what sinks get.

Frames keep their own size from the source to the sinks, each with the stream's camera
seen at that size; a failed run aborts the sinks that can be aborted (and adds what they
kept to the error's one line), a stopped one closes them.
"""

from __future__ import annotations

import errno

import pytest
from support.clips import make_mixed_size_clip
from support.fakes import cheap_estimator

from stream.core.errors import SinkError
from stream.core.settings import RobotSettings, StreamSettings
from stream.geometry.camera import stream_camera
from stream.runtime.builder import run
from stream.runtime.pipeline import Pipeline, SizedCamera
from stream.sinks.base import CallbackSink, Sink
from stream.sources.capture import FileSource


def test_every_frame_has_the_camera_of_its_own_size(tmp_path):
    clip = make_mixed_size_clip(tmp_path / "mixed.avi", [(3, (64, 48)), (3, (128, 96)),
                                                          (2, (32, 64))])
    source = FileSource(clip)
    robot = RobotSettings(fov_deg=90.0, known_distances=((10, 20, 2.0), (40, 50, 4.0)))
    camera = stream_camera(robot, *source.info.size_wh)
    frames = []
    run(Pipeline(source, cheap_estimator(), [CallbackSink(frames.append)],
                 StreamSettings(smooth=0), camera=camera))

    assert [f.size_wh for f in frames] == [(64, 48)] * 3 + [(128, 96)] * 3 + [(32, 64)] * 2
    assert all(f.camera.size_wh == f.size_wh == f.depth.shape[::-1] for f in frames)
    first, double, narrow = frames[0].camera, frames[3].camera, frames[6].camera
    assert double.fx == pytest.approx(2 * first.fx) and double.fy == pytest.approx(2 * first.fy)
    assert (double.cx, double.cy) == pytest.approx((2 * first.cx + 0.5, 2 * first.cy + 0.5))
    assert narrow.fx == pytest.approx(first.fx / 2)
    assert narrow.fy == pytest.approx(first.fy * 64 / 48)


def test_sized_camera_scales_the_known_points_with_the_picture():
    robot = RobotSettings(known_distances=((10, 20, 2.0), (40, 60, 4.0)))
    sized = SizedCamera(stream_camera(robot, 64, 48))
    assert sized._scaled(128, 96).known == ((20, 40, 2.0), (80, 120, 4.0))
    assert sized._scaled(32, 24).known == ((5, 10, 2.0), (20, 30, 4.0))


class _Abortable(Sink):
    """A sink that records how it was ended; it keeps what it wrote after a full disk."""

    def __init__(self) -> None:
        self.ended = ""

    def write(self, frame) -> None:
        pass

    def close(self) -> None:
        self.ended = self.ended or "closed"

    def abort(self, error: BaseException | None = None) -> str | None:
        self.ended = "aborted"
        full = isinstance(error.__cause__, OSError) and error.__cause__.errno == errno.ENOSPC
        return "the 3 frames written were kept in x.partial.mp4" if full else None


class _Fails(Sink):
    def __init__(self, full: bool) -> None:
        self.full, self.count = full, 0

    def write(self, frame) -> None:
        self.count += 1
        if self.count == 3:
            if self.full:
                raise SinkError("cannot write y: No space left on device") from OSError(
                    errno.ENOSPC, "No space left on device")
            raise SinkError("cannot write y: broken pipe")


@pytest.mark.parametrize("full", [False, True])
def test_a_failed_run_aborts_the_sinks_that_can_be_and_says_what_they_kept(tmp_path, full):
    clip = make_mixed_size_clip(tmp_path / "c.avi", [(8, (64, 48))])
    abortable = _Abortable()
    pipeline = Pipeline(FileSource(clip), cheap_estimator(), [abortable, _Fails(full)])
    with pytest.raises(SinkError) as info:
        run(pipeline)
    assert abortable.ended == "aborted"
    kept = "; the 3 frames written were kept in x.partial.mp4"
    assert str(info.value) == ("cannot write y: No space left on device" + kept if full
                               else "cannot write y: broken pipe")


def test_a_stopped_run_closes_its_sinks(tmp_path):
    clip = make_mixed_size_clip(tmp_path / "c.avi", [(8, (64, 48))])
    sink = _Abortable()
    pipeline = Pipeline(FileSource(clip), cheap_estimator(delay_s=0.05), [sink])
    pipeline.start()
    pipeline.stop()
    pipeline.join(30)
    assert sink.ended == "closed"
