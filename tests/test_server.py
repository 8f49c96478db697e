"""Web server API with Flask's test client: jobs, results, cache, limits, errors, restart."""

from __future__ import annotations

import io
import json
import re
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from support.clips import make_audio_only, make_clip, read_video
from support.fakes import cheap_estimator
from support.mjpeg import MjpegServer

from stream.backends import Backend, TorchBackend
from stream.colormap import colorize, minmax
from stream.errors import ConfigError, SourceError, StreamError
from stream.inference import DepthEstimator, SharedEstimator, TurnLock
from stream.settings import Layout
from stream.sinks import depth_to_u16
from stream.sources import LiveSource
from stream.web import (
    MB,
    DepthServer,
    Job,
    JobKind,
    JobSettings,
    JobStatus,
    LiveUnavailableError,
    QueueFullError,
    ServerConfig,
    UploadTooLargeError,
    create_app,
    status_for,
)
from stream.web.uploads import display_name as _display_name

TIMEOUT_S = 120.0


def png_bytes(bgr: np.ndarray, ext: str = ".png") -> bytes:
    ok, data = cv2.imencode(ext, bgr)
    assert ok
    return data.tobytes()


def picture(seed: int, size_wh: tuple[int, int] = (64, 48)) -> np.ndarray:
    """A smooth, distinct test picture (gradients plus a bright disc)."""
    w, h = size_wh
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.empty((h, w, 3), np.float32)
    for c in range(3):
        a, b = rng.uniform(-1, 1, 2)
        img[..., c] = 128 + 100 * np.sin(a * x / 9 + b * y / 7 + c)
    cx, cy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
    img[(x - cx) ** 2 + (y - cy) ** 2 < (min(w, h) / 5) ** 2] = 250
    return np.clip(img, 0, 255).astype(np.uint8)


def post(client: FlaskClient, data: bytes, name: str = "pic.png", **fields: str):
    form = {"file": (io.BytesIO(data), name), **fields}
    return client.post("/api/jobs", data=form, content_type="multipart/form-data")


def wait_done(client: FlaskClient, job_id: str) -> dict:
    deadline = time.monotonic() + TIMEOUT_S
    seen = []
    while time.monotonic() < deadline:
        body = client.get(f"/api/jobs/{job_id}").get_json()
        assert 0.0 <= body["progress"] <= 1.0
        if not seen or seen[-1] != body["status"]:
            seen.append(body["status"])
        if body["status"] in ("done", "failed"):
            order = ["queued", "running", body["status"]]
            assert [s for s in order if s in seen] == seen, seen  # never goes backwards
            return body
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} not finished after {TIMEOUT_S} s")


