"""Jobs of the web server: cancel, the two lanes, queue places, errors without paths, records."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from support.clips import make_clip
from support.fakes import cheap_estimator
from support.web import png_bytes

import stream.web.worker
from stream.core.errors import ConfigError, SinkError, SourceError
from stream.core.settings import Layout
from stream.web import DepthServer, Job, JobKind, JobSettings, JobStatus, create_app
from stream.web.jobs import public_message
from stream.web.models import ModelChoice

PIPELINE_THREADS = ("depthstream-capture", "depthstream-inference", "depthstream-render")


def post(client: FlaskClient, data: bytes, name: str = "clip.mp4", **fields: str) -> dict:
    resp = client.post("/api/jobs", data={"file": (io.BytesIO(data), name), **fields},
                       content_type="multipart/form-data")
    assert resp.status_code in (200, 202), resp.get_json()
    return resp.get_json()


def wait_for(client: FlaskClient, job_id: str, predicate, timeout_s: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        body = client.get(f"/api/jobs/{job_id}").get_json()
        if predicate(body):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.05)


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """400 small frames: with 30 ms a frame, a video job runs for a good while."""
    path = tmp_path_factory.mktemp("clips") / "long.mp4"
    return make_clip(path, frames=400, size_wh=(64, 48), audio=False).read_bytes()


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    app = create_app(tmp_path / "data", lambda: cheap_estimator(delay_s=0.03))
    yield app
    app.extensions["depthstream"].close()


def test_delete_cancels_a_running_video_within_two_seconds(app: Flask, long_clip: bytes) -> None:
    server: DepthServer = app.extensions["depthstream"]
    client = app.test_client()
    job = post(client, long_clip)
    wait_for(client, job["id"], lambda b: b["status"] == "running" and b["progress"] > 0.02)
    folder = server.store.job_dir(job["id"])
    assert any(p.name.startswith("result.mp4") for p in folder.iterdir())  # partial output

    start = time.perf_counter()
    resp = client.delete(f"/api/jobs/{job['id']}")
    elapsed = time.perf_counter() - start
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["status"] == "cancelled" and body["results"] == {}
    print(f"\nDELETE of a running video job answered in {elapsed * 1000:.0f} ms")
    assert elapsed < 3.0  # about 2 s on a busy machine; usually well under
    assert [p.name for p in folder.iterdir()] == ["meta.json"]  # its files are gone
    assert not [t for t in threading.enumerate() if t.name in PIPELINE_THREADS]
    assert client.get(f"/api/jobs/{job['id']}").get_json()["status"] == "cancelled"
    # finished: nothing to cancel; unknown: nothing at all
    resp = client.delete(f"/api/jobs/{job['id']}")
    assert resp.status_code == 409 and "finished" in resp.get_json()["error"]
    assert client.delete(f"/api/jobs/{'0' * 32}").status_code == 404
    # a cancelled job is not a cached result: the same upload runs again
    again = post(client, long_clip)
    assert again["cached"] is False and again["id"] != job["id"]
    client.delete(f"/api/jobs/{again['id']}")


def test_queued_videos_show_their_place_and_can_be_cancelled(app: Flask, long_clip: bytes,
                                                            tmp_path: Path) -> None:
    server: DepthServer = app.extensions["depthstream"]
    client = app.test_client()
    running = post(client, long_clip, layout="side")
    wait_for(client, running["id"], lambda b: b["status"] == "running")
    second = post(client, long_clip, layout="overlay")
    third = post(client, long_clip, layout="depth")
    assert (second["status"], second["position"]) == ("queued", 1)
    assert (third["status"], third["position"]) == ("queued", 2)
    assert client.get(f"/api/jobs/{running['id']}").get_json()["position"] is None

    resp = client.delete(f"/api/jobs/{second['id']}")
    assert resp.status_code == 200 and resp.get_json()["status"] == "cancelled"
    assert not server.store.job_dir(second["id"]).joinpath("input").exists()
    assert client.get(f"/api/jobs/{third['id']}").get_json()["position"] == 1
    for job in (third, running):
        assert client.delete(f"/api/jobs/{job['id']}").get_json()["status"] == "cancelled"


def test_a_picture_does_not_wait_behind_a_long_video(app: Flask, long_clip: bytes) -> None:
    client = app.test_client()
    video = post(client, long_clip)
    wait_for(client, video["id"], lambda b: b["status"] == "running")
    picture = post(client, png_bytes(np.full((48, 64, 3), 90, np.uint8)), name="p.png")
    assert picture["position"] == 1  # first in the picture lane, whatever the videos do
    done = wait_for(client, picture["id"], lambda b: b["status"] in ("done", "failed"))
    assert done["status"] == "done", done["error"]
    video_now = client.get(f"/api/jobs/{video['id']}").get_json()
    assert video_now["status"] == "running" and video_now["progress"] < 0.9
    client.delete(f"/api/jobs/{video['id']}")


def test_a_picture_job_can_be_cancelled_while_queued(tmp_path: Path) -> None:
    gate = threading.Event()

    def slow_start():
        gate.wait(30)  # the lanes wait for the model: every job stays queued
        return cheap_estimator()

    server = DepthServer(stream.web.ServerConfig(tmp_path), slow_start)
    threading.Thread(target=server.start, daemon=True).start()
    try:
        client = server.app.test_client()
        job = post(client, png_bytes(np.zeros((8, 8, 3), np.uint8)), name="a.png")
        assert job["status"] == "queued"
        resp = client.delete(f"/api/jobs/{job['id']}")
        assert resp.get_json()["status"] == "cancelled"
        assert [p.name for p in server.store.job_dir(job["id"]).iterdir()] == ["meta.json"]
    finally:
        gate.set()
        server.close()


# ---------------------------------------------------------------- no paths in errors


@pytest.mark.parametrize(("message", "shown"), [
    ("cannot write /srv/data/jobs/0a1b/result.mp4: No space left on device",
     "cannot write result.mp4: No space left on device"),
    ("no frame of /home/me/.cache/depthstream/server/jobs/0a1b/input decodes",
     "no frame of the upload decodes"),
    ("cannot read C:\\Users\\me\\data\\jobs\\x\\input as a video", "cannot read the upload "
                                                                    "as a video"),
    ("frame 3/4 failed; see 'a/b'", "frame 3/4 failed; see 'a/b'"),
    ("https://example.org/x", "https://example.org/x"),
])
def test_public_message_keeps_paths_out(message: str, shown: str) -> None:
    assert public_message(message) == shown


def test_no_error_answer_names_a_server_path(tmp_path: Path, long_clip: bytes,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = tmp_path / "data"

    def broken_convert(input_path: Path, output_path: Path, *args: object, **kwargs: object):
        raise SinkError(f"cannot write {output_path}: No space left on device "
                        f"(while reading {input_path})")

    monkeypatch.setattr(stream.web.worker, "convert", broken_convert)
    app = create_app(data_dir, cheap_estimator, max_image_mb=0.001)
    server: DepthServer = app.extensions["depthstream"]
    client = app.test_client()
    try:
        answers = []
        job = post(client, long_clip)
        failed = wait_for(client, job["id"], lambda b: b["status"] == "failed")
        assert failed["error"] == ("cannot write result.mp4: No space left on device "
                                   "(while reading the upload)")
        answers.append(failed)

        def disk_full(*args: object) -> None:
            raise OSError(28, "No space left on device", str(data_dir / "uploads" / "x"))

        requests = [
            ("GET", "/api/jobs/0123", None), ("GET", f"/results/{job['id']}/result.mp4", None),
            ("GET", "/nowhere", None), ("PUT", "/api/jobs", None),
            ("DELETE", f"/api/jobs/{job['id']}", None),
            ("POST", "/api/jobs", {"file": (io.BytesIO(b"not media"), "../../etc/x.png")}),
            ("POST", "/api/jobs", {"file": (io.BytesIO(png_bytes(
                np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8))), "b.png")}),
            ("POST", "/api/jobs", {"file": (io.BytesIO(b"x"), "c.png"), "cmap": "/etc/passwd"}),
        ]
        for method, url, form in requests:
            resp = client.open(url, method=method, data=form,
                               content_type="multipart/form-data" if form else None)
            assert resp.status_code >= 400, url
            answers.append(resp.get_json())
        monkeypatch.setattr(server, "_save_upload", disk_full)
        resp = client.post("/api/jobs", data={"file": (io.BytesIO(b"x"), "d.png")},
                           content_type="multipart/form-data")
        assert resp.status_code == 500
        answers.append(resp.get_json())
        assert len(answers) == 10
        for answer in answers:
            error = answer["error"]
            assert str(tmp_path) not in error and "/" not in error.replace("3/4", ""), error
    finally:
        server.close()


def test_a_failing_picture_job_names_no_path(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def unreadable(path: Path) -> np.ndarray:
        raise SourceError(f"cannot read {path} as a picture")

    monkeypatch.setattr(stream.web.worker, "read_image", unreadable)
    app = create_app(tmp_path, cheap_estimator)
    try:
        client = app.test_client()
        job = post(client, png_bytes(np.zeros((8, 8, 3), np.uint8)), name="e.png")
        failed = wait_for(client, job["id"], lambda b: b["status"] == "failed")
        assert failed["error"] == "cannot read the upload as a picture"
    finally:
        app.extensions["depthstream"].close()


def test_an_upload_never_chooses_the_precision(tmp_path: Path) -> None:
    built: list[str] = []

    def build(name: str):
        built.append(name)
        return cheap_estimator()

    data = png_bytes(np.full((24, 32, 3), 70, np.uint8))
    app = create_app(tmp_path, ModelChoice(build, "midas-small", lambda name: "tag"),
                     precision="fp32")
    try:
        client = app.test_client()
        info = client.get("/api/info").get_json()
        assert info["precision"] == "fp32" and "precisions" not in info
        for asked in ("int8", "auto"):  # another precision: no quantization, no second model
            resp = client.post("/api/jobs", data={"file": (io.BytesIO(data), "a.png"),
                                                  "precision": asked},
                               content_type="multipart/form-data")
            assert resp.status_code == 400
            assert resp.get_json()["error"] == (
                "this server runs at fp32 precision, which its operator chose (serve "
                "--precision); leave 'precision' out")
        resp = client.post("/api/jobs", data={"file": (io.BytesIO(data), "a.png"),
                                              "precision": "fp16"},
                           content_type="multipart/form-data")
        assert resp.status_code == 400 and "unknown precision" in resp.get_json()["error"]
        same = post(client, data, name="a.png", precision="FP32")  # the server's own
        assert "precision" not in same["settings"]
        assert post(client, data, name="a.png")["id"] == same["id"]  # one result, one job
        done = wait_for(client, same["id"], lambda b: b["status"] in ("done", "failed"))
        assert done["status"] == "done", done["error"]
        assert built == ["midas-small"]  # the server's one model, built once at start
    finally:
        app.extensions["depthstream"].close()


# ---------------------------------------------------------------- records


def test_settings_from_form() -> None:
    assert JobSettings.from_form({}) == JobSettings()
    assert JobSettings.from_form({"cmap": " Turbo ", "invert": "on", "layout": "SIDE",
                                  "model": " DAV2-Small"}) == \
        JobSettings(cmap="turbo", invert=True, layout=Layout.SIDE, model="dav2-small")
    with pytest.raises(ConfigError, match="unknown model 'midas-large'"):
        JobSettings.from_form({"model": "midas-large"})
    assert JobSettings(layout="overlay").for_kind(JobKind.PICTURE).layout is Layout.DEPTH
    assert JobSettings(layout="overlay").for_kind(JobKind.VIDEO).layout is Layout.OVERLAY


def test_job_round_trips_through_meta_json() -> None:
    job = Job(id="a" * 32, kind=JobKind.VIDEO, settings=JobSettings(cmap="jet"), key="k",
              status=JobStatus.DONE, progress=1.0, info={"frames": 3},
              outputs=("result.mp4",))
    assert Job.from_dict(json.loads(json.dumps(job.to_dict()))) == job
    older = {**job.to_dict(), "settings": {"cmap": "jet", "invert": False, "layout": "depth",
                                           "precision": None}}  # before models were chosen
    assert Job.from_dict(older) == job
    with pytest.raises(ValueError):
        Job(id="../x", kind=JobKind.PICTURE, settings=JobSettings(), key="k")
