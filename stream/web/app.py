"""App: the web server's Flask routes, its state (:class:`DepthServer`) and its JSON errors.

Starts threads: :meth:`DepthServer.start` starts the job worker's lanes
(:mod:`stream.web.worker`), the upload checker runs its small pool
(:mod:`stream.web.uploads`), and the first live viewer starts the live pipeline
(:mod:`stream.web.live`). Touches files: uploads are spooled and saved in the data
folder, moved into their job's folder, results are served from there, and
:mod:`stream.web.retention` deletes what is over the budget.

API (every route answers only to the server's Host names, else 403; a change from a
page of another origin is 403; every route needs the token when the server has one:
``Authorization: Bearer TOKEN``, or the cookie that ``/?token=TOKEN`` sets; without it, 401):
    ``POST /api/jobs`` (multipart: the file in ``file``; ``cmap``, ``invert``,
    ``layout``, ``model`` as form fields; ``precision`` only if it is the server's)
    -> ``202 {"id", "status_url", ...}``; an identical upload (SHA-256 of the bytes plus
    the settings and the model) answers at once with the earlier job and ``"cached": true``.

    ``GET /api/jobs/<id>`` (``?name=`` names the downloads) -> ``{"id", "status",
    "progress", "position", "kind", "results", "error", "info", ...}`` with ``status`` one
    of ``queued``, ``running``, ``done``, ``failed``, ``cancelled``; ``position`` is the
    place of a queued job in its lane (pictures and videos wait apart); ``info`` says
    which model made it (``model``, ``units``: ``m`` for metres), at which ``precision``,
    and its ``warnings``.

    ``DELETE /api/jobs/<id>``: cancel a queued or running job; answers once it has
    stopped (within a couple of seconds), its files removed; 409 for a finished one.

    ``GET /results/<id>/<file>`` (``?download=NAME`` as an attachment): a finished
    job's outputs, served only from the data folder, by job id (a uuid4 hex checked
    before any path is built).

    ``GET /live`` (with a camera or URL): a page showing ``/live/stream.mjpg``
    (``?layout=depth|side|overlay``), an MJPEG stream of the depth view, and
    ``/api/live`` (fps, viewers).

Errors are JSON ``{"error": message, "status": code}`` and never name a server path.
Exceptions become status codes here and only here (:data:`STATUS_FOR`): 400 (not a
picture or video, bad settings, a malformed form, a model not available here), 401 (no
token), 403 (a foreign Host or Origin), 404 (unknown job or file), 405 (with ``Allow``),
409 (cancel a finished job), 413 (over a limit), 503 with ``Retry-After`` (busy, queue
full, the camera does not open), 500 for anything else.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlencode

from flask import Flask, Request, Response, jsonify, redirect, request, send_from_directory
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from stream.core.errors import ConfigError, SourceError, StreamError
from stream.core.settings import (
    COLORMAP_NAMES,
    Layout,
    Precision,
    StreamSettings,
    choices,
    parse_enum,
)
from stream.engines.estimator import DepthEstimator
from stream.sources.capture import Source

from . import retention
from .auth import HostNames, cookie_name, request_has_token, token_matches
from .config import MB, ServerConfig
from .jobs import Job, JobSettings, JobStatus, JobStore, public_message
from .live import LiveStream, LiveUnavailableError
from .models import ModelChoice, ModelUnavailableError, model_facts
from .uploads import (
    UploadBusyError,
    UploadChecker,
    UploadTooLargeError,
    cache_key,
    display_name,
    save_upload,
    too_large_message,
)
from .worker import JobWorker, QueueFullError

__all__ = ["STATUS_FOR", "DepthServer", "create_app", "status_for"]

log = logging.getLogger(__name__)

# Multipart framing and form fields around the file: allowed on top of the file limit.
FORM_SLACK_BYTES = 1 << 20
_MAX_FORM_PARTS = 32  # the file and a few settings; werkzeug's default is 1000
_IN_MEMORY_BYTES = 500 * 1024  # werkzeug's own threshold for spooling an upload to disk
_STATIC = Path(__file__).parents[1] / "static"
_NO_LIVE = "no live source: start the server with --camera N or --url URL"
_RETRY_AFTER_S = 5
_COOKIE_MAX_AGE_S = 30 * 24 * 3600
_SWEEP_EVERY_S = 1.0

#: The one table from exceptions to HTTP status codes; the first matching type wins.
STATUS_FOR: tuple[tuple[type[Exception], int], ...] = (
    (UploadTooLargeError, 413),
    (UploadBusyError, 503),
    (QueueFullError, 503),
    (LiveUnavailableError, 503),
    (ModelUnavailableError, 400),
    (ConfigError, 400),
    (SourceError, 400),
)


def status_for(exc: BaseException) -> int:
    """The HTTP status an exception answers: from :data:`STATUS_FOR`, else 500."""
    return next((status for kind, status in STATUS_FOR if isinstance(exc, kind)), 500)


class DepthServer:
    """The app's state: configuration, job store, worker, checker, and the live stream.

    ``create_app`` builds one and keeps it in ``app.extensions["depthstream"]``;
    :meth:`close` stops the live stream and the worker (running jobs fail, "server
    stopped", their files removed).

    Args:
        config: data folder, limits, retention, token, Host names.
        models: the models jobs may ask for; or a factory of the one model
            (:attr:`ServerConfig.model`), called once, on the worker's thread.
        live_source: opens the camera or URL for ``/live``; ``None``: no live page.
        live_settings: smoothing, colours of the live stream.
    """

    def __init__(self, config: ServerConfig,
                 models: ModelChoice | Callable[[], DepthEstimator],
                 live_source: Callable[[], Source] | None = None,
                 live_settings: StreamSettings | None = None) -> None:
        self.config = config
        self.names = HostNames(config.host, config.allow_hosts)
        self.models = (models if isinstance(models, ModelChoice) else
                       ModelChoice.single(models, config.model, config.model_tag))
        self.store = JobStore(config.data_dir)
        self.worker = JobWorker(self.store, self.models, config, on_idle=self.sweep)
        self.checker = UploadChecker(config, backlog=64)
        self.live = (LiveStream(live_source, self._live_estimator, live_settings,
                                max_viewers=config.max_viewers)
                     if live_source is not None else None)
        self._sweep_lock = threading.Lock()
        self._last_sweep = 0.0
        self.sweep()
        self.app = _build_app(self)

    def _live_estimator(self) -> DepthEstimator:
        if self.worker.estimator is None:
            raise StreamError("the model is not loaded yet")
        return self.worker.estimator

    def start(self) -> DepthServer:
        """Start the worker (builds the model); returns self."""
        self.worker.start()
        return self

    def close(self, timeout_s: float = 8.0) -> None:
        """Stop: running jobs fail ("server stopped"), live viewers end (safe to call twice)."""
        self.worker.stop()
        self.checker.close()
        if self.live is not None:
            self.live.close()
        self.worker.join(timeout_s)

    def __enter__(self) -> DepthServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def sweep(self, force: bool = False) -> list[str]:
        """Evict what is over the retention limits (at most once a second unless forced)."""
        with self._sweep_lock:
            now = time.monotonic()
            if not force and now - self._last_sweep < _SWEEP_EVERY_S:
                return []
            self._last_sweep = now
            return retention.sweep(self.store, self.config)

    def accept_upload(self, upload: Any, form: Mapping[str, str]) -> tuple[Job, bool, str]:
        """Store an upload, check its header and kind, and queue it unless cached.

        Returns:
            ``(job, cached, name)``: ``name`` is this upload's display stem (a cached
            job keeps its first uploader's).

        Raises:
            ConfigError: bad settings in the form.
            ModelUnavailableError: the model asked for cannot run here.
            SourceError: an empty file, or one that is neither a picture nor a video.
            UploadTooLargeError: over a limit of its kind.
            UploadBusyError: too many uploads being checked.
            QueueFullError: too many jobs waiting (the job is forgotten again).
        """
        settings, tag = self._settings(form)
        self.sweep()
        tmp = self.store.uploads_dir / uuid.uuid4().hex
        name = display_name(getattr(upload, "filename", None))
        try:
            digest, size = self._save_upload(upload, tmp)
            kind, info = self.checker.check(tmp, size)
            settings = settings.for_kind(kind)
            key = cache_key(digest, kind, settings, tag)
            info = {**info, **model_facts(settings.model)}

            def make() -> Job:
                job_id = uuid.uuid4().hex
                folder = self.store.job_dir(job_id)
                folder.mkdir()
                tmp.replace(folder / "input")
                return Job(id=job_id, kind=kind, settings=settings, key=key, name=name,
                           size_bytes=size, info=info)

            job, cached = self.store.add_or_get(key, make)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        if not cached:
            try:
                self.worker.submit(job)
            except QueueFullError:
                self.store.remove(job.id)
                raise
        return job, cached, name

    def _settings(self, form: Mapping[str, str]) -> tuple[JobSettings, str]:
        """The job's settings (its model named) and the model's cache tag."""
        settings = JobSettings.from_form(form)
        asked = str(form.get("precision") or "").strip().lower()
        # The operator's serve --precision decides what exists: an upload never starts
        # a quantization, nor a second model of another precision.
        if asked and parse_enum(Precision, asked, "precision").value != self.config.precision:
            raise ConfigError(f"this server runs at {self.config.precision} precision, which "
                              f"its operator chose (serve --precision); leave 'precision' out")
        name, tag = self.models.tag(settings.model)
        return dataclasses.replace(settings, model=name), tag

    def _save_upload(self, upload: Any, dest: Path) -> tuple[str, int]:
        return save_upload(upload.stream, dest, self.config)

    def job_api(self, job: Job, **kwargs: Any) -> dict[str, Any]:
        """``job.to_api`` with its place in the queue."""
        return job.to_api(position=self.worker.position(job.id), **kwargs)

    def info(self) -> dict[str, Any]:
        """What the page needs to know: limits, choices, whether live is on."""
        return {
            **self.config.limits(),
            "cmaps": list(COLORMAP_NAMES), "layouts": list(choices(Layout)),
            "precision": self.config.precision,
            "model": self.models.default, "models": self.models.choices(),
            "live": self.live is not None, "video": True,
            "jobs": self.store.counts(), "queued": self.worker.queued,
        }


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    resp = jsonify(error=public_message(message), status=status)
    resp.status_code = status
    if status == 503:
        resp.headers["Retry-After"] = str(_RETRY_AFTER_S)
    for key, value in (headers or {}).items():
        resp.headers[key] = value
    return resp


class _Request(Request):
    """Spools large uploads in the data folder, not in ``/tmp`` (often a small RAM disk)."""

    uploads_dir: Path | None = None

    def _get_file_stream(self, total_content_length: int | None, content_type: str | None,
                         filename: str | None = None, content_length: int | None = None
                         ) -> IO[bytes]:
        if (self.uploads_dir is None or total_content_length is not None
                and total_content_length <= _IN_MEMORY_BYTES):
            return super()._get_file_stream(total_content_length, content_type, filename,
                                            content_length)
        return tempfile.TemporaryFile("wb+", dir=self.uploads_dir)


def _check_request(server: DepthServer) -> Response | None:
    """Before every route: ``None`` to go on, else the 403, 401 (or the cookie's redirect)."""
    refusal = server.names.refusal(request.method, request.environ.get("HTTP_HOST"),
                                   request.headers.get("Origin"))
    if refusal is not None:
        return _error(403, refusal)
    token = server.config.token
    if token is None:
        return None
    given = request.args.get("token")
    if given is not None and request.method in ("GET", "HEAD"):
        if not token_matches(given, token):
            return _error(401, "wrong token")
        # The token leaves the address bar (and the history) at once; the cookie stays.
        rest = [(k, v) for k, v in request.args.items(multi=True) if k != "token"]
        target = "/" + request.path.lstrip("/") + ("?" + urlencode(rest) if rest else "")
        resp = redirect(target, 303)
        resp.set_cookie(cookie_name(request.host), token, max_age=_COOKIE_MAX_AGE_S,
                        path="/", httponly=True, samesite="Strict", secure=request.is_secure)
        return resp
    if request_has_token(token, request.headers.get("Authorization"),
                         request.headers.get("Cookie"), request.host):
        return None
    return _error(401, "this server needs its token: open the address it printed (with "
                       "?token=...) or send 'Authorization: Bearer TOKEN'",
                  {"WWW-Authenticate": 'Bearer realm="depthstream"'})


def _add_hooks(app: Flask, server: DepthServer) -> None:
    app.before_request(lambda: _check_request(server))

    @app.after_request
    def _headers(resp: Response) -> Response:
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "no-referrer")
        # Everything the page needs is served from here: no CDN, works offline.
        resp.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
            "object-src 'none'; frame-ancestors 'none'")
        return resp

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        if exc.code == 413:
            return _error(413, too_large_message(server.config))
        # Keep what the exception says in headers (Allow for a 405), not its HTML body.
        headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
        return _error(exc.code or 500, exc.description or exc.name, headers)

    @app.errorhandler(Exception)
    def _exception(exc: Exception) -> Response:
        status = status_for(exc)
        if status != 500:
            return _error(status, str(exc))
        # A bug or a full disk: JSON too, details only in the log.
        log.exception("request %s %s failed", request.method, request.path)
        return _error(500, f"internal error ({type(exc).__name__}); see the server's log")


