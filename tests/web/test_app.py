"""The web app over Flask's test client: 400, 404, traversal, 413, 503, the page, errors."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from flask.testing import FlaskClient
from support.clips import make_audio_only, make_clip
from support.web import png_bytes

from stream.core.errors import ConfigError, SourceError, StreamError
from stream.engines.estimator import DepthEstimator
from stream.web import (
    MB,
    DepthServer,
    LiveUnavailableError,
    QueueFullError,
    ServerConfig,
    UploadTooLargeError,
    create_app,
    status_for,
)
from stream.web.uploads import display_name
from web.conftest import no_estimator, picture, post, wait_done

# ---------------------------------------------------------------- 400


@pytest.mark.parametrize(("data", "needle"), [
    (b"hello, this is not a picture\n" * 10, "neither a picture nor a video"),
    (b"", "empty"),
    (png_bytes(picture(7))[:60], "damaged or cut short"),  # a truncated PNG is a picture
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


def test_audio_only_file_is_400(client: FlaskClient, tmp_path: Path) -> None:
    data = make_audio_only(tmp_path / "tone.m4a").read_bytes()
    resp = post(client, data, name="tone.mp4")
    assert resp.status_code == 400
    assert "neither a picture nor a video" in resp.get_json()["error"]


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
    assert display_name(filename) == expected


# ---------------------------------------------------------------- 413 and 503


@pytest.fixture
def small_server(tmp_path: Path) -> Iterator[DepthServer]:
    """Limits of 2 kB (pictures) and 4 kB (videos); the worker is not started."""
    server = DepthServer(ServerConfig(tmp_path, max_image_bytes=2000, max_video_bytes=4000),
                         no_estimator)
    yield server
    server.close()


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


def test_video_over_its_limit_is_413(small_server: DepthServer, tmp_path: Path) -> None:
    data = make_clip(tmp_path / "long.mp4", frames=60, size_wh=(96, 64)).read_bytes()
    assert 4000 < len(data) < 4000 + (1 << 20)
    resp = post(small_server.app.test_client(), data)
    assert resp.status_code == 413
    assert "videos up to 0.004 MB" in resp.get_json()["error"]
    # a video limit below the picture limit: the upload is read, decoded, then refused
    server = DepthServer(ServerConfig(tmp_path / "d", max_image_bytes=MB, max_video_bytes=4000),
                         no_estimator)
    resp = post(server.app.test_client(), data)
    assert resp.status_code == 413
    assert resp.get_json()["error"].startswith("videos may be up to 0.004 MB")


def test_full_queue_is_503_and_forgets_the_job(tmp_path: Path) -> None:
    server = DepthServer(ServerConfig(tmp_path, max_queued=1), no_estimator)
    client = server.app.test_client()
    assert post(client, png_bytes(picture(11))).status_code == 202
    resp = post(client, png_bytes(picture(12)))
    assert resp.status_code == 503
    assert "busy" in resp.get_json()["error"]
    assert len(server.store) == 1
    assert len(list(server.store.jobs_dir.iterdir())) == 1  # nothing left of the refused one


def test_limits_come_from_the_factory(tmp_path: Path) -> None:
    app = create_app(tmp_path, no_estimator, max_image_mb=1.5, max_video_mb=7, start=False)
    info = app.test_client().get("/api/info").get_json()
    assert info["max_image_bytes"] == 1_500_000 and info["max_video_bytes"] == 7 * MB
    assert app.config["MAX_CONTENT_LENGTH"] > 7 * MB


# ---------------------------------------------------------------- page and routes


def test_page_and_assets_are_served_without_any_cdn(client: FlaskClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    html = page.get_data(as_text=True)
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', html):
        assert client.get(asset).status_code == 200, asset
    static = Path(__file__).parents[2] / "stream" / "static"
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


# ---------------------------------------------------------------- errors


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


def test_an_unexpected_error_is_a_json_500(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    server = DepthServer(ServerConfig(tmp_path), no_estimator)

    def disk_full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(server, "_save_upload", disk_full)
    resp = post(server.app.test_client(), png_bytes(picture(30)))
    assert resp.status_code == 500 and resp.is_json
    assert "internal error (OSError)" in resp.get_json()["error"]


def test_model_errors_surface_from_create_app(tmp_path: Path) -> None:
    from stream.core.errors import WeightsError

    def broken() -> DepthEstimator:
        raise WeightsError("no checkpoint here")

    with pytest.raises(WeightsError, match="no checkpoint"):
        create_app(tmp_path, broken)
