"""Upload limits read from headers before decoding, over the test client and waitress.

Pixel bombs, video size and length, form abuse, SVG, and uploads in flight (raw sockets
where what the server reads before it answers matters).
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from support.clips import make_clip
from support.fakes import cheap_estimator
from support.web import Http, multipart, png_bytes, running, send_head

from stream.engines.estimator import DepthEstimator
from stream.web import MB, DepthServer, ServerConfig, create_app
from stream.web.uploads import picture_header

ROOT = Path(__file__).resolve().parents[2]
SVG = (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="4000" '
       b'height="4000"><rect width="4000" height="4000" fill="red"/></svg>\n')


def _no_estimator() -> DepthEstimator:
    raise AssertionError("these tests never start the worker")


def crafted_png(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height``, with one tiny, wrong IDAT chunk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def post(server: DepthServer, data: bytes, name: str = "x.png", **fields: str):
    return server.app.test_client().post(
        "/api/jobs", data={"file": (io.BytesIO(data), name), **fields},
        content_type="multipart/form-data")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[DepthServer]:
    server = DepthServer(ServerConfig(tmp_path / "data"), _no_estimator)
    yield server
    server.close()


# ---------------------------------------------------------------- pictures


def test_picture_header_reads_sizes_without_decoding(tmp_path: Path) -> None:
    path = tmp_path / "claims.png"
    path.write_bytes(crafted_png(12000, 9000))
    start = time.perf_counter()
    assert picture_header(path) == (12000, 9000, 108_000_000, "PNG")
    assert time.perf_counter() - start < 0.5
    path.write_bytes(crafted_png(30000, 20000))  # past Pillow's own limit: the pixels only
    assert picture_header(path) == (None, None, 600_000_000, None)
    path.write_bytes(SVG)
    assert picture_header(path) is None
    path.write_bytes(png_bytes(np.zeros((7, 9, 3), np.uint8), ".jpg"))
    assert picture_header(path) == (9, 7, 63, "JPEG")


@pytest.mark.parametrize("size_wh", [(10000, 10000), (32768, 32768), (1, 50_000_000)])
def test_a_picture_over_the_megapixel_limit_is_413_before_decoding(
        server: DepthServer, size_wh: tuple[int, int]) -> None:
    resp = post(server, crafted_png(*size_wh))
    assert resp.status_code == 413
    assert "pictures may have up to 40 megapixels" in resp.get_json()["error"]
    assert len(server.store) == 0
    assert list(server.store.uploads_dir.iterdir()) == []


def test_the_megapixel_limit_is_configurable(tmp_path: Path) -> None:
    server = DepthServer(ServerConfig(tmp_path, max_image_mp=0.001), _no_estimator)
    try:
        assert post(server, png_bytes(np.zeros((30, 30, 3), np.uint8))).status_code == 202
        resp = post(server, png_bytes(np.zeros((40, 30, 3), np.uint8)))
        assert resp.status_code == 413
        assert resp.get_json()["error"] == ("pictures may have up to 0.001 megapixels; "
                                            "this one has 0.0 (30x40)")
    finally:
        server.close()


def test_an_svg_is_400(server: DepthServer) -> None:
    resp = post(server, SVG, name="drawing.svg")
    assert resp.status_code == 400
    assert "neither a picture nor a video" in resp.get_json()["error"]


SERVER_SCRIPT = """
import signal, sys, threading
sys.path.insert(0, "tests")
from support.fakes import cheap_estimator
from stream.web import DepthServer, HttpServer, ServerConfig
server = DepthServer(ServerConfig(sys.argv[1]), cheap_estimator).start()
httpd = HttpServer(server, "127.0.0.1", 0)
signal.signal(signal.SIGTERM, lambda *_: httpd.request_stop())
signal.signal(signal.SIGINT, lambda *_: httpd.request_stop())
print(httpd.port, flush=True)
httpd.serve_forever()
"""


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_pixel_bomb_is_refused_fast_and_costs_the_server_no_memory(tmp_path: Path) -> None:
    """A real 10000x10000 PNG (a few hundred KB) and a 40000x40000 header: 413 in < 2 s."""
    import cv2

    bomb = cv2.imencode(".png", np.zeros((10000, 10000, 3), np.uint8))[1].tobytes()
    assert len(bomb) < 1 * MB
    proc = subprocess.Popen([sys.executable, "-c", SERVER_SCRIPT, str(tmp_path / "data")],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip().isdigit(), line + proc.stderr.read()
        client = Http(int(line))
        status, _ = client.upload(png_bytes(np.zeros((64, 64, 3), np.uint8)))  # warm up
        assert status == 202
        before = peak_rss_mb(proc.pid)
        times_ms = []
        for data in (bomb, crafted_png(40000, 40000)):
            start = time.perf_counter()
            status, body = client.upload(data, name="bomb.png")
            times_ms.append((time.perf_counter() - start) * 1000)
            assert status == 413, body
            assert "megapixels" in body["error"]
            assert times_ms[-1] < 2000, times_ms
        grown = peak_rss_mb(proc.pid) - before
        print(f"\npixel bombs ({len(bomb) / 1000:.0f} kB of 10000x10000, a 40000x40000 header): "
              f"refused in {times_ms[0]:.0f} and {times_ms[1]:.0f} ms, server peak RSS "
              f"{before:.0f} MB -> +{grown:.1f} MB")
        assert grown < 300, grown
        assert not list((tmp_path / "data" / "uploads").iterdir())
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0


@pytest.mark.parametrize("keep", [0.9, 0.5])
def test_a_truncated_jpeg_is_a_damaged_picture_not_a_video(server: DepthServer,
                                                            keep: float) -> None:
    """FFmpeg would decode what is left as a one-frame video: the content says picture."""
    jpeg = png_bytes(np.random.default_rng(0).integers(0, 255, (96, 128, 3), np.uint8), ".jpg")
    resp = post(server, jpeg[:int(len(jpeg) * keep)], name="photo.jpg")
    assert resp.status_code == 400
    assert resp.get_json()["error"] == "this picture is damaged or cut short: it cannot be decoded"
    assert len(server.store) == 0
    assert post(server, jpeg, name="photo.jpg").get_json()["kind"] == "picture"  # whole: fine


# ---------------------------------------------------------------- videos


@pytest.mark.parametrize(("limits", "needle"), [
    ({"max_video_wh": (128, 96)}, "video frames may be up to 128x96 pixels; this one's are "
                                  "160x120"),
    ({"max_video_s": 0.1}, "videos may be up to 0.00166667 minutes long"),
    ({"max_video_frames": 5}, "videos may have up to 5 frames; this one has 8"),
])
def test_a_video_over_a_header_limit_is_413(tmp_path: Path, limits: dict, needle: str) -> None:
    clip = make_clip(tmp_path / "clip.mp4", frames=8, size_wh=(160, 120), audio=False)
    server = DepthServer(ServerConfig(tmp_path / "data", **limits), _no_estimator)
    try:
        resp = post(server, clip.read_bytes(), name="clip.mp4")
        assert resp.status_code == 413
        assert needle in resp.get_json()["error"]
        assert len(server.store) == 0
    finally:
        server.close()


def test_a_video_longer_than_its_header_says_is_stopped(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The frame limit holds while the job runs too (a header can lie or say nothing)."""
    import stream.web.uploads

    monkeypatch.setattr(stream.web.uploads, "check_video", lambda *args: None)
    clip = make_clip(tmp_path / "clip.mp4", frames=12, audio=False)
    app = create_app(tmp_path / "data", cheap_estimator, max_video_frames=4)
    try:
        with running(app) as client:
            status, body = client.upload(clip.read_bytes(), name="clip.mp4")
            assert status == 202, body
            job = client.wait_done(body["id"], 120)
        assert job["status"] == "failed"
        assert job["error"] == "videos may have up to 4 frames; this one has more"
        folder = tmp_path / "data" / "jobs" / body["id"]
        assert [p.name for p in folder.iterdir()] == ["meta.json"]  # partial files gone
    finally:
        app.extensions["depthstream"].close()