def _add_live_routes(app: Flask, server: DepthServer) -> None:
    @app.get("/live")
    def live_page() -> Response:
        if server.live is None:
            return _error(404, _NO_LIVE)
        return send_from_directory(_STATIC, "live.html", max_age=0)

    @app.get("/live/stream.mjpg")
    def live_stream() -> Response:
        if server.live is None:
            return _error(404, _NO_LIVE)
        body = server.live.viewer(request.args.get("layout", "depth"))
        resp = Response(body, direct_passthrough=True,
                        content_type=f"multipart/x-mixed-replace; boundary={LiveStream.BOUNDARY}")
        resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.get("/api/live")
    def live_status() -> Response:
        if server.live is None:
            return _error(404, _NO_LIVE)
        return jsonify(server.live.status())


def _upload_and_form() -> tuple[Any, Mapping[str, str]]:
    """The request's ``file`` and form fields; a malformed form is a 400 that says why."""
    try:
        return request.files.get("file"), request.form
    except RequestEntityTooLarge:
        limit = request.max_content_length
        if request.content_length is not None and (limit is None
                                                   or request.content_length <= limit):
            raise ConfigError(f"the form has too many fields, or a field that is too large: "
                              f"send the file in 'file' and at most {_MAX_FORM_PARTS - 1} "
                              f"short settings") from None
        raise


