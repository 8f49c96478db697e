"""Shared by the web tests over Flask's test client: one app with the real network, helpers.

The fixtures ``app``, ``client`` and ``server`` are one app per test module (the torch
backend on the synthetic weights); a module that defines a fixture of the same name uses
its own. The plain helpers are imported as ``from web.conftest import ...``; the production
server's helpers (``running``, ``Http``, ``png_bytes``) live in ``support.web``.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator

import cv2
import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient

from stream.engines.estimator import DepthEstimator
from stream.engines.torch_backend import TorchBackend
from stream.web import DepthServer, create_app

TIMEOUT_S = 120.0


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


def no_estimator() -> DepthEstimator:
    raise AssertionError("these tests never start the worker")


def expected_depth(server: DepthServer, bgr: np.ndarray) -> np.ndarray:
    # The worker is idle once our job is done, so its estimator can be borrowed here.
    depth, _ = server.worker.estimator.predict(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return depth


def fetch_image(client: FlaskClient, url: str, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    resp = client.get(url)
    assert resp.status_code == 200, url
    return cv2.imdecode(np.frombuffer(resp.data, np.uint8), flags)


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
