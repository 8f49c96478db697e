"""The jobs the web worker runs, over Flask's test client: pictures, videos, the cache, restart."""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import cv2
import numpy as np
from flask.testing import FlaskClient
from support.clips import make_clip, read_video
from support.web import png_bytes

from stream.core.errors import SourceError
from stream.depth.colormap import colorize, minmax
from stream.engines.base import Backend
from stream.engines.estimator import DepthEstimator
from stream.engines.torch_backend import TorchBackend
from stream.sinks.base import depth_to_u16
from stream.web import DepthServer, Job, JobKind, JobSettings, ServerConfig, create_app
from web.conftest import expected_depth, fetch_image, no_estimator, picture, post, wait_done

# ---------------------------------------------------------------- pictures


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
                               "model": "midas-small"}
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
    assert polled["results"]["depth16_npy"]["download"] == "another_name_depth16.npy"

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


# ---------------------------------------------------------------- videos


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

    again = DepthServer(ServerConfig(tmp_path), no_estimator)  # worker never started
    client = again.app.test_client()
    body = client.get(first["status_url"]).get_json()
    assert body["status"] == "done" and body["results"] == first["results"]
    assert client.get(first["results"]["result_png"]["url"]).status_code == 200
    cached = post(client, data).get_json()
    assert cached["cached"] is True and cached["id"] == first["id"]
    stale_now = client.get(f"/api/jobs/{stale.id}").get_json()
    assert stale_now["status"] == "failed" and "upload the file again" in stale_now["error"]
