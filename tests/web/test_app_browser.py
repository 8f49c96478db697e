"""The upload page in a real headless Chromium (Playwright, Debian's /usr/bin/chromium).

The page is served by the production server (waitress) with a token, opened once with
``/?token=...`` as the printed address says (the cookie does the rest). Uploads pictures
through the file picker and by drag-and-drop, waits for the result the page polls for,
and checks the picture the page shows is the depth result, pixel by pixel; an
undecodable file shows the server's message; a queued and a running video are cancelled
with the page's button; the result scrolls into view on a phone; a model is chosen per
job, and a metric model's result and int8's warning are shown.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from flask import Flask
from support.clips import make_clip
from support.fakes import CheapBackend, cheap_estimator
from support.mjpeg import MjpegServer
from support.web import Http, multipart

from stream.depth.colormap import colorize, minmax
from stream.engines.estimator import DepthEstimator
from stream.engines.torch_backend import TorchBackend
from stream.models.registry import DAV2_METRIC_INDOOR_SPEC
from stream.sources.capture import LiveSource
from stream.web import DepthServer, HttpServer, create_app
from stream.web.models import ModelChoice, ModelUnavailableError

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
TIMEOUT_MS = 120_000
TOKEN = "browser-test-token-1"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium; "
           ".ci/run installs it)")


def picture(seed: int, size_wh: tuple[int, int] = (96, 64)) -> np.ndarray:
    w, h = size_wh
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([x * 255 / w, y * 255 / h, np.full_like(x, 40 * seed % 255)], -1)
    img[(x - w * 0.6) ** 2 + (y - h * 0.5) ** 2 < (h / 4) ** 2] = 240
    return img.astype(np.uint8)


def serving(app: Flask) -> Iterator[tuple[str, Flask]]:
    """Serve on waitress; stop it (and the app) after."""
    httpd = HttpServer(app.extensions["depthstream"], "127.0.0.1", 0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.port}", app
    finally:
        httpd.request_stop()
        thread.join(15)


@pytest.fixture(scope="module")
def live_server(state_dict: dict, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[tuple[str, Flask]]:
    yield from serving(create_app(tmp_path_factory.mktemp("data"),
                                  lambda: DepthEstimator(TorchBackend(state_dict)), token=TOKEN))


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                    headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: object, live_server: tuple[str, Flask]) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # HTTP errors the page handles (400 for a bad file) are logged too; keep the rest.
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error"
            and "the server responded with a status of 4" not in msg.text else None)
    page.goto(f"{live_server[0]}/?token={TOKEN}")  # the printed address, opened once
    assert page.url == live_server[0] + "/"  # the token left the address bar
    # Predicates are functions, not strings: the page's CSP forbids eval.
    page.wait_for_function("() => document.getElementById('cmap').options.length > 1")
    yield page
    context.close()
    assert errors == []  # no script errors, no blocked (CDN) resources


def shown_pixels(page: object, selector: str) -> np.ndarray:
    """The picture an <img> shows, read back through a canvas as BGR uint8."""
    page.wait_for_function(
        f"() => {{ const i = document.querySelector('{selector}');"
        " return i && i.offsetParent !== null && i.complete && i.naturalWidth > 0; }",
        timeout=TIMEOUT_MS)
    rgba = page.evaluate(f"""() => {{
        const img = document.querySelector('{selector}');
        const c = document.createElement('canvas');
        c.width = img.naturalWidth; c.height = img.naturalHeight;
        const ctx = c.getContext('2d');
        ctx.drawImage(img, 0, 0);
        const d = ctx.getImageData(0, 0, c.width, c.height).data;
        return [c.width, c.height, Array.from(d)];
    }}""")
    w, h, flat = rgba
    arr = np.asarray(flat, np.uint8).reshape(h, w, 4)
    return cv2.cvtColor(arr, cv2.COLOR_RGBA2BGR)


def expected_colour(app: Flask, bgr: np.ndarray) -> np.ndarray:
    server: DepthServer = app.extensions["depthstream"]
    # The worker is idle once the page shows the result, so its estimator can be borrowed.
    depth, _ = server.worker.estimator.predict(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return colorize(depth, *minmax(depth))


def test_upload_with_the_picker_shows_the_depth_result(
        page: object, live_server: tuple[str, Flask], tmp_path: Path) -> None:
    bgr = picture(1)
    path = tmp_path / "room.png"
    cv2.imwrite(str(path), bgr)
    page.set_input_files("#file", str(path))
    page.wait_for_selector("#result:not([hidden])", timeout=TIMEOUT_MS)

    shown = shown_pixels(page, "#result-depth")
    assert shown.shape == bgr.shape
    assert np.abs(shown.astype(int) - expected_colour(live_server[1], bgr)).max() <= 2
    side = shown_pixels(page, "#result-side")
    assert side.shape == (64, 192, 3)
    assert np.abs(side[:, :96].astype(int) - bgr).max() <= 2

    assert page.inner_text("#status-text") == "done"
    assert page.get_attribute("#bar-fill", "style").replace(" ", "") == "width:100%;"
    links = page.eval_on_selector_all(
        "#downloads a", "as => as.map(a => [a.textContent, a.getAttribute('download')])")
    assert ["Depth (colour PNG)", "room_depth.png"] in links
    assert ["Raw depth (16-bit PNG)", "room_depth16.png"] in links
    assert ["Raw depth (float32 .npy)", "room_depth16.npy"] in links


def test_drag_and_drop_upload_and_the_cache(page: object, live_server: tuple[str, Flask]
                                            ) -> None:
    bgr = picture(2)
    data = base64.b64encode(cv2.imencode(".png", bgr)[1].tobytes()).decode()
    drop = """async (b64) => {
        const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], 'dropped.png', { type: 'image/png' }));
        const zone = document.getElementById('drop');
        zone.dispatchEvent(new DragEvent('dragenter', { bubbles: true, dataTransfer: dt }));
        zone.dispatchEvent(new DragEvent('drop', { bubbles: true, dataTransfer: dt }));
    }"""
    page.evaluate(drop, data)
    page.wait_for_selector("#result:not([hidden])", timeout=TIMEOUT_MS)
    shown = shown_pixels(page, "#result-depth")
    assert np.abs(shown.astype(int) - expected_colour(live_server[1], bgr)).max() <= 2
    assert "from cache" not in page.inner_text("#result-info")

    page.evaluate(drop, data)  # the same file again: answered from the cache
    page.wait_for_function(
        "() => document.getElementById('result-info').textContent.includes('from cache')",
        timeout=TIMEOUT_MS)
    assert page.inner_text("#status-text") == "done (cached)"


def test_a_file_that_is_not_a_picture_shows_the_message(page: object, tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("these are my notes, not a picture\n" * 20)
    page.set_input_files("#file", str(path))
    page.wait_for_selector("#error:not([hidden])", timeout=TIMEOUT_MS)
    assert "neither a picture nor a video" in page.inner_text("#error")
    assert page.is_hidden("#result")


def test_a_video_plays_in_the_page(page: object, tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "walk.mp4", frames=6, size_wh=(64, 48))
    page.select_option("#layout", "side")
    page.set_input_files("#file", str(clip))
    page.wait_for_selector("#result-video-box:not([hidden])", timeout=TIMEOUT_MS)
    # The browser decodes the depth video: its frames have the side-by-side size.
    page.wait_for_function("() => { const v = document.getElementById('result-video');"
                           " return v.readyState >= 2 && v.videoWidth > 0; }",
                           timeout=TIMEOUT_MS)
    size = page.evaluate("() => { const v = document.getElementById('result-video');"
                         " return [v.videoWidth, v.videoHeight, v.error]; }")
    assert size == [128, 48, None]
    assert page.is_hidden("#result-picture")
    labels = page.eval_on_selector_all("#downloads a", "as => as.map(a => a.download)")
    assert labels == ["walk_depth.mp4", "walk_depth16.zip"]


def test_the_live_page_shows_the_stream_and_its_fps(browser: object, tmp_path: Path) -> None:
    camera = np.zeros((48, 64, 3), np.uint8)
    camera[:, 32:] = 220
    with MjpegServer([camera], fps=20).start() as cam:
        app = create_app(tmp_path, cheap_estimator,
                         live_source=lambda: LiveSource.from_url(cam.url))
        for base, _ in serving(app):
            context = browser.new_context(viewport={"width": 1000, "height": 700})
            page = context.new_page()
            try:
                page.goto(base + "/")
                page.wait_for_selector("#live-link:not([hidden])")
                page.click("#live-link")
                page.wait_for_url(base + "/live")
                page.wait_for_function(
                    "() => { const i = document.getElementById('live');"
                    " return i.complete && i.naturalWidth === 64; }", timeout=TIMEOUT_MS)
                page.wait_for_function(
                    "() => parseFloat(document.getElementById('fps').textContent) > 0",
                    timeout=TIMEOUT_MS)
                assert page.inner_text("#viewers") == "1"
                page.select_option("#live-layout", "side")  # a new stream, twice as wide
                page.wait_for_function(
                    "() => document.getElementById('live').naturalWidth === 128",
                    timeout=TIMEOUT_MS)
            finally:
                context.close()


def test_without_the_token_the_page_says_what_to_do(browser: object,
                                                    live_server: tuple[str, Flask]) -> None:
    context = browser.new_context()
    page = context.new_page()
    try:
        resp = page.goto(live_server[0] + "/")
        assert resp.status == 401
        assert "token" in resp.json()["error"]
        assert context.cookies() == []
        page.goto(f"{live_server[0]}/?token=wrong-token-123")
        assert context.cookies() == []
        page.goto(f"{live_server[0]}/?token={TOKEN}")
        cookie, = context.cookies()
        assert cookie["value"] == TOKEN and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        # the cookie opens every route: the page, its script, the API it calls
        page.wait_for_function("() => document.getElementById('cmap').options.length > 1")
        assert "megapixels" in page.inner_text("#limits")
        assert page.evaluate("() => fetch('/api/info').then(r => r.status)") == 200
        assert "token" not in page.evaluate("() => document.cookie")  # HttpOnly: not for scripts
    finally:
        context.close()


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Flask]]:
    """A server whose videos take a while (a cheap network with a 30 ms delay per frame)."""
    yield from serving(create_app(tmp_path_factory.mktemp("slow"),
                                  lambda: cheap_estimator(delay_s=0.03), token=TOKEN))


def test_cancel_a_queued_and_a_running_video(browser: object, slow_server: tuple[str, Flask],
                                             tmp_path: Path) -> None:
    base, app = slow_server
    port = int(base.rsplit(":", 1)[1])
    api = Http(port, TOKEN)
    long_clip = make_clip(tmp_path / "long.mp4", frames=300, size_wh=(64, 48), audio=False)
    # Someone else's long video holds the video lane: the page's video must wait.
    body, content_type = multipart(long_clip.read_bytes(), "other.mp4", layout="side")
    status, _, _ = api.request("POST", "/api/jobs", body, {"Content-Type": content_type})
    assert status == 202
    context = browser.new_context(viewport={"width": 1000, "height": 800})
    page = context.new_page()
    try:
        page.goto(f"{base}/?token={TOKEN}")
        page.wait_for_function("() => document.getElementById('cmap').options.length > 1")
        page.set_input_files("#file", str(long_clip))
        page.wait_for_function(
            "() => document.getElementById('status-text').textContent.startsWith('queued')",
            timeout=TIMEOUT_MS)
        assert page.inner_text("#status-text") == "queued, next in line"
        assert page.is_visible("#cancel")
        page.click("#cancel")
        page.wait_for_function(
            "() => document.getElementById('status-text').textContent === 'cancelled'",
            timeout=TIMEOUT_MS)
        assert page.is_hidden("#cancel") and page.is_hidden("#result")
        server: DepthServer = app.extensions["depthstream"]
        cancelled = [j for j in server.store.jobs() if j.name == "long"]
        assert [j.status.value for j in cancelled] == ["cancelled"]

        for job in server.store.jobs():  # free the lane; then the page's video runs
            if job.name == "other":
                api.request("DELETE", f"/api/jobs/{job.id}")
        page.set_input_files("#file", str(long_clip))
        page.wait_for_function(
            "() => /^working [1-9]/.test(document.getElementById('status-text').textContent)",
            timeout=TIMEOUT_MS)
        start = time.monotonic()
        page.click("#cancel")
        page.wait_for_function(
            "() => document.getElementById('status-text').textContent === 'cancelled'",
            timeout=TIMEOUT_MS)
        assert time.monotonic() - start < 5
        running = [j for j in server.store.jobs() if j.name == "long" and j.kind.value == "video"]
        assert sorted(j.status.value for j in running) == ["cancelled", "cancelled"]
        assert all([p.name for p in server.store.job_dir(j.id).iterdir()] == ["meta.json"]
                   for j in running)
    finally:
        context.close()


def test_on_a_phone_the_result_scrolls_into_view_with_a_full_bar(
        browser: object, live_server: tuple[str, Flask], tmp_path: Path) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 640}, is_mobile=True)
    page = context.new_page()
    try:
        page.goto(f"{live_server[0]}/?token={TOKEN}")
        page.wait_for_function("() => document.getElementById('cmap').options.length > 1")
        path = tmp_path / "tall.png"
        cv2.imwrite(str(path), picture(5, (300, 400)))
        page.set_input_files("#file", str(path))
        page.wait_for_selector("#result:not([hidden])", timeout=TIMEOUT_MS)
        # done means a full bar, at once (not three quarters on its way)
        widths = page.evaluate("() => [document.getElementById('bar-fill').getBoundingClientRect()"
                               ".width, document.querySelector('.bar').clientWidth]")
        assert widths[0] >= widths[1] - 1, widths
        assert page.inner_text("#status-text") == "done"
        # the result was below the fold: the page brings it into view
        page.wait_for_function(
            "() => { const r = document.getElementById('result').getBoundingClientRect();"
            " return r.top >= 0 && r.top < window.innerHeight / 2; }", timeout=10_000)
        assert page.evaluate("() => window.scrollY") > 100
    finally:
        context.close()


class _MetricInt8(CheapBackend):
    """The cheap double as a metric model on int8 whose self-check failed."""

    spec = DAV2_METRIC_INDOOR_SPEC

    def describe(self) -> dict:
        return {"backend": "openvino", "device": "cpu", "precision": "int8",
                "int8_agreement": {"abs_rel": 0.3, "delta1": 0.6, "abs_rel_worst": 0.5,
                                   "delta1_worst": 0.4, "frames": 10}}


def test_a_model_is_chosen_per_job_and_its_warning_and_metres_are_shown(
        browser: object, tmp_path: Path) -> None:
    def build(name: str) -> DepthEstimator:
        return DepthEstimator(_MetricInt8()) if name == "dav2-metric-indoor" else cheap_estimator()

    def locate(name: str) -> str:
        if name == "dav2-metric-outdoor":
            raise ModelUnavailableError("dav2-metric-outdoor is not available on this server")
        return name

    app = create_app(tmp_path / "data", ModelChoice(build, "midas-small", locate))
    for base, _ in serving(app):
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        page = context.new_page()
        try:
            page.goto(base + "/")
            page.wait_for_function("() => document.getElementById('model').options.length > 1")
            options = page.eval_on_selector_all(
                "#model option", "os => os.map(o => [o.value, o.disabled, o.selected])")
            assert options == [["midas-small", False, True], ["dav2-small", False, False],
                               ["dav2-metric-indoor", False, False],
                               ["dav2-metric-outdoor", True, False]]
            assert "MiDaS v2.1 small" in page.inner_text("#model-tag")
            page.select_option("#model", "dav2-metric-indoor")
            path = tmp_path / "room.png"
            cv2.imwrite(str(path), picture(6))
            page.set_input_files("#file", str(path))
            page.wait_for_selector("#result:not([hidden])", timeout=TIMEOUT_MS)
            info = page.inner_text("#result-info")
            assert "Depth Anything V2 Small, metric indoor (Hypersim) (int8)" in info
            assert "depth in metres" in info
            assert f"at input {DAV2_METRIC_INDOOR_SPEC.input.side}" in info  # a picture's size
            assert page.is_visible("#warnings")
            assert page.inner_text("#warnings").startswith(
                "Warning: int8 differs from fp32 on this checkpoint")
            links = page.eval_on_selector_all("#downloads a", "as => as.map(a => a.textContent)")
            assert "Raw depth (16-bit PNG, millimetres)" in links
        finally:
            context.close()
