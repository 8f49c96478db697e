"""Tests for stream.api: ``estimate`` on one picture and ``DepthStream`` over a source."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from support.clips import NTSC, make_clip, pattern, read_video
from support.fakes import ShapeRecorder, cheap_estimator
from support.mjpeg import MjpegServer

import stream.api as api
from stream.api import DepthStream, clear_cache, estimate
from stream.core.errors import ConfigError, PipelineError, SourceError, WeightsError
from stream.engines.estimator import DepthEstimator
from stream.engines.factory import create_backend


@pytest.fixture
def fresh_cache() -> Iterator[None]:
    """No network loaded by ``estimate`` before or after the test."""
    clear_cache()
    yield
    clear_cache()


@pytest.fixture(scope="module", autouse=True)
def _release_networks() -> Iterator[None]:
    yield
    clear_cache()


def _picture(h: int = 72, w: int = 96) -> np.ndarray:
    """An RGB uint8 scene: a bright square in front of a gradient."""
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.dstack([xx * 255 // w, yy * 255 // h, np.full((h, w), 90)]).astype(np.uint8)
    rgb[h // 4: h // 2, w // 3: w // 2] = (240, 200, 30)
    return rgb


def test_estimate_equals_depth_estimator(state_dict: dict, weights_file: Path) -> None:
    """``estimate`` is the estimator's depth: float32 at the picture's size."""
    rgb = _picture()
    expected, _ = DepthEstimator(create_backend("torch", state_dict)).predict(rgb)
    depth = estimate(rgb, weights=weights_file, backend="torch")
    assert depth.dtype == np.float32 and depth.shape == rgb.shape[:2]
    np.testing.assert_allclose(depth, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_path_and_array_agree(weights_file: Path, tmp_path: Path) -> None:
    """A picture file gives the same depth as its RGB array (PNG is lossless)."""
    rgb = _picture()
    path = tmp_path / "scene.png"
    cv2.imwrite(str(path), rgb[:, :, ::-1])
    from_array = estimate(rgb, weights=weights_file)
    np.testing.assert_array_equal(estimate(path, weights=weights_file), from_array)
    np.testing.assert_array_equal(estimate(str(path), weights=weights_file), from_array)


def test_gray_and_rgba_pictures(weights_file: Path) -> None:
    """Gray ``[H, W]`` is the same picture as three equal channels; RGBA drops alpha."""
    gray = _picture()[:, :, 1]
    as_rgb = np.dstack([gray] * 3)
    np.testing.assert_array_equal(estimate(gray, weights=weights_file),
                                  estimate(as_rgb, weights=weights_file))
    rgb = _picture()
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])
    np.testing.assert_array_equal(estimate(rgba, weights=weights_file),
                                  estimate(rgb, weights=weights_file))


def test_network_is_loaded_once_per_weights_and_backend(
        weights_file: Path, monkeypatch: pytest.MonkeyPatch, fresh_cache: None) -> None:
    """Repeated and concurrent calls share one estimator; another backend gets its own."""
    calls = []
    real = api.create_estimator

    def counting(weights, backend, **options):
        calls.append((weights, backend))
        return real(weights, backend, **options)

    monkeypatch.setattr(api, "create_estimator", counting)
    rgb = _picture(40, 48)
    results: list[np.ndarray] = []
    threads = [threading.Thread(target=lambda: results.append(estimate(rgb, weights_file)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    estimate(rgb, str(weights_file))
    assert len(calls) == 1
    assert len(results) == 3
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])
    estimate(rgb, weights_file, backend="torch")
    assert len(calls) == 2


@pytest.mark.parametrize("image, error", [
    (np.zeros((4, 4, 2), np.uint8), ConfigError),
    (np.zeros((0, 4, 3), np.uint8), ConfigError),
    (np.zeros((4, 4, 3), np.float32), ConfigError),
    (np.zeros(5, np.uint8), ConfigError),
    ([[1, 2], [3, 4]], ConfigError),
    ("no/such/picture.png", SourceError),
])
def test_bad_pictures(image, error, weights_file: Path) -> None:
    """Arrays that are not pictures and unreadable paths fail with the library's errors."""
    with pytest.raises(error):
        estimate(image, weights=weights_file)


def test_missing_weights_is_a_weights_error(tmp_path: Path) -> None:
    """No checkpoint (and no download): a WeightsError, never random weights."""
    with pytest.raises(WeightsError):
        estimate(_picture(), weights=tmp_path / "missing.pt")
    with pytest.raises(WeightsError):
        estimate(_picture())  # default resolution: empty cache, unreachable download URL


