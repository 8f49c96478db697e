"""The shared live stream: a slow camera holds no lock, viewers are capped, fps ends at stop."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from support.fakes import cheap_estimator
from support.mjpeg import MjpegServer

from stream.sources import LiveSource
from stream.web import LiveBusyError, LiveStream, LiveUnavailableError, create_app


@pytest.fixture
def camera() -> Iterator[MjpegServer]:
    frame = np.zeros((48, 64, 3), np.uint8)
    frame[:, 32:] = 200
    with MjpegServer([frame], fps=25).start() as cam:
        yield cam


def slow_opener(url: str, delay_s: float, opened: list[float]):
    """A camera that takes ``delay_s`` to open and to close (as some USB cameras do)."""

    def open_source() -> LiveSource:
        time.sleep(delay_s)
        opened.append(time.monotonic())
        source = LiveSource.from_url(url)
        close = source.close

        def slow_close() -> None:
            time.sleep(delay_s)
            close()

        source.close = slow_close
        return source

    return open_source


def _status_at_once(live) -> dict:
    """``live.status()``, which must answer within 0.2 s whatever the camera is doing."""
    start = time.perf_counter()
    status = live.status()
    assert time.perf_counter() - start < 0.2
    return status


def test_a_slow_camera_holds_up_nobody(camera: MjpegServer) -> None:
    opened: list[float] = []
    estimator = cheap_estimator()
    live = LiveStream(slow_opener(camera.url, 2.0, opened), lambda: estimator, idle_s=0.1)
    viewers = []
    try:
        threads = [threading.Thread(target=lambda: viewers.append(live.viewer()))
                   for _ in range(2)]
        for t in threads:
            t.start()
            time.sleep(0.2)
        # the camera is opening (2 s): the status answers at once, and says so
        status = _status_at_once(live)
        assert status["running"] is False and status["viewers"] == 2
        for t in threads:
            t.join(30)
        assert len(viewers) == 2 and len(opened) == 1  # the second viewer waited, shared it
        assert live.pipelines_started == 1
        part = next(iter(viewers[0]))
        assert part.startswith(b"--depthframe")
        for v in viewers:
            v.close()
        # the pipeline stops (the camera takes 2 s to close): status still answers at once
        time.sleep(0.5)
        status = _status_at_once(live)
        assert status["running"] is False and status["fps"] == 0
    finally:
        live.close()


def test_viewers_are_capped(camera: MjpegServer) -> None:
    estimator = cheap_estimator()
    live = LiveStream(lambda: LiveSource.from_url(camera.url), lambda: estimator,
                      max_viewers=2)
    try:
        first, second = live.viewer(), live.viewer("side")
        with pytest.raises(LiveBusyError, match="2 viewers watch already"):
            live.viewer()
        assert live.status()["viewers"] == 2
        first.close()
        third = live.viewer()  # a place came free
        third.close()
        second.close()
    finally:
        live.close()
    with pytest.raises(LiveUnavailableError, match="stopping"):
        live.viewer()


def test_over_http_the_cap_is_a_503_and_fps_is_zero_after_stop(tmp_path: Path,
                                                              camera: MjpegServer) -> None:
    app = create_app(tmp_path, cheap_estimator, max_viewers=1,
                     live_source=lambda: LiveSource.from_url(camera.url))
    server = app.extensions["depthstream"]
    server.live.idle_s = 0.1
    client = app.test_client()
    try:
        first = client.get("/live/stream.mjpg", buffered=False)
        assert first.status_code == 200
        next(iter(first.response))
        resp = client.get("/live/stream.mjpg")
        assert resp.status_code == 503 and resp.headers["Retry-After"] == "5"
        assert "1 viewers watch already" in resp.get_json()["error"]
        deadline = time.monotonic() + 20
        while client.get("/api/live").get_json()["fps"] == 0:
            assert time.monotonic() < deadline
            for _ in range(3):
                next(iter(first.response))
        first.close()
        deadline = time.monotonic() + 20
        while client.get("/api/live").get_json()["running"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        status = client.get("/api/live").get_json()
        assert status["fps"] == 0  # not the last two seconds' rate of a stopped stream
        assert status["max_viewers"] == 1
    finally:
        server.close()