def growing_clip(path: Path, sizes_wh: list[tuple[int, int]], fps: int = 10) -> Path:
    """An MJPEG AVI whose frames have the given sizes (its header: the first one's)."""
    import av

    time_base = Fraction(1, fps)
    encoders: dict[tuple[int, int], av.CodecContext] = {}
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mjpeg", rate=fps)
        stream.width, stream.height, stream.pix_fmt = *sizes_wh[0], "yuvj420p"
        for index, (w, h) in enumerate(sizes_wh):
            if (w, h) not in encoders:
                encoder = av.CodecContext.create("mjpeg", "w")
                encoder.width, encoder.height, encoder.pix_fmt = w, h, "yuvj420p"
                encoder.time_base = time_base
                encoders[(w, h)] = encoder
            frame = av.VideoFrame.from_ndarray(np.full((h, w, 3), 30 + 10 * index, np.uint8),
                                               format="rgb24").reformat(format="yuvj420p")
            frame.pts, frame.time_base = index, time_base
            for packet in encoders[(w, h)].encode(frame):
                packet.stream, packet.time_base = stream, time_base
                packet.pts = packet.dts = index
                out.mux(packet)
    return path


class _SizeLog(DepthEstimator):
    """The cheap test double, noting the size of every picture it is given."""

    def __init__(self) -> None:
        super().__init__(cheap_estimator().backend)
        self.sizes: list[tuple[int, int]] = []

    def predict(self, rgb: np.ndarray) -> tuple[np.ndarray, float]:
        self.sizes.append((rgb.shape[1], rgb.shape[0]))
        return super().predict(rgb)


