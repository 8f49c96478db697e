"""The server over real HTTP on 127.0.0.1 (waitress): load, ``serve()``, live MJPEG, big uploads.

The load: 20 concurrent uploads while 50 status polls a second go on.

Each test runs the production server (:class:`stream.web.HttpServer`) on an ephemeral
port and talks to it with ``http.client``, as a browser or a robot would. No timing is
asserted; the load test prints how long the 20 jobs took and how fast polls answered.
"""

from __future__ import annotations

import http.client
import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from flask import Flask
from support.fakes import cheap_estimator
from support.mjpeg import MjpegServer
from support.web import Http, running

from stream.core.errors import ConfigError, SinkError, SourceError
from stream.engines.estimator import DepthEstimator
from stream.engines.torch_backend import TorchBackend
from stream.sources.capture import LiveSource
from stream.web import DepthServer, create_app, serve

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 300.0


def picture(seed: int) -> np.ndarray:
    """64x48, a different gradient and disc for every seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:48, 0:64].astype(np.float32)
    a, b, c = rng.uniform(0.5, 3.0, 3)
    img = np.stack([127 + 120 * np.sin(a * x / 20 + c), 127 + 120 * np.cos(b * y / 15),
                    np.full_like(x, rng.uniform(0, 255))], -1)
    cx, cy = rng.uniform(15, 50), rng.uniform(12, 36)
    img[(x - cx) ** 2 + (y - cy) ** 2 < 80] = rng.uniform(150, 255)
    return img.astype(np.uint8)


@pytest.fixture(scope="module")
def app(state_dict: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    app = create_app(tmp_path_factory.mktemp("data"),
                     lambda: DepthEstimator(TorchBackend(state_dict)))
    yield app
    app.extensions["depthstream"].close()


class Poller:
    """Polls ``/api/info`` at a fixed rate from one thread and keeps each answer's latency."""

    def __init__(self, client: Http, rate_hz: float) -> None:
        self.client = client
        self.period_s = 1.0 / rate_hz
        self.latencies_ms: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                         for i in range(4)]  # 4 pollers, so one slow answer skips no beat
        self.elapsed_s = 0.0

    def _run(self, index: int) -> None:
        next_at = time.monotonic() + index * self.period_s
        while not self._stop.is_set():
            next_at += len(self._threads) * self.period_s
            start = time.perf_counter()
            status, _, _ = self.client.request("GET", "/api/info")
            self.latencies_ms.append((time.perf_counter() - start) * 1000.0)
            if status != 200:
                self.failures.append(str(status))
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def __enter__(self) -> Poller:
        self._start = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        self.elapsed_s = time.monotonic() - self._start


def test_twenty_concurrent_uploads_all_complete_with_their_own_result(app: Flask) -> None:
    server: DepthServer = app.extensions["depthstream"]
    pictures = [picture(seed) for seed in range(20)]
    with running(app, close_app=False) as client:
        def one(index: int) -> tuple[int, dict, np.ndarray]:
            data = cv2.imencode(".png", pictures[index])[1].tobytes()
            status, body = client.upload(data, name=f"pic{index}.png")
            assert status == 202, body
            done = client.wait_done(body["id"], TIMEOUT_S)
            assert done["status"] == "done", done["error"]
            status, _, raw = client.request("GET", done["results"]["depth16_npy"]["url"])
            assert status == 200
            return index, done, np.load(io.BytesIO(raw))

        with Poller(client, rate_hz=50.0) as poller:
            start = time.perf_counter()
            with ThreadPoolExecutor(max_workers=20) as pool:
                results = list(pool.map(one, range(20)))
            elapsed = time.perf_counter() - start

    assert poller.failures == []
    assert len({done["id"] for _, done, _ in results}) == 20
    assert server.worker.jobs_run >= 20
    # Each result is the network's depth of its own picture (no mix-up under load);
    # the 20 expected depths all differ, so a swapped result would fail.
    expected = [server.worker.estimator.predict(cv2.cvtColor(p, cv2.COLOR_BGR2RGB))[0]
                for p in pictures]
    assert min(np.abs(expected[i] - expected[j]).max()
               for i in range(20) for j in range(i)) > 1e-3
    for index, _, depth in results:
        assert depth.shape == (48, 64)
        np.testing.assert_allclose(depth, expected[index], rtol=1e-4,
                                   atol=1e-4 * float(np.ptp(expected[index])))
    per_job = [done["info"]["elapsed_ms"] for _, done, _ in results]
    polls = np.asarray(poller.latencies_ms)
    print(f"\n20 concurrent uploads on waitress: {elapsed:.2f} s in all; per job (worker) "
          f"{np.median(per_job):.0f} ms median, network "
          f"{np.median([d['info']['inference_ms'] for _, d, _ in results]):.0f} ms median; "
          f"{len(polls) / poller.elapsed_s:.1f} polls/s answered, latency p50 "
          f"{np.percentile(polls, 50):.1f} ms, p95 {np.percentile(polls, 95):.1f} ms, "
          f"max {polls.max():.0f} ms")


