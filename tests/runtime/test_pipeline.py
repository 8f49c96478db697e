"""Pipeline: queues, order and drops, failures and stops, pluggable stages, bounded memory.

These tests are about the threads, not the network: most use ``cheap_estimator`` (a
documented test double, see support.fakes) so that thousands of frames run in seconds.
The real network's frame-by-frame equality is tested through the CLI
(tests/test_cli_stream.py).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from fractions import Fraction

import numpy as np
import pytest
from support.clips import make_clip, pattern
from support.fakes import cheap_estimator

from stream.core.errors import ConfigError, PipelineError, SourceError
from stream.core.records import Frame, VideoInfo
from stream.core.settings import Layout, StreamSettings
from stream.core.stats import RunStats
from stream.depth.colormap import DisplayRange
from stream.runtime.builder import convert
from stream.runtime.depth_stage import make_smoother
from stream.runtime.pipeline import Pipeline
from stream.runtime.queues import END, DropPolicy, FrameQueue, QueueSink
from stream.sinks.base import CallbackSink, Sink
from stream.sinks.video import VideoFileSink
from stream.sources.capture import FileSource, Source


class ListSource(Source):
    """Frames from a list, as fast as asked (or ``delay_s`` apart); optionally fails."""

    def __init__(self, count: int, live: bool = False, delay_s: float = 0.0,
                 fail_at: int | None = None) -> None:
        super().__init__()
        self.count, self.delay_s, self.fail_at = count, delay_s, fail_at
        self.info = VideoInfo(width=32, height=24, rate=Fraction(30), live=live,
                              time_base=Fraction(1, 30))
        self.closed_on: str | None = None

    def frames(self, stop: threading.Event | None = None) -> Iterator[Frame]:
        try:
            for i in range(self.count):
                if stop is not None and stop.is_set():
                    return
                if i == self.fail_at:
                    raise SourceError(f"source broke at frame {i} (as asked)")
                if self.delay_s:
                    time.sleep(self.delay_s)
                yield Frame(i, i / 30, pattern(i, (32, 24)), pts=i)
        finally:
            self.close()

    def close(self) -> None:
        self.closed_on = self.closed_on or threading.current_thread().name


def _threads_joined(p: Pipeline) -> bool:
    return all(not t.is_alive() for t in p._threads)


# --------------------------------------------------------------------------- queues


def test_frame_queue_block_policy_applies_backpressure_and_ends_after_items():
    q: FrameQueue[int] = FrameQueue(DropPolicy.BLOCK, maxsize=2)
    assert q.put(1) and q.put(2)
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    assert q.put(3, stop) is False  # full: waited, then gave up when stopped
    q.end()
    assert [q.get(1), q.get(1), q.get(1)] == [1, 2, END]
    assert q.dropped == 0


def test_frame_queue_wait_for_room_waits_for_a_get_or_a_stop():
    q: FrameQueue[int] = FrameQueue(DropPolicy.BLOCK, maxsize=1)
    assert q.wait_for_room()
    q.put(1)
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    start = time.monotonic()
    assert not q.wait_for_room(stop)  # full until the stop
    assert time.monotonic() - start >= 0.25
    threading.Timer(0.2, q.get).start()
    assert q.wait_for_room(threading.Event()) and len(q) == 0
    latest: FrameQueue[int] = FrameQueue(DropPolicy.LATEST)
    latest.put(1)
    assert latest.wait_for_room(stop)  # latest-wins never blocks


def test_frame_queue_latest_policy_keeps_newest_and_counts_drops():
    q: FrameQueue[int] = FrameQueue(DropPolicy.LATEST)
    for i in range(5):
        q.put(i)
    q.end()  # the end does not push out the waiting item
    assert (q.get(1), q.get(1), q.dropped) == (4, END, 4)


def test_frame_queue_get_times_out_and_drain_frees_producer():
    q: FrameQueue[int] = FrameQueue(DropPolicy.BLOCK, maxsize=1)
    with pytest.raises(queue.Empty):
        q.get(timeout=0.05)
    q.put(1)
    done = threading.Event()
    threading.Thread(target=lambda: (q.put(2), done.set()), daemon=True).start()
    assert not done.wait(0.2)
    assert q.drain() == 1
    assert done.wait(2)


# --------------------------------------------------------------------------- runs


def test_file_run_keeps_every_frame_in_order_with_tiny_queues():
    got: list[int] = []
    settings = StreamSettings(queue_size=1, smooth=0)
    p = Pipeline(ListSource(200), cheap_estimator(), [CallbackSink(lambda f: got.append(f.index))],
                 settings)
    stats = p.start().join(timeout=60)
    assert got == list(range(200))
    assert (stats.frames_read, stats.frames_inferred, stats.frames_written) == (200, 200, 200)
    assert stats.frames_dropped == 0 and not stats.interrupted
    assert stats.latency_ms_p50 is not None and stats.latency_ms_p95 >= stats.latency_ms_p50
    assert _threads_joined(p)


def test_live_run_drops_and_counts_but_never_reorders():
    got: list[int] = []
    src = ListSource(60, live=True, delay_s=0.005)
    p = Pipeline(src, cheap_estimator(delay_s=0.03), [CallbackSink(lambda f: got.append(f.index))],
                 StreamSettings(smooth=0))
    stats = p.start().join(timeout=60)
    assert stats.frames_read == 60
    assert stats.frames_dropped > 0
    assert stats.frames_written + stats.frames_dropped == 60  # every frame accounted for
    assert got == sorted(got) and got[-1] == 59  # the newest frame is never lost at the end


def test_inference_failure_stops_all_threads_and_leaves_no_partial_file(tmp_path):
    clip = make_clip(tmp_path / "in.mp4", 60, audio=False)
    sink = VideoFileSink(tmp_path / "out.mp4")
    p = Pipeline(FileSource(clip), cheap_estimator(fail_at=10), [sink], StreamSettings())
    p.start()
    with pytest.raises(PipelineError, match="inference thread failed: RuntimeError: cheap"):
        p.join(timeout=30)
    assert _threads_joined(p)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["in.mp4"]  # a failed run: nothing


def test_source_error_in_thread_keeps_its_type_and_closes_on_capture_thread():
    src = ListSource(50, fail_at=5)
    p = Pipeline(src, cheap_estimator(), [], StreamSettings())
    with pytest.raises(SourceError, match="broke at frame 5"):
        p.start().join(timeout=30)
    assert _threads_joined(p)
    assert src.closed_on == "depthstream-capture"


def test_stop_joins_every_thread_and_marks_interrupted():
    slow = ListSource(10_000)
    p = Pipeline(slow, cheap_estimator(delay_s=0.01), [], StreamSettings())
    p.start()
    time.sleep(0.3)
    p.stop()
    stats = p.join(timeout=10)
    assert _threads_joined(p)
    assert stats.interrupted and 0 < stats.frames_written < 10_000


def test_sink_done_stops_cleanly():
    class QuitAfterThree(Sink):
        def __init__(self):
            self.count = 0

        def write(self, frame):
            self.count += 1
            self.done = self.count == 3

    sink = QuitAfterThree()
    stats = Pipeline(ListSource(1000), cheap_estimator(), [sink]).start().join(timeout=30)
    assert sink.count == 3 and stats.interrupted  # no error raised


def test_context_manager_stops_and_joins():
    p = Pipeline(ListSource(10_000), cheap_estimator(delay_s=0.01), [])
    with p.start():
        time.sleep(0.1)
    assert _threads_joined(p)


def test_queue_sink_iterates_in_order_and_ends():
    out = QueueSink(maxsize=2)
    with Pipeline(ListSource(40), cheap_estimator(), [out]).start() as p:
        indices = [f.index for f in out]
        stats = p.join(timeout=30)
    assert indices == list(range(40)) and stats.frames_written == 40


def test_smoothing_stage_and_colour_range_are_pluggable():
    class AddBlue:
        """Adds the picture's mean blue level; reports a scene cut on the third frame."""

        def __init__(self):
            self.resets, self.calls, self.scene_cut = 0, 0, False

        def update(self, depth, image_bgr, *, consume=False):
            self.calls += 1
            self.scene_cut = self.calls == 3
            return depth + np.float32(image_bgr[:, :, 0].mean())

        def reset(self):
            self.resets += 1

    class Fixed:
        def __init__(self):
            self.resets = 0

        def update(self, depth):
            return -1.0, 99.0

        def reset(self):
            self.resets += 1

    got, smoother, colour_range = [], AddBlue(), Fixed()
    Pipeline(ListSource(4), cheap_estimator(), [CallbackSink(got.append)],
             smoother=smoother, colour_range=colour_range).start().join(timeout=30)
    plain = []
    Pipeline(ListSource(4), cheap_estimator(), [CallbackSink(plain.append)],
             StreamSettings(smooth=0)).start().join(timeout=30)
    assert smoother.calls == 4 and smoother.resets == 1  # reset once, at the start
    assert colour_range.resets == 2  # at the start and after the scene cut
    default_range = DisplayRange()  # the default colour range of streams
    for f, g in zip(got, plain):
        assert np.allclose(f.depth, g.depth + g.image[:, :, 0].mean())
        assert (f.lo, f.hi, f.smoothed) == (-1.0, 99.0, True)
        assert g.smoothed is False and (g.lo, g.hi) == default_range.update(g.depth)


