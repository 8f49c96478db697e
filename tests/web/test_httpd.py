"""The production HTTP server: write timeouts, a clean SIGTERM stop, and its headers."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from support.clips import make_clip
from support.fakes import cheap_estimator
from support.mjpeg import MjpegServer
from support.web import Http, multipart, png_bytes, running

from stream.sources.capture import LiveSource
from stream.web import DepthServer, create_app

ROOT = Path(__file__).resolve().parents[2]


def wait_until(predicate, timeout_s: float, what: str) -> float:
    """Seconds until ``predicate()`` held."""
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout_s, f"timed out waiting for {what}"
        time.sleep(0.05)
    return time.monotonic() - start


def test_a_live_viewer_that_reads_nothing_is_let_go(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 255, (480, 640, 3), np.uint8)  # big JPEGs
    write_timeout_s = 2.0
    with MjpegServer([noise], fps=25, max_s=60).start() as cam:
        app = create_app(tmp_path, cheap_estimator, write_timeout_s=write_timeout_s,
                         live_source=lambda: LiveSource.from_url(cam.url))
        server: DepthServer = app.extensions["depthstream"]
        server.live.idle_s = 0.2
        with running(app) as client:
            stuck = socket.socket()
            stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills at once
            stuck.connect(("127.0.0.1", client.port))
            try:
                stuck.sendall(b"GET /live/stream.mjpg?layout=side HTTP/1.1\r\n"
                              b"Host: 127.0.0.1\r\n\r\n")
                wait_until(lambda: client.json("/api/live")[1]["fps"] > 0, 30, "frames")
                assert client.json("/api/live")[1]["viewers"] == 1
                # It reads nothing: the buffers fill, then the write timeout lets it go.
                released = wait_until(lambda: client.json("/api/live")[1]["viewers"] == 0,
                                      write_timeout_s + 15, "the stuck viewer to go")
                print(f"\nnon-reading viewer let go {released:.1f} s after it connected "
                      f"(write timeout {write_timeout_s:g} s)")
                # ...and with nobody watching, the camera stops
                wait_until(lambda: not client.json("/api/live")[1]["running"], 10, "stop")
                status = client.json("/api/live")[1]
                assert status["fps"] == 0 and status["viewers"] == 0
                # the server is fine for everyone else
                assert client.json("/api/info")[0] == 200
            finally:
                stuck.close()


def test_file_answers_carry_one_date_and_errors_their_headers(tmp_path: Path) -> None:
    app = create_app(tmp_path, cheap_estimator, max_queued=1)
    with running(app) as client:
        status, body = client.upload(png_bytes(np.full((48, 64, 3), 120, np.uint8)))
        assert status == 202
        job = client.wait_done(body["id"], 60)
        for url in ("/", "/static/app.js", job["results"]["result_png"]["url"],
                    job["results"]["depth16_npy"]["download_url"], "/api/info"):
            status, headers, _ = client.request("GET", url)
            assert status == 200, url
            assert len(headers.get_all("Date")) == 1, (url, headers.get_all("Date"))
            assert headers["Server"] == "depthstream"
        status, headers, out = client.request("PUT", "/api/jobs")
        assert status == 405 and set(headers["Allow"].split(", ")) == {"POST", "OPTIONS"}
        assert json.loads(out)["status"] == 405
        # a full queue (the worker waits for a model that never comes): 503, Retry-After
    blocked = create_app(tmp_path / "b", cheap_estimator, max_queued=1, start=False)
    with running(blocked) as client:
        assert client.upload(png_bytes(np.zeros((8, 8, 3), np.uint8)))[0] == 202
        status, headers, out = client.request(
            "POST", "/api/jobs", *_upload(png_bytes(np.ones((8, 8, 3), np.uint8))))
        assert status == 503 and headers["Retry-After"] == "5"
        assert "busy" in json.loads(out)["error"]


def _upload(data: bytes) -> tuple[bytes, dict[str, str]]:
    body, content_type = multipart(data)
    return body, {"Content-Type": content_type}


def test_sigterm_stops_the_server_cleanly_within_ten_seconds(weights_file: Path,
                                                             tmp_path: Path) -> None:
    """``depthstream serve`` with a video job running: SIGTERM, exit 0, the job failed."""
    clip = make_clip(tmp_path / "long.mp4", frames=600, size_wh=(64, 48), audio=False)
    data_dir = tmp_path / "data"
    # Signal dispositions set explicitly: pytest may run in the background (SIGINT ignored).
    code = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "signal.signal(signal.SIGTERM, signal.SIG_DFL); import stream.cli as cli; "
            "sys.exit(cli.main(sys.argv[1:]))")
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "serve", "--port", "0", "--data-dir", str(data_dir),
         "--weights", str(weights_file), "--backend", "torch"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = proc.stdout.readline()
        match = re.search(r"serving on http://127\.0\.0\.1:(\d+)/", line)
        assert match, line + (proc.stderr.read() if proc.poll() is not None else "")
        client = Http(int(match.group(1)))
        status, job = client.upload(clip.read_bytes(), name="long.mp4")
        assert status == 202, job
        folder = data_dir / "jobs" / job["id"]
        wait_until(lambda: client.json(job["status_url"])[1]["status"] == "running"
                   and any(p.name.startswith("result.mp4") for p in folder.iterdir()),
                   120, "the video job to run")
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        elapsed = time.monotonic() - start
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    print(f"\nSIGTERM with a video job running: exit {proc.returncode} after {elapsed:.1f} s")
    assert proc.returncode == 0, err
    assert elapsed < 10.0
    assert "depthstream: stopped" in out
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["status"] == "failed" and "server stopped" in meta["error"]
    assert [p.name for p in folder.iterdir()] == ["meta.json"]  # partial files removed
    assert list((data_dir / "uploads").iterdir()) == []
    with pytest.raises(OSError):  # nothing listens any more
        socket.create_connection(("127.0.0.1", client.port), timeout=2).close()


def test_a_stopped_server_refuses_new_work(tmp_path: Path) -> None:
    app = create_app(tmp_path, cheap_estimator)
    server: DepthServer = app.extensions["depthstream"]
    server.close()
    client = app.test_client()
    data = png_bytes(np.zeros((8, 8, 3), np.uint8))
    resp = client.post("/api/jobs", data={"file": (io.BytesIO(data), "a.png")},
                       content_type="multipart/form-data")
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "5"
    assert "stopping" in resp.get_json()["error"]


def _open_files_in(folder: Path) -> list[str]:
    """This process's open files (unnamed temporary ones too) directly in ``folder``."""
    found = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if Path(target.removesuffix(" (deleted)")).parent == folder:
            found.append(target)
    return found


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc (Linux)")
def test_an_upload_on_its_way_in_is_buffered_in_the_data_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system_tmp = tmp_path / "system-tmp"  # stands for /tmp (often a small RAM disk)
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    data_dir = tmp_path / "data"
    app = create_app(data_dir, cheap_estimator, start=False)
    with running(app) as client:
        body, content_type = multipart(b"\0" * 3_000_000)
        slow = socket.create_connection(("127.0.0.1", client.port), timeout=30)
        try:  # a third of the body: past waitress's 512 KB in memory, not yet complete
            slow.sendall(f"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         f"Content-Type: {content_type}\r\nContent-Length: {len(body)}"
                         f"\r\n\r\n".encode() + body[:1_000_000])
            wait_until(lambda: _open_files_in(data_dir / "uploads"), 20, "the buffer file")
            assert _open_files_in(system_tmp) == []
        finally:
            slow.close()