def _start_serving(code: str, *args: str) -> tuple[subprocess.Popen, str]:
    """Run ``code`` (which calls serve) in a child; wait for its URL line."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    line = proc.stdout.readline()
    if not line:
        proc.wait(30)
        raise AssertionError(proc.stderr.read())
    return proc, line


def test_serve_runs_until_interrupted(weights_file: Path, tmp_path: Path) -> None:
    # The child may inherit an ignored SIGINT from a background pytest: set it explicitly.
    code = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from stream.web import serve; "
            "serve(port=0, data_dir=sys.argv[1], weights=sys.argv[2], backend='torch')")
    proc, line = _start_serving(code, str(tmp_path / "data"), str(weights_file))
    try:
        match = re.search(r"serving on http://127\.0\.0\.1:(\d+)/; no token", line)
        assert match, line
        client = Http(int(match.group(1)))
        status, info = client.json("/api/info")
        assert status == 200 and info["live"] is False
        status, body = client.upload(cv2.imencode(".jpg", picture(99))[1].tobytes())
        assert status == 202
        assert client.wait_done(body["id"])["status"] == "done"
        assert (tmp_path / "data" / "jobs" / body["id"] / "result.png").is_file()
        proc.send_signal(signal.SIGINT)  # Ctrl-C: a clean stop, serve() returns
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "depthstream: stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_the_serve_command_answers_to_its_host_names_only(weights_file: Path,
                                                          tmp_path: Path) -> None:
    """``serve --allow-host NAME`` adds a name; any other (DNS rebinding) is a 403."""
    code = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from stream.cli import main; sys.exit(main(sys.argv[1:]))")
    proc, line = _start_serving(code, "serve", "--port", "0", "--data-dir",
                                str(tmp_path / "data"), "--weights", str(weights_file),
                                "--backend", "torch", "--allow-host", "Depth.Example.org")
    try:
        port = int(re.search(r"serving on http://127\.0\.0\.1:(\d+)/", line).group(1))
        client = Http(port)
        for host, status in ((f"127.0.0.1:{port}", 200), (f"localhost:{port}", 200),
                             (f"depth.example.org:{port}", 200),
                             (f"attacker.example:{port}", 403)):
            assert client.request("GET", "/api/info", headers={"Host": host})[0] == status, host
        assert client.json("/api/info")[1]["model"] == "midas-small"
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def read_mjpeg(port: int, count: int, layout: str = "depth") -> tuple[list[bytes], object]:
    """Open the live stream over a socket, read ``count`` JPEGs; return them and the response.

    The response holds the socket: keep it referenced while the viewer should stay.
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", f"/live/stream.mjpg?layout={layout}")
    resp = conn.getresponse()
    assert resp.status == 200
    boundary = resp.getheader("Content-Type").split("boundary=")[1]
    jpegs = []
    while len(jpegs) < count:
        line = resp.fp.readline()
        if line.strip() != f"--{boundary}".encode():
            continue
        headers = {}
        while (line := resp.fp.readline().strip()):
            key, _, value = line.decode().partition(": ")
            headers[key] = value
        assert headers["Content-Type"] == "image/jpeg"
        jpegs.append(resp.fp.read(int(headers["Content-Length"])))
    return jpegs, resp


