"""A model per job: the choice, one shared estimator per model, refusals, metres, int8's warning.

Depth Anything V2 runs for real on synthetic weights at input size 56 (the network is
slow on two cores at its own sizes); where the network is not the point, the cheap test
double stands in.
"""

from __future__ import annotations

import io
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from flask import Flask
from flask.testing import FlaskClient
from support import dav2_weights
from support.clips import make_clip
from support.fakes import CheapBackend, ShapeRecorder, cheap_estimator
from support.web import png_bytes

import stream.models.weights
from stream.depth.colormap import colorize, minmax
from stream.engines.estimator import DepthEstimator, create_estimator
from stream.models.registry import MODELS, get_spec
from stream.web import create_app
from stream.web.models import ModelChoice, ModelUnavailableError, precision_warning
from stream.web.serve import _model_choice, locate_checkpoint
from web.conftest import fetch_image, picture, wait_done

DAV2_SIDE = 56
FAILED_CHECK = {"abs_rel": 0.31, "delta1": 0.62, "abs_rel_worst": 0.5, "delta1_worst": 0.4,
                "frames": 10}
PASSED_CHECK = {"abs_rel": 0.01, "delta1": 0.999, "abs_rel_worst": 0.02,
                "delta1_worst": 0.99, "frames": 10}


def post(client: FlaskClient, data: bytes, **fields: str):
    return client.post("/api/jobs", data={"file": (io.BytesIO(data), "pic.png"), **fields},
                       content_type="multipart/form-data")


def cache_checkpoint(name: str) -> Path:
    """Synthetic weights of ``name`` where the CLI looks first (the torch hub cache)."""
    path = stream.models.weights.cache_path(get_spec(name).checkpoint)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(dav2_weights.synthetic_torch_state_dict(7), path)
    return path


@pytest.fixture
def no_download(monkeypatch: pytest.MonkeyPatch) -> None:
    def download(*args: object, **kwargs: object) -> None:
        raise AssertionError("a job made the server download a checkpoint")

    monkeypatch.setattr(stream.models.weights, "download", download)


@pytest.fixture
def built() -> list[str]:
    return []


@pytest.fixture
def app(tmp_path: Path, no_download: None, built: list[str]) -> Iterator[Flask]:
    """MiDaS (the cheap double) by default; DAv2 small and metric indoor from the cache."""
    for name in ("dav2-small", "dav2-metric-indoor"):
        cache_checkpoint(name)

    def build(name: str) -> DepthEstimator:
        built.append(name)
        if name == "midas-small":
            return cheap_estimator()
        return create_estimator(str(stream.models.weights.cache_path(get_spec(name).checkpoint)),
                                backend="torch", model=name, input_size=DAV2_SIDE,
                                progress=False)

    def locate(name: str) -> str:  # the default's weights are the server's own (serve)
        return "midas" if name == "midas-small" else locate_checkpoint(name, "torch")

    choice = ModelChoice(build, "midas-small", locate)
    app = create_app(tmp_path / "data", choice)
    yield app
    app.extensions["depthstream"].close()


def test_the_page_lists_every_model_and_says_which_are_here(app: Flask) -> None:
    info = app.test_client().get("/api/info").get_json()
    assert info["model"] == "midas-small"
    assert [m["name"] for m in info["models"]] == list(MODELS)
    here = {m["name"]: m["available"] for m in info["models"]}
    assert here == {"midas-small": True, "dav2-small": True, "dav2-metric-indoor": True,
                    "dav2-metric-outdoor": False}
    outdoor = info["models"][-1]
    assert outdoor["metric"] and "depth_anything_v2_metric_vkitti_vits.pth" in outdoor["why"]