def _add_job_routes(app: Flask, server: DepthServer) -> None:
    @app.get("/")
    def index() -> Response:
        return send_from_directory(_STATIC, "index.html", max_age=0)

    @app.get("/api/info")
    def api_info() -> Response:
        return jsonify(server.info())

    @app.post("/api/jobs")
    def create_job() -> tuple[Response, int]:
        upload, form = _upload_and_form()
        if upload is None:
            return _error(400, "send the file in the multipart form field 'file'"), 400
        job, cached, name = server.accept_upload(upload, form)
        status = 200 if job.status is JobStatus.DONE else 202
        return jsonify(server.job_api(job, cached=cached, name=name)), status

    @app.get("/api/jobs/<job_id>")
    def get_job(job_id: str) -> Response:
        job = server.store.get(job_id)
        if job is None:
            return _error(404, "no such job (it may have been deleted to make room)")
        name = request.args.get("name")
        return jsonify(server.job_api(job, name=display_name(name) if name else None))

    @app.delete("/api/jobs/<job_id>")
    def cancel_job(job_id: str) -> Response:
        job = server.store.get(job_id)
        if job is None:
            return _error(404, "no such job")
        if job.status.finished:
            return _error(409, f"this job has finished ({job.status.value}); "
                               "there is nothing to cancel")
        server.worker.cancel(job_id)
        job = server.store.get(job_id) or job
        return jsonify(server.job_api(job))

    @app.get("/results/<job_id>/<name>")
    def result_file(job_id: str, name: str) -> Response:
        job = server.store.get(job_id)
        stem = request.args.get("download")
        download_name = (job.download_name(name, display_name(stem) if stem else None)
                         if job is not None else None)
        if download_name is None:
            return _error(404, "no such result")
        server.store.touch(job.id)
        return send_from_directory(server.store.job_dir(job.id), name,
                                   as_attachment=stem is not None,
                                   download_name=download_name, max_age=3600, conditional=True)