# --------------------------------------------------------------------------- DepthStream


def _pipeline_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("depthstream-")]


def test_file_stream_yields_every_frame_in_order_with_pts_and_estimate_depth(
        weights_file: Path, tmp_path: Path) -> None:
    """Every frame of a file, in order, pts-based seconds, depth == ``estimate`` (no smoothing)."""
    clip = make_clip(tmp_path / "vfr.mp4", 6, size_wh=(64, 48), vfr=True, audio=False)
    expected = read_video(clip)
    with DepthStream(clip, weights=weights_file, backend="torch", smooth=False) as stream:
        assert not stream.live
        frames = list(stream)
    assert [f.index for f in frames] == list(range(6))
    assert [f.timestamp for f in frames] == pytest.approx(expected["seconds"], abs=1e-9)
    assert [f.pts for f in frames] == expected["pts"]
    assert len(set(np.diff(expected["seconds"]).round(6))) > 1  # really variable rate
    for frame, image in zip(frames, expected["images"]):
        np.testing.assert_array_equal(frame.image, image)
        assert frame.depth.dtype == np.float32 and frame.depth.shape == (48, 64)
        assert not frame.smoothed and frame.inference_ms > 0
        want = estimate(frame.image[:, :, ::-1], weights=weights_file, backend="torch")
        np.testing.assert_allclose(frame.depth, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_file_stream_waits_for_a_slow_reader(tmp_path: Path) -> None:
    """A file stream drops nothing however slowly it is read; ``latest`` is refused."""
    clip = make_clip(tmp_path / "c.mp4", 12, audio=False)
    with DepthStream(clip, estimator=cheap_estimator()) as stream:
        with pytest.raises(ConfigError, match="live"):
            stream.latest()
        indexes = []
        for frame in stream:
            indexes.append(frame.index)
            time.sleep(0.02)
        assert stream.dropped == 0
        assert not stream.running
    assert indexes == list(range(12))
    assert stream.stats().frames_written == 12


def test_latest_on_live_mjpeg_is_fresh_and_never_older(tmp_path: Path) -> None:
    """``latest`` skips what went stale while the caller was away, never goes back."""
    frames = [pattern(i, (96, 72)) for i in range(30)]
    with MjpegServer(frames, fps=30).start() as server, \
            DepthStream(server.url, estimator=cheap_estimator(), smooth=False) as stream:
        assert stream.live and stream.running
        first = stream.latest(timeout=20.0)
        assert first is not None
        got = [first]
        returned_at = time.monotonic()
        for _ in range(6):
            time.sleep(0.25)  # a control loop busy with something else
            frame = stream.latest(timeout=10.0)
            assert frame is not None
            # Captured after the previous call returned: not a frame that waited.
            assert frame.captured > returned_at
            assert frame.index > got[-1].index and frame.timestamp > got[-1].timestamp
            got.append(frame)
            returned_at = time.monotonic()
            again = stream.latest(timeout=0)
            assert again is None or again.index > frame.index
            if again is not None:
                got.append(again)
        assert stream.dropped > 0
        assert max(b.index - a.index for a, b in zip(got, got[1:])) > 2
        assert got[0].depth.shape == (72, 96) and got[0].image.shape == (72, 96, 3)


def test_live_iteration_gives_new_frames_in_order(tmp_path: Path) -> None:
    """Iterating a live stream gives increasing indexes and timestamps."""
    with MjpegServer([pattern(i, (64, 48)) for i in range(10)], fps=30).start() as server, \
            DepthStream(server.url, estimator=cheap_estimator()) as stream:
        got = []
        for frame in stream:
            got.append(frame)
            if len(got) == 5:
                break
    assert all(b.index > a.index and b.timestamp > a.timestamp for a, b in zip(got, got[1:]))
    assert all(f.smoothed for f in got)


def test_file_played_live_is_paced_and_latest_works(tmp_path: Path) -> None:
    """``live=True`` on a file: latest-frame-wins at the file's rate, pts timestamps kept."""
    clip = make_clip(tmp_path / "c.mp4", 20, audio=False)
    with DepthStream(clip, live=True, estimator=cheap_estimator()) as stream:
        assert stream.live and stream.info.live
        frame = stream.latest(timeout=10.0)
        assert frame is not None
        assert frame.timestamp == pytest.approx(frame.index / float(NTSC), abs=1e-6)


@pytest.mark.parametrize("live", [False, True])
def test_close_mid_stream_leaves_no_thread_alive(tmp_path: Path, live: bool) -> None:
    """Closing after a few frames stops and joins every thread the stream started."""
    clip = make_clip(tmp_path / "long.mp4", 300, audio=False)
    before = set(threading.enumerate())
    stream = DepthStream(clip, live=live, estimator=cheap_estimator(delay_s=0.01))
    frames = [next(stream) for _ in range(3)]
    assert len(_pipeline_threads()) == 3
    stream.close()
    stream.close()  # safe twice
    assert set(threading.enumerate()) - before == set()
    assert not stream.running
    assert frames[-1].index < 299
    assert next(stream, None) is None
    assert stream.stats().interrupted


def test_close_live_url_stream_leaves_no_pipeline_thread(tmp_path: Path) -> None:
    """The same for a network camera (the server's own threads are not ours)."""
    with MjpegServer([pattern(i, (64, 48)) for i in range(5)], fps=30).start() as server:
        with DepthStream(server.url, estimator=cheap_estimator()) as stream:
            assert stream.latest(timeout=20.0) is not None
            assert _pipeline_threads()
        assert _pipeline_threads() == []
        assert stream.closed


def test_failing_thread_surfaces_from_iteration_and_stops_the_rest(tmp_path: Path) -> None:
    """An inference failure ends the iteration with the error; no thread is left."""
    clip = make_clip(tmp_path / "c.mp4", 30, audio=False)
    with pytest.raises(PipelineError, match="inference"):
        with DepthStream(clip, estimator=cheap_estimator(fail_at=4)) as stream:
            for _ in stream:
                pass
    assert _pipeline_threads() == []


def test_bad_sources(tmp_path: Path) -> None:
    """A missing file, an unreachable URL, a wrong type: errors before any thread."""
    with pytest.raises(SourceError):
        DepthStream(tmp_path / "missing.mp4", estimator=cheap_estimator())
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SourceError):
        DepthStream(f"http://127.0.0.1:{port}/x.mjpg", estimator=cheap_estimator())
    with pytest.raises(ConfigError):
        DepthStream(3.5, estimator=cheap_estimator())  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        DepthStream(tmp_path / "x.mp4", smooth=-1, estimator=cheap_estimator())
    assert _pipeline_threads() == []