def test_each_job_runs_on_the_model_it_asked_for_built_once(app: Flask,
                                                            built: list[str]) -> None:
    client = app.test_client()
    data = png_bytes(picture(11))
    jobs = {}
    for model in ("midas-small", "dav2-small", "dav2-small"):
        resp = post(client, data, model=model, cmap="gray" if model in jobs else "inferno")
        assert resp.status_code == 202, resp.get_json()
        jobs.setdefault(model, []).append(wait_done(client, resp.get_json()["id"]))
    default = wait_done(client, post(client, data).get_json()["id"])  # no field: the default
    assert default["settings"]["model"] == "midas-small"
    assert default["id"] == jobs["midas-small"][0]["id"]  # cached: same picture, same model
    for model, done in jobs.items():
        for job in done:
            assert job["status"] == "done", job["error"]
            assert job["settings"]["model"] == model
            assert job["info"]["model"] == model
            assert job["info"]["model_title"] == get_spec(model).title
            assert job["info"]["units"] == "relative"
    assert jobs["dav2-small"][0]["id"] != jobs["midas-small"][0]["id"]  # another model
    # the default at start, DAv2 on first use, and never again
    assert built == ["midas-small", "dav2-small"]
    server = app.extensions["depthstream"]
    assert server.models.loaded("dav2-small") is not server.models.loaded("midas-small")