def _build_app(server: DepthServer) -> Flask:
    app = Flask(__name__, static_folder=str(_STATIC), static_url_path="/static")
    app.request_class = type("Request", (_Request,), {"uploads_dir": server.store.uploads_dir})
    app.config["MAX_CONTENT_LENGTH"] = server.config.max_upload_bytes + FORM_SLACK_BYTES
    app.config["MAX_FORM_PARTS"] = _MAX_FORM_PARTS
    app.json.sort_keys = False
    app.extensions["depthstream"] = server
    _add_hooks(app, server)
    _add_job_routes(app, server)
    _add_live_routes(app, server)
    return app


def create_app(
    data_dir: str | Path,
    estimator_factory: Callable[[], DepthEstimator] | ModelChoice,
    *,
    max_image_mb: float = 20,
    max_video_mb: float = 500,
    model_tag: str = "",
    live_source: Callable[[], Source] | None = None,
    live_settings: StreamSettings | None = None,
    start: bool = True,
    **limits: Any,
) -> Flask:
    """Build the Flask app; its state is ``app.extensions["depthstream"]`` (a DepthServer).

    Args:
        data_dir: folder for uploads and results (created if missing).
        estimator_factory: builds the :class:`DepthEstimator` of the one model jobs run
            on (``model=`` in ``limits`` names it); called once, on the worker's thread.
            Or a :class:`~stream.web.models.ModelChoice`: several models, each built on
            first use.
        max_image_mb: largest picture upload, in MB (10**6 bytes).
        max_video_mb: largest video upload, in MB.
        model_tag: identifies weights and backend in the cache key.
        live_source: opens the camera or URL for ``/live`` (e.g.
            ``lambda: LiveSource.from_camera(0)``); ``None``: no live page.
        live_settings: smoothing and colours of the live stream.
        start: start the worker now (builds the model).
        **limits: more :class:`ServerConfig` fields (``max_image_mp``, ``token``,
            ``max_data_bytes``, ``keep_s``, ``max_viewers``, ``model``, ``host``,
            ``allow_hosts``...).

    Raises:
        ConfigError: for limits that are not positive.
        StreamError: (``WeightsError``, ...) if the model cannot be built.
    """
    config = ServerConfig(data_dir=Path(data_dir), max_image_bytes=int(max_image_mb * MB),
                          max_video_bytes=int(max_video_mb * MB), model_tag=model_tag,
                          **limits)
    server = DepthServer(config, estimator_factory, live_source, live_settings)
    if start:
        try:
            server.start()
        except BaseException:
            server.close()
            raise
    return server.app