@pytest.fixture(scope="module")
def app(state_dict: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    app = create_app(tmp_path_factory.mktemp("data"),
                     lambda: DepthEstimator(TorchBackend(state_dict)), model_tag="synthetic-0")
    yield app
    app.extensions["depthstream"].close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def server(app: Flask) -> DepthServer:
    return app.extensions["depthstream"]


def expected_depth(server: DepthServer, bgr: np.ndarray) -> np.ndarray:
    # The worker is idle once our job is done, so its estimator can be borrowed here.
    depth, _ = server.worker.estimator.predict(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return depth


def fetch_image(client: FlaskClient, url: str, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    resp = client.get(url)
    assert resp.status_code == 200, url
    return cv2.imdecode(np.frombuffer(resp.data, np.uint8), flags)


# ---------------------------------------------------------------- happy path


def test_picture_job_gives_depth_side_and_raw(client: FlaskClient, server: DepthServer) -> None:
    bgr = picture(1)
    resp = post(client, png_bytes(bgr), name="holiday photo.png")
    assert resp.status_code == 202
    body = resp.get_json()
    assert re.fullmatch(r"[0-9a-f]{32}", body["id"])
    assert body["status_url"] == f"/api/jobs/{body['id']}"
    assert body["cached"] is False
    assert body["kind"] == "picture"

    job = wait_done(client, body["id"])
    assert job["status"] == "done", job["error"]
    assert job["progress"] == 1.0
    assert job["info"]["width"] == 64 and job["info"]["height"] == 48
    assert job["info"]["inference_ms"] > 0

    depth = expected_depth(server, bgr)
    lo, hi = minmax(depth)
    results = job["results"]
    assert set(results) == {"result_png", "side_png", "depth16_png", "depth16_npy"}
    assert results["result_png"]["download"] == "holiday_photo_depth.png"

    colour = fetch_image(client, results["result_png"]["url"])
    expected = colorize(depth, lo, hi)
    assert colour.shape == (48, 64, 3)
    assert np.abs(colour.astype(int) - expected).max() <= 1

    side = fetch_image(client, results["side_png"]["url"])
    assert np.array_equal(side[:, :64], bgr)
    assert np.array_equal(side[:, 64:], colour)

    raw16 = fetch_image(client, results["depth16_png"]["url"])
    assert raw16.dtype == np.uint16
    assert np.abs(raw16.astype(int) - depth_to_u16(depth, lo, hi)).max() <= 64

    npy = np.load(io.BytesIO(client.get(results["depth16_npy"]["url"]).data))
    assert npy.dtype == np.float32
    np.testing.assert_allclose(npy, depth, rtol=1e-4, atol=1e-4 * (hi - lo))


def test_download_link_sends_an_attachment(client: FlaskClient) -> None:
    job = wait_done(client, post(client, png_bytes(picture(2)), name="cat.jpg").get_json()["id"])
    resp = client.get(job["results"]["result_png"]["url"] + "?download")
    assert resp.status_code == 200
    assert resp.headers["Content-Disposition"].startswith("attachment")
    assert "cat_depth.png" in resp.headers["Content-Disposition"]
    assert resp.mimetype == "image/png"


def test_type_comes_from_decoding_not_from_the_name(client: FlaskClient) -> None:
    resp = post(client, png_bytes(picture(3), ".jpg"), name="clip.mp4")
    assert resp.status_code == 202
    assert resp.get_json()["kind"] == "picture"
    assert wait_done(client, resp.get_json()["id"])["status"] == "done"


def test_colormap_and_invert_settings_are_applied(client: FlaskClient,
                                                   server: DepthServer) -> None:
    bgr = picture(4)
    job = wait_done(client, post(client, png_bytes(bgr), cmap="gray", invert="true")
                    .get_json()["id"])
    assert job["settings"] == {"cmap": "gray", "invert": True, "layout": "depth",
                               "precision": None}
    depth = expected_depth(server, bgr)
    colour = fetch_image(client, job["results"]["result_png"]["url"])
    expected = colorize(depth, *minmax(depth), cmap="gray", invert=True)
    assert np.abs(colour.astype(int) - expected).max() <= 1


# ---------------------------------------------------------------- cache


def test_identical_upload_is_answered_from_the_cache(client: FlaskClient) -> None:
    data = png_bytes(picture(5))
    first = post(client, data, name="a.png").get_json()
    done = wait_done(client, first["id"])
    assert done["status"] == "done"

    again = post(client, data, name="another name.png")
    assert again.status_code == 200
    body = again.get_json()
    assert body["cached"] is True
    assert body["id"] == first["id"]
    assert body["status"] == "done"
    # the same files, downloaded under this uploader's name (not the first one's)
    assert [r["url"] for r in body["results"].values()] == \
        [r["url"] for r in done["results"].values()]
    assert body["results"]["result_png"]["download"] == "another_name_depth.png"
    assert body["name"] == "another_name"
    resp = client.get(body["results"]["result_png"]["download_url"])
    assert "another_name_depth.png" in resp.headers["Content-Disposition"]
    polled = client.get(f"{body['status_url']}?name=another_name").get_json()
    assert polled["results"]["depth16_npy"]["download"] == "another_name_depth.npy"

    # Different settings are a different result; different bytes are a different picture.
    other = post(client, data, cmap="turbo").get_json()
    assert other["cached"] is False and other["id"] != first["id"]
    changed = picture(5)
    changed[0, 0, 0] ^= 1
    again2 = post(client, png_bytes(changed)).get_json()
    assert again2["cached"] is False
    for job_id in (other["id"], again2["id"]):
        assert wait_done(client, job_id)["status"] == "done"


def test_layout_does_not_split_the_cache_for_pictures(client: FlaskClient) -> None:
    data = png_bytes(picture(6))
    first = post(client, data, layout="depth").get_json()
    wait_done(client, first["id"])
    body = post(client, data, layout="side").get_json()
    assert body["cached"] is True and body["id"] == first["id"]


# ---------------------------------------------------------------- 400


@pytest.mark.parametrize(("data", "needle"), [
    (b"hello, this is not a picture\n" * 10, "neither a picture nor a video"),
    (b"", "empty"),
    (png_bytes(picture(7))[:60], "neither a picture nor a video"),  # truncated PNG
    (b"\x00" * 5000, "neither a picture nor a video"),
])
def test_undecodable_upload_is_400(client: FlaskClient, server: DepthServer, data: bytes,
                                   needle: str) -> None:
    before = len(server.store)
    resp = post(client, data, name="photo.png")
    assert resp.status_code == 400
    assert needle in resp.get_json()["error"]
    assert len(server.store) == before
    assert list(server.store.uploads_dir.iterdir()) == []  # nothing left behind


def test_missing_file_field_is_400(client: FlaskClient) -> None:
    resp = client.post("/api/jobs", data={"other": (io.BytesIO(b"x"), "a.png")},
                       content_type="multipart/form-data")
    assert resp.status_code == 400
    assert "'file'" in resp.get_json()["error"]


@pytest.mark.parametrize(("field", "value", "needle"), [
    ("cmap", "rainbow-unicorn", "colormap"),
    ("layout", "upside-down", "layout"),
    ("invert", "perhaps", "invert"),
])
def test_bad_settings_are_400(client: FlaskClient, field: str, value: str, needle: str) -> None:
    resp = post(client, png_bytes(picture(8)), **{field: value})
    assert resp.status_code == 400
    assert needle in resp.get_json()["error"]


# ---------------------------------------------------------------- 404 and traversal


def test_unknown_job_is_404(client: FlaskClient) -> None:
    for job_id in ("0" * 32, "not-a-job", "../../etc/passwd", "A" * 32):
        resp = client.get(f"/api/jobs/{job_id}")
        assert resp.status_code == 404, job_id
        assert "error" in resp.get_json()


@pytest.mark.parametrize("path", [
    "/results/../../etc/passwd",
    "/results/%2e%2e/%2e%2e/etc/passwd",
    "/results/..%2f..%2fetc%2fpasswd",
    "/results/00000000000000000000000000000000/result.png",
    "/results/00000000000000000000000000000000/..%2f..%2fmeta.json",
    "/static/../server.py",
    "/static/..%2fserver.py",
    "/etc/passwd",
])
def test_traversal_attempts_are_404(client: FlaskClient, path: str) -> None:
    resp = client.get(path)
    assert resp.status_code == 404, path
    assert b"root:" not in resp.data and b"import" not in resp.data


def test_only_result_files_of_a_job_are_served(client: FlaskClient, server: DepthServer) -> None:
    job = wait_done(client, post(client, png_bytes(picture(9))).get_json()["id"])
    base = f"/results/{job['id']}"
    assert client.get(f"{base}/result.png").status_code == 200
    for name in ("input", "meta.json", "result.mp4", "..%2fmeta.json", "%2e%2e",
                 "..%2f..%2f..%2fetc%2fpasswd"):
        assert client.get(f"{base}/{name}").status_code == 404, name
    # the uploaded bytes were kept under the id (never the client's name) until the job
    # was done, then deleted: the results are all that is needed
    assert not (server.store.job_dir(job["id"]) / "input").exists()


def test_upload_name_never_becomes_a_path(client: FlaskClient, server: DepthServer,
                                          tmp_path: Path) -> None:
    evil = "../../../../" + str(tmp_path / "pwned.png").lstrip("/")
    resp = post(client, png_bytes(picture(10)), name=evil)
    assert resp.status_code == 202
    job = wait_done(client, resp.get_json()["id"])
    assert not (tmp_path / "pwned.png").exists()
    assert job["name"] == "pwned"
    folder = server.store.job_dir(job["id"])
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["meta.json", "result.png", "side.png", "depth16.png", "depth16.npy"])


@pytest.mark.parametrize(("filename", "expected"), [
    ("photo.jpg", "photo"),
    ("../../etc/passwd", "passwd"),
    ("C:\\Users\\me\\My Photo.PNG", "My_Photo"),
    ("..", "upload"),
    ("", "upload"),
    (None, "upload"),
    ("\u00e9t\u00e9 \u2600.png", "t"),
    ("a" * 200 + ".png", "a" * 60),
])
def test_display_name(filename: str | None, expected: str) -> None:
    assert _display_name(filename) == expected


# ---------------------------------------------------------------- 413


@pytest.fixture
def small_server(tmp_path: Path) -> Iterator[DepthServer]:
    """Limits of 2 kB (pictures) and 4 kB (videos); the worker is not started."""
    server = DepthServer(ServerConfig(tmp_path, max_image_bytes=2000, max_video_bytes=4000),
                         _no_estimator)
    yield server
    server.close()


def _no_estimator() -> DepthEstimator:
    raise AssertionError("these tests never start the worker")


def test_picture_over_its_limit_is_413(small_server: DepthServer) -> None:
    noisy = np.random.default_rng(0).integers(0, 255, (40, 40, 3), np.uint8)
    data = png_bytes(noisy)
    assert 2000 < len(data) < 4000 + (1 << 20)
    resp = post(small_server.app.test_client(), data)
    assert resp.status_code == 413
    assert "pictures may be up to 0.002 MB" in resp.get_json()["error"]
    assert len(small_server.store) == 0


def test_body_over_the_largest_limit_is_413_json(small_server: DepthServer) -> None:
    resp = post(small_server.app.test_client(), b"\x00" * (4000 + (2 << 20)))
    assert resp.status_code == 413
    assert resp.is_json
    assert "too large" in resp.get_json()["error"]


def test_small_picture_under_the_limit_is_accepted(small_server: DepthServer) -> None:
    data = png_bytes(np.zeros((8, 8, 3), np.uint8))
    resp = post(small_server.app.test_client(), data)
    assert resp.status_code == 202
    assert resp.get_json()["status"] == "queued"


def test_full_queue_is_503_and_forgets_the_job(tmp_path: Path) -> None:
    server = DepthServer(ServerConfig(tmp_path, max_queued=1), _no_estimator)
    client = server.app.test_client()
    assert post(client, png_bytes(picture(11))).status_code == 202
    resp = post(client, png_bytes(picture(12)))
    assert resp.status_code == 503
    assert "busy" in resp.get_json()["error"]
    assert len(server.store) == 1
    assert len(list(server.store.jobs_dir.iterdir())) == 1  # nothing left of the refused one


def test_limits_come_from_the_factory(tmp_path: Path) -> None:
    app = create_app(tmp_path, _no_estimator, max_image_mb=1.5, max_video_mb=7, start=False)
    info = app.test_client().get("/api/info").get_json()
    assert info["max_image_bytes"] == 1_500_000 and info["max_video_bytes"] == 7 * MB
    assert app.config["MAX_CONTENT_LENGTH"] > 7 * MB


# ---------------------------------------------------------------- failures and restart


class _FailingBackend(Backend):
    def infer(self, x: np.ndarray) -> np.ndarray:
        raise SourceError("the decoder gave up on frame 3")


def test_failed_job_reports_its_error_and_the_worker_goes_on(tmp_path: Path) -> None:
    app = create_app(tmp_path, lambda: DepthEstimator(_FailingBackend()))
    client = app.test_client()
    try:
        for seed in (13, 14):  # the second job still runs after the first failed
            job = wait_done(client, post(client, png_bytes(picture(seed))).get_json()["id"])
            assert job["status"] == "failed"
            assert job["error"] == "the decoder gave up on frame 3"
            assert job["results"] == {}
        # a failed result is not cached: the same upload runs again
        again = post(client, png_bytes(picture(14))).get_json()
        assert again["cached"] is False
    finally:
        app.extensions["depthstream"].close()


def test_model_errors_surface_from_create_app(tmp_path: Path) -> None:
    from stream.errors import WeightsError

    def broken() -> DepthEstimator:
        raise WeightsError("no checkpoint here")

    with pytest.raises(WeightsError, match="no checkpoint"):
        create_app(tmp_path, broken)


def test_finished_jobs_survive_a_restart(tmp_path: Path, state_dict: dict) -> None:
    data = png_bytes(picture(15))
    app = create_app(tmp_path, lambda: DepthEstimator(TorchBackend(state_dict)))
    client = app.test_client()
    first = wait_done(client, post(client, data).get_json()["id"])
    app.extensions["depthstream"].close()
    # a queued job of the old run, as a crash would leave it
    stale = Job(id="f" * 32, kind=JobKind.PICTURE, settings=JobSettings(), key="stale")
    (tmp_path / "jobs" / stale.id).mkdir()
    (tmp_path / "jobs" / stale.id / "meta.json").write_text(json.dumps(stale.to_dict()))
    (tmp_path / "jobs" / "junk").mkdir()
    (tmp_path / "jobs" / "junk" / "meta.json").write_text("{not json")

    again = DepthServer(ServerConfig(tmp_path), _no_estimator)  # worker never started
    client = again.app.test_client()
    body = client.get(first["status_url"]).get_json()
    assert body["status"] == "done" and body["results"] == first["results"]
    assert client.get(first["results"]["result_png"]["url"]).status_code == 200
    cached = post(client, data).get_json()
    assert cached["cached"] is True and cached["id"] == first["id"]
    stale_now = client.get(f"/api/jobs/{stale.id}").get_json()
    assert stale_now["status"] == "failed" and "upload the file again" in stale_now["error"]


# ---------------------------------------------------------------- records


def test_settings_from_form() -> None:
    assert JobSettings.from_form({}) == JobSettings()
    assert JobSettings.from_form({"cmap": " Turbo ", "invert": "on", "layout": "SIDE"}) == \
        JobSettings(cmap="turbo", invert=True, layout=Layout.SIDE)
    assert JobSettings(layout="overlay").for_kind(JobKind.PICTURE).layout is Layout.DEPTH
    assert JobSettings(layout="overlay").for_kind(JobKind.VIDEO).layout is Layout.OVERLAY


def test_job_round_trips_through_meta_json() -> None:
    job = Job(id="a" * 32, kind=JobKind.VIDEO, settings=JobSettings(cmap="jet"), key="k",
              status=JobStatus.DONE, progress=1.0, info={"frames": 3},
              outputs=("result.mp4",))
    assert Job.from_dict(json.loads(json.dumps(job.to_dict()))) == job
    with pytest.raises(ValueError):
        Job(id="../x", kind=JobKind.PICTURE, settings=JobSettings(), key="k")


# ---------------------------------------------------------------- page


def test_page_and_assets_are_served_without_any_cdn(client: FlaskClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    html = page.get_data(as_text=True)
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', html):
        assert client.get(asset).status_code == 200, asset
    static = Path(__file__).parents[1] / "stream" / "static"
    for f in static.iterdir():
        text = f.read_text(encoding="utf-8")
        assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text), f.name


def test_unknown_routes_and_methods_answer_json(client: FlaskClient) -> None:
    resp = client.get("/api/nothing-here")
    assert resp.status_code == 404 and resp.is_json
    resp = client.delete("/api/jobs")
    assert resp.status_code == 405 and resp.is_json
    assert set(resp.headers["Allow"].split(", ")) == {"POST", "OPTIONS"}
    resp = client.put(f"/api/jobs/{'0' * 32}")
    assert resp.status_code == 405
    assert set(resp.headers["Allow"].split(", ")) >= {"GET", "DELETE"}


# ---------------------------------------------------------------- video jobs


def test_video_job_gives_a_playable_depth_video_and_raw_depth(
        client: FlaskClient, server: DepthServer, tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", frames=6, size_wh=(64, 48))
    resp = post(client, clip.read_bytes(), name="robot run.bin", layout="side")
    assert resp.status_code == 202
    body = resp.get_json()
    assert body["kind"] == "video"  # decided by decoding: the name says .bin
    assert body["info"]["width"] == 64 and body["info"]["frames"] == 6
    job = wait_done(client, body["id"])
    assert job["status"] == "done", job["error"]
    assert job["info"]["frames"] == 6
    assert set(job["results"]) == {"result_mp4", "depth16_zip"}
    assert job["results"]["result_mp4"]["download"] == "robot_run_depth.mp4"

    resp = client.get(job["results"]["result_mp4"]["url"])
    assert resp.status_code == 200 and resp.mimetype == "video/mp4"
    out = tmp_path / "out.mp4"
    out.write_bytes(resp.data)
    video = read_video(out)
    source = read_video(clip)
    assert len(video["images"]) == 6
    assert video["size_wh"] == (128, 48)  # side by side
    assert video["codec"] == "h264"
    assert video["audio"]  # the clip's sound is kept
    assert np.abs(video["images"][0][:, :64].astype(int) - source["images"][0]).mean() < 8

    with zipfile.ZipFile(io.BytesIO(client.get(job["results"]["depth16_zip"]["url"]).data)) as zf:
        names = sorted(zf.namelist())
        assert names == [f"depth_{i:06d}.png" for i in range(6)] + ["timestamps.csv"]
        rows = zf.read("timestamps.csv").decode().splitlines()
        first = cv2.imdecode(np.frombuffer(zf.read("depth_000000.png"), np.uint8),
                             cv2.IMREAD_UNCHANGED)
    assert rows[0] == "index,seconds,lo,hi,scale" and len(rows) == 7
    _, _, lo, hi = map(float, rows[1].split(",")[:4])
    assert rows[1].split(",")[4] in ("smoothed", "raw")
    assert first.dtype == np.uint16 and first.shape == (48, 64)
    depth = expected_depth(server, source["images"][0])
    restored = lo + first.astype(np.float64) * (hi - lo) / 65535.0
    assert np.abs(restored - depth).max() <= 1e-3 * (hi - lo) + 1e-4 * np.abs(depth).max()


def test_video_cache_depends_on_the_layout(client: FlaskClient, tmp_path: Path) -> None:
    data = make_clip(tmp_path / "c.mp4", frames=3, audio=False).read_bytes()
    first = post(client, data, layout="overlay").get_json()
    assert wait_done(client, first["id"])["status"] == "done"
    again = post(client, data, layout="overlay")
    assert again.status_code == 200 and again.get_json()["id"] == first["id"]
    other = post(client, data, layout="depth").get_json()
    assert other["cached"] is False
    assert wait_done(client, other["id"])["status"] == "done"


def test_audio_only_file_is_400(client: FlaskClient, tmp_path: Path) -> None:
    data = make_audio_only(tmp_path / "tone.m4a").read_bytes()
    resp = post(client, data, name="tone.mp4")
    assert resp.status_code == 400
    assert "neither a picture nor a video" in resp.get_json()["error"]


def test_video_over_its_limit_is_413(small_server: DepthServer, tmp_path: Path) -> None:
    data = make_clip(tmp_path / "long.mp4", frames=60, size_wh=(96, 64)).read_bytes()
    assert 4000 < len(data) < 4000 + (1 << 20)
    resp = post(small_server.app.test_client(), data)
    assert resp.status_code == 413
    assert "videos up to 0.004 MB" in resp.get_json()["error"]
    # a video limit below the picture limit: the upload is read, decoded, then refused
    server = DepthServer(ServerConfig(tmp_path / "d", max_image_bytes=MB, max_video_bytes=4000),
                         _no_estimator)
    resp = post(server.app.test_client(), data)
    assert resp.status_code == 413
    assert resp.get_json()["error"].startswith("videos may be up to 0.004 MB")


# ---------------------------------------------------------------- live


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


def test_an_unexpected_error_is_a_json_500(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    server = DepthServer(ServerConfig(tmp_path), _no_estimator)

    def disk_full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(server, "_save_upload", disk_full)
    resp = post(server.app.test_client(), png_bytes(picture(30)))
    assert resp.status_code == 500 and resp.is_json
    assert "internal error (OSError)" in resp.get_json()["error"]


# ---------------------------------------------------------------- errors and the shared model


@pytest.mark.parametrize(("exc", "status"), [
    (UploadTooLargeError("too big"), 413),
    (QueueFullError("busy"), 503),
    (LiveUnavailableError("camera 7"), 503),
    (ConfigError("unknown colormap"), 400),
    (SourceError("not a picture"), 400),
    (StreamError("something else"), 500),
    (OSError(28, "No space left on device"), 500),
])
def test_exceptions_map_to_http_status_in_one_table(exc: Exception, status: int) -> None:
    assert status_for(exc) == status
    assert not hasattr(exc, "status")  # the errors themselves know nothing of HTTP


class _RecordingBackend(Backend):
    """Sleeps in ``infer`` and records who ran, and how many ran at once."""

    def __init__(self) -> None:
        self.active = 0
        self.most_active = 0
        self.calls: list[str] = []
        self._count = threading.Lock()

    def infer(self, x: np.ndarray) -> np.ndarray:
        with self._count:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
            self.calls.append(threading.current_thread().name)
        time.sleep(0.03)
        with self._count:
            self.active -= 1
        return np.zeros(x.shape[2:], np.float32)


def test_shared_estimator_takes_turns_frame_by_frame() -> None:
    backend = _RecordingBackend()
    shared = SharedEstimator(DepthEstimator(backend))
    rgb = np.zeros((48, 64, 3), np.uint8)
    started = threading.Event()

    def video() -> None:
        def frames() -> Iterator[tuple[int, np.ndarray]]:
            for i in range(12):
                if i == 1:
                    started.set()
                yield i, rgb

        assert [tag for tag, _ in shared.predict_many(frames())] == list(range(12))

    def live() -> None:
        started.wait(10)
        for _ in range(4):
            depth, _ = shared.predict(rgb)
            assert depth.shape == (48, 64)

    threads = [threading.Thread(target=video, name="video"),
               threading.Thread(target=live, name="live")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert backend.most_active == 1  # never two inferences at once
    assert backend.calls.count("video") == 12 and backend.calls.count("live") == 4
    # the live frames ran between video frames (turns in arrival order), not after the
    # whole video; a plain threading.Lock lets the video take it again and again
    order = "".join(name[0] for name in backend.calls)
    assert order.endswith("v") and "ll" not in order, order
    shared.close()


def test_turn_lock_hands_over_in_arrival_order() -> None:
    def waiter_position() -> int:
        lock, order, asked = TurnLock(), [], threading.Event()

        def busy() -> None:  # takes the lock again as soon as it lets go
            for i in range(40):
                with lock:
                    order.append("busy")
                    if i == 5:
                        asked.set()
                    time.sleep(0.002)

        def waiter() -> None:
            asked.wait(10)
            with lock:
                order.append("waiter")

        threads = [threading.Thread(target=busy), threading.Thread(target=waiter)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        return order.index("waiter")

    # It asked while the 6th turn ran: it gets the 7th or 8th, not whatever the busy
    # thread leaves (a plain threading.Lock often gives it the last turn).
    assert max(waiter_position() for _ in range(3)) <= 7