def test_network_depth_is_kept_only_when_a_sink_reads_it():
    class Seen(Sink):
        """A sink that does not read raw_depth: it only keeps what it was given."""

        def __init__(self):
            self.frames = []

        def write(self, frame):
            self.frames.append(frame)

    quiet, wanting = Seen(), Seen()
    Pipeline(ListSource(5), cheap_estimator(), [quiet]).start().join(timeout=30)
    wanting.needs_network_depth = True
    Pipeline(ListSource(5), cheap_estimator(), [wanting]).start().join(timeout=30)
    assert [f.raw_depth for f in quiet.frames] == [None] * 5
    assert all(f.smoothed for f in quiet.frames + wanting.frames)
    plain = []
    Pipeline(ListSource(5), cheap_estimator(), [CallbackSink(plain.append)],
             StreamSettings(smooth=0)).start().join(timeout=30)
    for kept, network in zip(wanting.frames, plain):
        assert np.array_equal(kept.raw_depth, network.depth)
    # Smoothing changed later frames, so the two depths differ there.
    assert not np.array_equal(wanting.frames[-1].depth, wanting.frames[-1].raw_depth)


def test_large_file_frames_run_one_at_a_time_and_the_smoother_reuses_the_network_map(
        monkeypatch):
    import stream.runtime.pipeline as pipeline
    from stream.depth.smoothing import TemporalSmoother

    streamed, consumed = [], []
    estimator = cheap_estimator()
    many = estimator.predict_many
    monkeypatch.setattr(estimator, "predict_many", lambda items: streamed.append(1) or many(items))
    update = TemporalSmoother.update
    monkeypatch.setattr(TemporalSmoother, "update", lambda self, depth, frame=None, **kw: (
        consumed.append(kw.get("consume", False)) or update(self, depth, frame, **kw)))
    small = []
    Pipeline(ListSource(6), estimator, [CallbackSink(small.append)]).start().join(timeout=30)
    assert streamed == [1] and consumed == [False] * 6  # the callback may read raw_depth
    monkeypatch.setattr(pipeline, "ONE_AT_A_TIME_PIXELS", 32 * 24 - 1)  # "large" frames
    big, consumed[:] = [], []
    Pipeline(ListSource(6), estimator, [KeepingSink(big)]).start().join(timeout=30)
    assert streamed == [1] and consumed == [True] * 6  # no predict_many this time
    assert [f.index for f in big] == list(range(6))
    for a, b in zip(big, small):
        np.testing.assert_array_equal(a.depth, b.depth)