def test_a_metric_model_s_results_are_in_metres(app: Flask) -> None:
    client = app.test_client()
    bgr = picture(12)
    job = wait_done(client, post(client, png_bytes(bgr), model="dav2-metric-indoor")
                    .get_json()["id"])
    assert job["status"] == "done", job["error"]
    assert job["info"]["units"] == "m"
    results = job["results"]
    assert results["depth16_png"]["label"] == "Raw depth (16-bit PNG, millimetres)"
    assert results["depth16_npy"]["label"] == "Raw depth (float32 .npy, metres)"
    server = app.extensions["depthstream"]
    metres, _ = server.models.loaded("dav2-metric-indoor").predict(
        cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    assert 0.0 < metres.min() and metres.max() <= 20.0  # the indoor model's range
    npy = np.load(io.BytesIO(client.get(results["depth16_npy"]["url"]).data))
    np.testing.assert_allclose(npy, metres, rtol=1e-5)
    mm = fetch_image(client, results["depth16_png"]["url"])
    assert mm.dtype == np.uint16
    assert np.abs(mm.astype(np.int64) - np.rint(metres * 1000)).max() <= 1
    colour = fetch_image(client, results["result_png"]["url"])
    near_is_warm = colorize(metres, *minmax(metres), invert=True)  # metres: smaller is nearer
    assert np.abs(colour.astype(int) - near_is_warm).max() <= 1


def test_a_metric_model_s_video_says_metres_and_its_raw_frames_are_millimetres(
        app: Flask, tmp_path: Path) -> None:
    client = app.test_client()
    clip = make_clip(tmp_path / "walk.mp4", frames=3, size_wh=(64, 48), audio=False)
    resp = client.post("/api/jobs", data={"file": (io.BytesIO(clip.read_bytes()), "walk.mp4"),
                                          "model": "dav2-metric-indoor"},
                       content_type="multipart/form-data")
    job = wait_done(client, resp.get_json()["id"])
    assert job["status"] == "done", job["error"]
    assert job["info"]["units"] == "m" and job["info"]["model"] == "dav2-metric-indoor"
    raw = job["results"]["depth16_zip"]
    assert raw["label"] == "Raw depth (16-bit PNG frames, millimetres, .zip)"
    with zipfile.ZipFile(io.BytesIO(client.get(raw["url"]).data)) as zf:
        pngs = [n for n in zf.namelist() if n.endswith(".png")]
        assert len(pngs) == 3
        mm = cv2.imdecode(np.frombuffer(zf.read(pngs[0]), np.uint8), cv2.IMREAD_UNCHANGED)
    assert mm.dtype == np.uint16 and 0 < mm.min() and mm.max() <= 20_000  # indoor: <= 20 m


def test_a_model_whose_checkpoint_is_not_here_is_400(app: Flask) -> None:
    client = app.test_client()
    resp = post(client, png_bytes(picture(13)), model="dav2-metric-outdoor")
    assert resp.status_code == 400
    assert resp.get_json()["error"] == (
        "dav2-metric-outdoor is not available on this server: its checkpoint "
        "depth_anything_v2_metric_vkitti_vits.pth is not here, and a job does not download "
        "it (the operator can fetch it once, e.g. depthstream image --model "
        "dav2-metric-outdoor PICTURE)")
    resp = post(client, png_bytes(picture(13)), model="midas-large")
    assert resp.status_code == 400 and "unknown model 'midas-large'" in resp.get_json()["error"]
    assert len(app.extensions["depthstream"].store) == 0


def test_int8_needs_its_model_made_before_a_job_asks(tmp_path: Path, no_download: None,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cache_checkpoint("dav2-small")
    made: list[object] = [None]
    monkeypatch.setattr("stream.engines.report.model_report",
                        lambda *a, **k: {"int8_model": made[0]})
    with pytest.raises(ModelUnavailableError, match="no int8 model on this server.*"
                                                    "depthstream info --model dav2-small "
                                                    "--precision int8"):
        locate_checkpoint("dav2-small", "openvino", "cpu", "int8")
    made[0] = "/cache/int8/model.xml"
    assert locate_checkpoint("dav2-small", "openvino", "cpu", "int8").startswith("dav2-small-")
    assert locate_checkpoint("dav2-small", "openvino", "cpu", "fp32")  # fp32 makes nothing


def test_a_server_of_one_model_refuses_the_others(tmp_path: Path) -> None:
    app = create_app(tmp_path, cheap_estimator, start=False)
    resp = post(app.test_client(), png_bytes(picture(14)), model="dav2-small")
    assert resp.status_code == 400
    assert resp.get_json()["error"] == "this server runs midas-small only"


class _Int8Backend(CheapBackend):
    """The cheap double, describing itself as int8 with the given self-check."""

    def __init__(self, check: dict) -> None:
        super().__init__()
        self.check = check

    def describe(self) -> dict:
        return {"backend": "openvino", "device": "cpu", "precision": "int8",
                "int8_agreement": self.check}


@pytest.mark.parametrize("check", [FAILED_CHECK, PASSED_CHECK])
def test_int8_past_a_failed_self_check_is_in_the_job_s_status(tmp_path: Path,
                                                              check: dict) -> None:
    app = create_app(tmp_path, lambda: DepthEstimator(_Int8Backend(check)), precision="int8")
    try:
        client = app.test_client()
        job = wait_done(client, post(client, png_bytes(picture(15))).get_json()["id"])
        assert job["status"] == "done", job["error"]
        assert job["info"]["precision"] == "int8"
        warning = precision_warning({"precision": "int8", "int8_agreement": check})
        if check is FAILED_CHECK:
            assert warning.startswith("int8 differs from fp32 on this checkpoint (AbsRel "
                                      "0.310, delta<1.25 0.620 on 10 held-out frames; needs")
            assert warning.endswith("; serve --precision auto would use fp32")
            assert job["info"]["warnings"] == [warning]
        else:
            assert warning is None and "warnings" not in job["info"]
    finally:
        app.extensions["depthstream"].close()


SLOWER = {"fp32_ms": 61.0, "int8_ms": 75.5, "shape": [1, 3, 196, 252], "machine": "here",
          "rounds": 5}
FASTER = {**SLOWER, "int8_ms": 30.5}


@pytest.mark.parametrize(("check", "speed", "expected"), [
    (PASSED_CHECK, FASTER, None),
    (PASSED_CHECK, None, None),  # not timed: nothing to say about speed
    (PASSED_CHECK, SLOWER, "int8 is slower than fp32 on this machine (int8 75.5 ms, fp32 "
                           "61.0 ms per 196x252 input); serve --precision auto would use fp32"),
    (FAILED_CHECK, SLOWER, "int8 differs from fp32"),
])
def test_the_int8_warning_says_when_int8_is_slower_here(check, speed, expected) -> None:
    described = {"precision": "int8", "int8_agreement": check, "int8_speed": speed}
    warning = precision_warning(described)
    if expected is None:
        assert warning is None
        return
    assert warning.startswith(expected)
    assert warning.endswith("; serve --precision auto would use fp32")
    if check is FAILED_CHECK:  # both reasons, in one line
        assert "; int8 is slower than fp32 on this machine (" in warning
    assert precision_warning({**described, "precision": "fp32"}) is None


def test_serve_builds_the_default_from_its_weights_and_others_from_the_cache(
        weights_file: Path, no_download: None, monkeypatch: pytest.MonkeyPatch) -> None:
    cached = cache_checkpoint("dav2-small")
    calls: list[tuple[tuple, dict]] = []

    def create(*args: object, **kwargs: object) -> DepthEstimator:
        calls.append((args, kwargs))
        return cheap_estimator()

    # (stream.web.serve is also the name of the function the package exports)
    monkeypatch.setattr(sys.modules["stream.web.serve"], "create_estimator", create)
    choice = _model_choice("midas-small", weights_file, 192, backend="torch", device="cpu",
                           precision="auto")
    name, tag = choice.tag(None)
    # the input side is part of the cache tag: results at another size are not these
    assert name == "midas-small" and tag.endswith("-torch-cpu-auto-side192")
    unsized = _model_choice("midas-small", weights_file, None, backend="torch", device="cpu",
                            precision="auto")
    assert unsized.tag(None)[1] == tag.removesuffix("-side192")
    assert choice.tag("dav2-small")[1].startswith("dav2-small-")
    with pytest.raises(ModelUnavailableError, match="dav2-metric-indoor is not available"):
        choice.tag("dav2-metric-indoor")
    try:
        choice.estimator()
        choice.estimator("dav2-small")
        choice.estimator("dav2-small")  # kept: built once
        (args0, default), (args1, other) = calls
        assert args0 == () and default["model"] == "midas-small"
        assert "state_dict" in default and default["input_size"] == 192  # read at start
        assert args1 == (str(cached),) and other["model"] == "dav2-small"  # no download
        assert other["progress"] is False and "input_size" not in other
        assert {k: other[k] for k in ("backend", "device", "precision")} == {
            "backend": "torch", "device": "cpu", "precision": "auto"}
    finally:
        choice.close()


def test_video_jobs_and_the_live_view_run_at_the_model_s_own_sides(tmp_path: Path) -> None:
    """Pictures at 518 (the reference's), videos at 364 and live at 196, as the CLI does."""
    from support.mjpeg import MjpegServer

    from stream.sources.capture import LiveSource

    spec, backend = get_spec("dav2-small"), ShapeRecorder()
    sides = {"picture": spec.input.side, "video": spec.video_side, "live": spec.live_side}
    frame = picture(21, (64, 48))
    with MjpegServer([frame], fps=25).start() as camera:
        app = create_app(tmp_path / "data", lambda: DepthEstimator(backend), model="dav2-small",
                         live_source=lambda: LiveSource.from_url(camera.url))
        server = app.extensions["depthstream"]
        try:
            client = app.test_client()
            done = wait_done(client, post(client, png_bytes(frame)).get_json()["id"])
            assert done["status"] == "done", done["error"]
            assert done["info"]["input_size"] == sides["picture"]
            clip = make_clip(tmp_path / "clip.mp4", frames=2, size_wh=(64, 48), audio=False)
            job = wait_done(client, client.post(
                "/api/jobs", data={"file": (io.BytesIO(clip.read_bytes()), "clip.mp4")},
                content_type="multipart/form-data").get_json()["id"])
            assert job["status"] == "done", job["error"]
            assert job["info"]["input_size"] == sides["video"]
            seen = len(backend.shapes)
            stream_resp = client.get("/live/stream.mjpg", buffered=False)
            next(iter(stream_resp.response))
            stream_resp.close()
        finally:
            server.close()
    expected = {use: spec.input.network_size(48, 64, side) for use, side in sides.items()}
    assert len(set(expected.values())) == 3
    shapes = backend.shapes
    assert shapes[0] == expected["picture"]
    assert shapes[1:seen] == [expected["video"]] * (seen - 1)
    assert shapes[seen:] and set(shapes[seen:]) == {expected["live"]}


def test_the_cache_key_holds_the_input_side_of_the_job_s_kind(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A result made at another default side (an older server's) is not this one's."""
    import dataclasses

    import stream.web.uploads as uploads
    from stream.web.jobs import JobKind, JobSettings

    settings = JobSettings(model="dav2-small")
    video, picture_key = (uploads.cache_key("d", kind, settings, "tag")
                          for kind in (JobKind.VIDEO, JobKind.PICTURE))
    spec = get_spec("dav2-small")
    monkeypatch.setattr(uploads, "get_spec",
                        lambda name: dataclasses.replace(spec, video_side=518))
    assert uploads.cache_key("d", JobKind.VIDEO, settings, "tag") != video
    assert uploads.cache_key("d", JobKind.PICTURE, settings, "tag") == picture_key
