"""The shared live stream: frames, one pipeline for all viewers, caps, slow cameras, errors.

A slow camera holds no lock, viewers are capped, fps ends at stop; over the app, viewers
get MJPEG frames of the depth view from one shared pipeline, and the live pages answer.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from support.fakes import cheap_estimator
from support.mjpeg import MjpegServer

from stream.core.errors import SourceError
from stream.sources.capture import LiveSource
from stream.web import (
    DepthServer,
    LiveBusyError,
    LiveStream,
    LiveUnavailableError,
    create_app,
)
from web.conftest import picture


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


# ---------------------------------------------------------------- over the app


def read_parts(chunks: Iterator[bytes], count: int, boundary: bytes) -> list[bytes]:
    """The first ``count`` JPEG payloads of a multipart/x-mixed-replace body."""
    buf, parts = b"", []
    chunks = iter(chunks)
    while len(parts) < count:
        head_end = buf.find(b"\r\n\r\n")
        if head_end >= 0:
            head = buf[:head_end].decode()
            assert head.startswith(f"--{boundary.decode()}\r\n"), head
            length = int(re.search(r"Content-Length: (\d+)", head).group(1))
            assert "Content-Type: image/jpeg" in head
            end = head_end + 4 + length
            if len(buf) >= end + 2:
                parts.append(buf[head_end + 4:end])
                assert buf[end:end + 2] == b"\r\n"
                buf = buf[end + 2:]
                continue
        buf += next(chunks)
    return parts


def camera_picture() -> np.ndarray:
    return cv2.resize(picture(20), (64, 48))


@pytest.fixture
def mjpeg() -> Iterator[MjpegServer]:
    with MjpegServer([camera_picture()], fps=25).start() as cam:
        yield cam


@pytest.fixture
def live_app(tmp_path: Path, mjpeg: MjpegServer) -> Iterator[Flask]:
    app = create_app(tmp_path, cheap_estimator,
                     live_source=lambda: LiveSource.from_url(mjpeg.url))
    app.extensions["depthstream"].live.idle_s = 0.2
    yield app
    app.extensions["depthstream"].close()


def open_stream(client: FlaskClient, layout: str = "depth"):
    resp = client.get(f"/live/stream.mjpg?layout={layout}", buffered=False)
    assert resp.status_code == 200, resp.get_data()
    mime, _, boundary = resp.headers["Content-Type"].partition("; boundary=")
    assert mime == "multipart/x-mixed-replace" and boundary
    return resp, boundary.encode()


def wait_for(predicate, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_live_stream_yields_jpeg_frames_of_the_depth_view(live_app: Flask) -> None:
    client = live_app.test_client()
    resp, boundary = open_stream(client, "side")
    try:
        parts = read_parts(resp.response, 3, boundary)
    finally:
        resp.close()
    for jpeg in parts:
        assert jpeg[:2] == b"\xff\xd8" and jpeg[-2:] == b"\xff\xd9"
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (48, 128, 3)  # camera | depth
        assert np.abs(image[:, :64].astype(int) - camera_picture()).mean() < 12
        # the right half is the colourised depth, not the camera picture
        assert np.abs(image[:, 64:].astype(int) - camera_picture()).mean() > 20

    resp, boundary = open_stream(client, "depth")
    try:
        depth_view = read_parts(resp.response, 1, boundary)[0]
    finally:
        resp.close()
    assert cv2.imdecode(np.frombuffer(depth_view, np.uint8), cv2.IMREAD_COLOR).shape == (48, 64, 3)


def test_viewers_share_one_pipeline_which_stops_after_the_last(live_app: Flask) -> None:
    server: DepthServer = live_app.extensions["depthstream"]
    client = live_app.test_client()
    first, boundary = open_stream(client)
    second, _ = open_stream(client, "overlay")
    try:
        assert len(read_parts(first.response, 2, boundary)) == 2
        assert len(read_parts(second.response, 2, boundary)) == 2
        status = client.get("/api/live").get_json()
        assert status["running"] is True and status["viewers"] == 2
        assert status["size_wh"] == [64, 48]
        assert server.live.pipelines_started == 1
        wait_for(lambda: client.get("/api/live").get_json()["fps"] > 0)
    finally:
        first.close()
        second.close()
    wait_for(lambda: not client.get("/api/live").get_json()["running"])
    assert client.get("/api/live").get_json()["viewers"] == 0
    assert client.get("/api/live").get_json()["error"] is None  # stopped, not failed

    again, boundary = open_stream(client)  # the next viewer starts it again
    try:
        assert len(read_parts(again.response, 1, boundary)) == 1
        assert server.live.pipelines_started == 2
    finally:
        again.close()
    server.close()
    stages = ("depthstream-capture", "depthstream-inference", "depthstream-render")
    wait_for(lambda: not [t for t in threading.enumerate() if t.name in stages], 10.0)


def test_live_pages_and_errors(live_app: Flask, client: FlaskClient, tmp_path: Path) -> None:
    page = live_app.test_client().get("/live")
    assert page.status_code == 200 and b"/live/stream.mjpg" in live_app.test_client().get(
        "/static/live.js").data
    assert live_app.test_client().get("/api/info").get_json()["live"] is True
    assert live_app.test_client().get("/live/stream.mjpg?layout=fisheye").status_code == 400
    # the app without a camera has no live pages
    for path in ("/live", "/live/stream.mjpg", "/api/live"):
        resp = client.get(path)
        assert resp.status_code == 404 and "--camera" in resp.get_json()["error"]


def test_a_camera_that_does_not_open_is_503(tmp_path: Path) -> None:
    def no_camera() -> LiveSource:
        raise SourceError("cannot open camera 7: no frames from it")

    app = create_app(tmp_path, cheap_estimator, live_source=no_camera)
    try:
        client = app.test_client()
        resp = client.get("/live/stream.mjpg")
        assert resp.status_code == 503
        assert "camera 7" in resp.get_json()["error"]
        status = client.get("/api/live").get_json()
        assert status["running"] is False and "camera 7" in status["error"]
        assert status["viewers"] == 0
    finally:
        app.extensions["depthstream"].close()