def test_stream_loads_its_weights(weights_file: Path, tmp_path: Path) -> None:
    """Without an estimator the stream loads the checkpoint; a missing one is an error."""
    clip = make_clip(tmp_path / "c.mp4", 2, audio=False)
    with pytest.raises(WeightsError):
        DepthStream(clip, weights=tmp_path / "missing.pt")
    assert _pipeline_threads() == []


def test_live_stream_ends_when_the_camera_stops(tmp_path: Path) -> None:
    """A URL that stops sending: ``latest`` returns None, the stream stops running."""
    server = MjpegServer([pattern(i, (64, 48)) for i in range(5)], fps=30).start()
    with DepthStream(server.url, estimator=cheap_estimator()) as stream:
        assert stream.latest(timeout=20.0) is not None
        server.stop()
        deadline = time.monotonic() + 30.0
        while stream.running and time.monotonic() < deadline:
            stream.latest(timeout=1.0)
        assert not stream.running
        assert stream.latest(timeout=0) is None
    assert _pipeline_threads() == []


@pytest.mark.parametrize(("live", "own", "asked", "side"), [
    (False, None, None, "video"), (True, None, None, "live"), (False, 266, None, 266),
    (True, 266, 280, 280), (False, None, 280, 280)])
def test_a_given_estimator_runs_at_the_side_for_the_source(tmp_path: Path, live: bool,
                                                           own: int | None, asked: int | None,
                                                           side: str | int) -> None:
    """``input_size``, else the estimator's own, else the use's side (as a loaded one)."""
    clip = make_clip(tmp_path / "c.mp4", frames=4, size_wh=(64, 48), audio=False)
    backend = ShapeRecorder()
    estimator = DepthEstimator(backend, own)
    with DepthStream(clip, estimator=estimator, live=live, input_size=asked) as stream:
        frames = list(stream)
    assert frames
    spec = backend.spec
    expected = {"video": spec.video_side, "live": spec.live_side}.get(side, side)
    assert set(backend.shapes) == {spec.input.network_size(48, 64, expected)}
    assert backend.calls == len(backend.shapes)
    estimator.close()