def test_a_video_whose_frames_grow_past_the_limit_is_stopped(tmp_path: Path) -> None:
    """Every decoded frame is checked: a header of 64x48 does not let 160x120 frames in."""
    clip = growing_clip(tmp_path / "grows.avi", [(64, 48)] * 5 + [(160, 120)] * 5)
    network = _SizeLog()
    app = create_app(tmp_path / "data", lambda: network, max_video_wh=(100, 100))
    try:
        with running(app) as client:
            status, body = client.upload(clip.read_bytes(), name="grows.avi")
            assert status == 202, body  # the header and the first frame are within the limit
            job = client.wait_done(body["id"], 120)
        assert job["status"] == "failed"
        assert job["error"] == "video frames may be up to 100x100 pixels; frame 6 is 160x120"
        assert network.sizes and max(network.sizes) == (64, 48)  # never the large frames
        folder = tmp_path / "data" / "jobs" / body["id"]
        assert [p.name for p in folder.iterdir()] == ["meta.json"]  # partial files gone
    finally:
        app.extensions["depthstream"].close()


# ---------------------------------------------------------------- forms


def test_ten_thousand_form_fields_are_400_with_the_reason(server: DepthServer) -> None:
    fields = {f"f{i}": "x" for i in range(10_000)}
    resp = post(server, png_bytes(np.zeros((8, 8, 3), np.uint8)), **fields)
    assert resp.status_code == 400
    error = resp.get_json()["error"]
    assert "too many fields" in error and "the file is too large" not in error
    # a form field far over the form memory limit is the same mistake
    resp = post(server, png_bytes(np.zeros((8, 8, 3), np.uint8)), cmap="x" * 2_000_000)
    assert resp.status_code == 400 and "too many fields" in resp.get_json()["error"]


def test_form_abuse_over_http_is_400_too(tmp_path: Path) -> None:
    app = create_app(tmp_path, cheap_estimator, start=False)
    with running(app) as client:
        body, content_type = multipart(png_bytes(np.zeros((8, 8, 3), np.uint8)),
                                       **{f"f{i}": "x" for i in range(10_000)})
        status, headers, out = client.request("POST", "/api/jobs", body,
                                              {"Content-Type": content_type})
    assert status == 400 and "too many fields" in json.loads(out)["error"]


# ---------------------------------------------------------------- in flight


def test_uploads_in_flight_are_capped_with_retry_after(tmp_path: Path) -> None:
    app = create_app(tmp_path, cheap_estimator, max_uploads=1, start=False)
    with running(app) as client:
        # A slow upload of 3 MB holds the only slot while its body trickles in.
        body, content_type = multipart(b"\0" * 3 * MB)
        slow = socket.create_connection(("127.0.0.1", client.port), timeout=30)
        try:
            slow.sendall(f"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         f"Content-Type: {content_type}"
                         f"\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body[:MB])
            deadline = time.monotonic() + 20
            while True:  # until the server has read the slow one's headers
                start = time.perf_counter()
                status, headers, out = client.request("POST", "/api/jobs", *_two_mb_upload())
                if status == 503 or time.monotonic() > deadline:
                    break
                assert status == 400, out  # it got the slot itself: read, not a picture
                time.sleep(0.1)
            assert status == 503, out
            assert time.perf_counter() - start < 5
            assert headers["Retry-After"] == "5"
            assert "uploads are on their way in" in json.loads(out)["error"]
            # small uploads are not counted: they still go through
            status, _ = client.upload(png_bytes(np.zeros((8, 8, 3), np.uint8)))
            assert status == 202
            slow.sendall(body[MB:])  # the slow one ends (it is not a picture: 400)
            answer = slow.recv(65536)
            assert answer.startswith(b"HTTP/1.1 400"), answer
        finally:
            slow.close()
        deadline = time.monotonic() + 5  # the slot is given back just after the answer
        while True:
            status, _, out = client.request("POST", "/api/jobs", *_two_mb_upload())
            if status != 503 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert status == 400, out  # the slot is free again: read, and refused for what it is


def _two_mb_upload() -> tuple[bytes, dict[str, str]]:
    body, content_type = multipart(b"\1" * 2 * MB)
    return body, {"Content-Type": content_type}


def test_a_body_over_the_limit_is_refused_on_its_header(tmp_path: Path) -> None:
    app = create_app(tmp_path, cheap_estimator, max_image_mb=0.5, max_video_mb=1, start=False)
    with running(app) as client:
        head, body = send_head(client.port, (
            b"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 50000000000\r\n\r\n"))
        assert head.startswith(b"HTTP/1.1 413"), head
        assert json.loads(body)["error"] == ("the file is too large: pictures may be up to "
                                             "0.5 MB, videos up to 1 MB")