class KeepingSink(Sink):
    """Keeps the frames; does not read the network's own depth."""

    def __init__(self, frames):
        self.frames = frames

    def write(self, frame):
        self.frames.append(frame)


def test_settings_validation_and_smoother_switch():
    assert make_smoother(StreamSettings(smooth=0)) is None
    assert make_smoother(StreamSettings()) is not None
    assert StreamSettings(layout="side", raw_format="npy").layout is Layout.SIDE
    for bad in ({"smooth": -1}, {"layout": "grid"}, {"alpha": 2}, {"duration_s": 0},
                {"queue_size": 0}):
        with pytest.raises(ConfigError):
            StreamSettings(**bad)
    assert set(RunStats().to_dict()) >= {"frames_read", "frames_dropped", "latency_ms_p95"}


def test_convert_progress_and_stop_event(tmp_path):
    clip = make_clip(tmp_path / "in.mp4", 30, audio=False)
    calls = []
    stats = convert(clip, tmp_path / "out.mp4", StreamSettings(), estimator=cheap_estimator(),
                    progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 30) for i in range(1, 31)] and stats.frames_written == 30
    stop = threading.Event()
    stop.set()  # cancelled before it starts (a server's cancel button): no output at all
    stats = convert(clip, tmp_path / "none.mp4", StreamSettings(), estimator=cheap_estimator(),
                    stop_event=stop)
    assert stats.frames_written == 0 and not (tmp_path / "none.mp4").exists()


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    pytest.skip("no /proc/self/status")