def test_live_stream_over_http_is_shared_and_freed(tmp_path: Path) -> None:
    frame = np.zeros((48, 64, 3), np.uint8)
    frame[:, 32:] = 200
    with MjpegServer([frame], fps=30).start() as cam:
        app = create_app(tmp_path, cheap_estimator,
                         live_source=lambda: LiveSource.from_url(cam.url))
        server: DepthServer = app.extensions["depthstream"]
        server.live.idle_s = 0.2
        try:
            with running(app) as client:
                first, resp1 = read_mjpeg(client.port, 3)
                second, resp2 = read_mjpeg(client.port, 2, "side")
                for jpeg in first + second:
                    assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR) \
                        is not None
                assert cv2.imdecode(np.frombuffer(second[0], np.uint8),
                                    cv2.IMREAD_COLOR).shape == (48, 128, 3)
                status, live = client.json("/api/live")
                assert live["viewers"] == 2 and live["running"]
                assert server.live.pipelines_started == 1
                # Viewers that hang up are noticed (at the next frame) and let go.
                resp1.close()
                resp2.close()
                deadline = time.monotonic() + 20
                while client.json("/api/live")[1]["running"]:
                    assert time.monotonic() < deadline, client.json("/api/live")[1]
                    time.sleep(0.1)
                assert client.json("/api/live")[1]["viewers"] == 0
        finally:
            server.close()


def test_large_and_oversize_uploads_over_http(app: Flask, tmp_path: Path) -> None:
    server: DepthServer = app.extensions["depthstream"]
    noisy = np.random.default_rng(1).integers(0, 255, (600, 640, 3), np.uint8)
    data = cv2.imencode(".png", noisy)[1].tobytes()
    assert len(data) > 1_000_000  # spooled to disk (in the data folder) on its way in
    with running(app, close_app=False) as client:
        status, body = client.upload(data, name="big.png")
        assert status == 202, body
        done = client.wait_done(body["id"])
        assert done["status"] == "done" and done["info"]["width"] == 640

    small = create_app(tmp_path, cheap_estimator, max_image_mb=0.5, max_video_mb=2, start=False)
    with running(small) as client:
        # over the largest limit: refused before the body is read, still a JSON 413
        status, body = client.upload(b"\0" * 5_000_000)
        assert status == 413
        assert body["error"] == ("the file is too large: pictures may be up to 0.5 MB, "
                                 "videos up to 2 MB")
        # between the limits: read, decoded as a picture, refused as a picture
        status, body = client.upload(data)
        assert status == 413 and body["error"].startswith("pictures may be up to 0.5 MB")
    assert list(server.store.uploads_dir.iterdir()) == []
    assert list(small.extensions["depthstream"].store.uploads_dir.iterdir()) == []


def test_serve_refuses_a_busy_port_and_bad_live_options(weights_file: Path,
                                                        tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not both"):
        serve(port=0, data_dir=tmp_path, weights=weights_file, camera=0, url="rtsp://x")
    with pytest.raises(SourceError, match="cannot open URL"):
        serve(port=0, data_dir=tmp_path, weights=weights_file, url="http://127.0.0.1:9/none")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        before = {t.name for t in threading.enumerate()}
        with pytest.raises(SinkError, match=f"cannot listen on 127.0.0.1:{port}"):
            serve(port=port, data_dir=tmp_path, weights=weights_file, backend="torch")
    assert not [name for name in {t.name for t in threading.enumerate()} - before
                if name.startswith("depthstream-jobs")]