@pytest.mark.slow
def test_memory_does_not_grow_with_length(tmp_path):
    clip = make_clip(tmp_path / "long.mp4", 3000, (64, 48), audio=True)
    rss: dict[int, float] = {}

    def progress(done: int, total: int | None) -> None:
        if done in (300, 3000):
            rss[done] = _rss_mb()

    stats = convert(clip, tmp_path / "out.mp4", StreamSettings(raw_dir=tmp_path / "raw"),
                    estimator=cheap_estimator(), progress=progress)
    assert stats.frames_written == 3000
    print(f"RSS after 300 frames {rss[300]:.1f} MB, after 3000 {rss[3000]:.1f} MB")
    assert rss[3000] - rss[300] < 50


def test_file_conversion_lowers_only_the_io_threads_priority(tmp_path):
    """Capture and render yield to the network on file input; live keeps normal priority."""
    import os

    def nice() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    base = nice()
    seen: list[int] = []
    clip = make_clip(tmp_path / "c.mp4", 3, size_wh=(64, 48), audio=False)
    Pipeline(FileSource(clip), cheap_estimator(), [CallbackSink(lambda f: seen.append(nice()))],
             StreamSettings(smooth=0)).start().join(timeout=30)
    assert seen and set(seen) == {min(base + 5, 19)}
    seen.clear()
    Pipeline(FileSource(clip, live=True), cheap_estimator(),
             [CallbackSink(lambda f: seen.append(nice()))],
             StreamSettings(smooth=0)).start().join(timeout=30)
    assert seen and set(seen) == {base}


def test_live_inference_of_the_next_frame_overlaps_smoothing_and_is_waited_for():
    """Live, the next frame's inference runs while the current one is smoothed.

    A backend that runs in the background: N frames take about N * max(d, s), not
    N * (d + s); frames keep their order and their own depth; a request in flight is
    waited for at the end.
    """
    from stream.engines.base import Backend
    from stream.engines.estimator import DepthEstimator

    d = s = 0.06

    class TimerJob:
        def __init__(self, output):
            self.output, self.ready, self.waited = output, threading.Event(), False
            timer = threading.Timer(d, self.ready.set)
            timer.daemon = True
            timer.start()

        def wait(self):
            self.ready.wait()
            self.waited = True
            return self.output

    class Background(Backend):
        """TEST DOUBLE: the input's mean red level, ready ``d`` after submit returns."""

        submits_in_background = True

        def __init__(self):
            self.jobs = []

        def infer(self, x):
            return np.full(x.shape[2:], x[0, 0].mean(), np.float32)

        def submit(self, x):
            assert all(job.waited for job in self.jobs), "two submissions in flight"
            self.jobs.append(TimerJob(self.infer(x)))
            return self.jobs[-1]

    class Sleepy:
        def __init__(self, fail_at=None):
            self.calls, self.fail_at = 0, fail_at

        def update(self, depth, image_bgr, *, consume=False):
            self.calls += 1
            if self.calls == self.fail_at:
                raise RuntimeError("smoother failed (as asked)")
            time.sleep(s)
            return depth

        def reset(self):
            pass

    class Keep(Sink):
        def __init__(self):
            self.frames, self.times = [], []

        def write(self, frame):
            self.frames.append(frame)
            self.times.append(time.perf_counter())
            self.done = len(self.frames) == 16

    backend, sink = Background(), Keep()
    src = ListSource(5000, live=True, delay_s=0.005)
    p = Pipeline(src, DepthEstimator(backend), [sink], smoother=Sleepy())
    p.start().join(timeout=60)
    assert _threads_joined(p)
    elapsed = sink.times[-1] - sink.times[0]  # 15 frames
    assert 15 * max(d, s) * 0.9 < elapsed < 1.5, elapsed  # one after another: 15 * (d + s)
    indices = [f.index for f in sink.frames]
    assert indices == sorted(set(indices))  # in order, none twice
    plain = DepthEstimator(Background())
    for f in sink.frames:  # each frame with its own picture's depth
        assert np.array_equal(f.depth, plain.predict(f.image[:, :, ::-1])[0])
    assert all(job.waited for job in backend.jobs)
    # A smoother that fails while the next frame is in flight: that request is waited for.
    backend = Background()
    p = Pipeline(ListSource(5000, live=True, delay_s=0.005), DepthEstimator(backend), [],
                 smoother=Sleepy(fail_at=4))
    with pytest.raises(PipelineError, match="smoother failed"):
        p.start().join(timeout=60)
    assert _threads_joined(p)
    assert len(backend.jobs) == 5 and all(job.waited for job in backend.jobs)
