"""App: the web server's Flask routes, its state (:class:`DepthServer`) and its JSON errors.

Starts no threads of its own: :meth:`DepthServer.start` starts the job worker
(:mod:`stream.web.worker`), and the first live viewer starts the live pipeline
(:mod:`stream.web.live`). Touches files: uploads are spooled and saved in the data
folder, moved into their job's folder, and results are served from there.

API:
    ``POST /api/jobs`` (multipart: the file in ``file``; ``cmap``, ``invert``,
    ``layout`` as form fields) -> ``202 {"id", "status_url", ...}``; an identical
    upload (SHA-256 of the bytes plus the settings and the model) answers at once with
    the earlier job and ``"cached": true``.

    ``GET /api/jobs/<id>`` -> ``{"id", "status", "progress", "kind", "results",
    "error", ...}`` with ``status`` one of ``queued``, ``running``, ``done``, ``failed``.

    ``GET /results/<id>/<file>``: a finished job's outputs, served only from the data
    folder, by job id (a uuid4 hex checked before any path is built).

    ``GET /live`` (with a camera or URL): a page showing ``/live/stream.mjpg``
    (``?layout=depth|side|overlay``), an MJPEG stream of the depth view, and
    ``/api/live`` (fps, viewers).

Errors are JSON ``{"error": message, "status": code}``. Exceptions become status codes
here and only here (:data:`STATUS_FOR`): 400 (not a picture or video, bad settings),
404 (unknown job or file), 413 (too large), 503 (queue full, or the camera does not
open), 500 for anything else. There is no authentication: :func:`stream.web.serve`
binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from flask import Flask, Request, Response, jsonify, request, send_from_directory
from werkzeug.exceptions import HTTPException

from ..errors import ConfigError, SourceError, StreamError
from ..inference import DepthEstimator
from ..settings import COLORMAP_NAMES, Layout, StreamSettings, choices
from ..sources import Source
from .jobs import MB, Job, JobSettings, JobStatus, JobStore, ServerConfig
from .live import LiveStream, LiveUnavailableError
from .uploads import (
    UploadTooLargeError,
    cache_key,
    detect_kind,
    display_name,
    save_upload,
    too_large_message,
)
from .worker import JobWorker, QueueFullError

__all__ = ["STATUS_FOR", "DepthServer", "create_app", "status_for"]

log = logging.getLogger(__name__)

# Multipart framing and form fields around the file: allowed on top of the file limit.
_FORM_SLACK_BYTES = 1 << 20
_IN_MEMORY_BYTES = 500 * 1024  # werkzeug's own threshold for spooling an upload to disk
_STATIC = Path(__file__).parents[1] / "static"
_NO_LIVE = "no live source: start the server with --camera N or --url URL"

#: The one table from exceptions to HTTP status codes; the first matching type wins.
STATUS_FOR: tuple[tuple[type[Exception], int], ...] = (
    (UploadTooLargeError, 413),
    (QueueFullError, 503),
    (LiveUnavailableError, 503),
    (ConfigError, 400),
    (SourceError, 400),
)


def status_for(exc: BaseException) -> int:
    """The HTTP status an exception answers: from :data:`STATUS_FOR`, else 500."""
    return next((status for kind, status in STATUS_FOR if isinstance(exc, kind)), 500)


class DepthServer:
    """The app's state: configuration, job store, worker, and the live stream when given.

    ``create_app`` builds one and keeps it in ``app.extensions["depthstream"]``;
    :meth:`close` stops the live stream and the worker.

    Args:
        config: data folder and limits.
        estimator_factory: builds the estimator, once, on the worker thread.
        live_source: opens the camera or URL for ``/live``; ``None``: no live page.
        live_settings: smoothing, colours of the live stream.
    """

    def __init__(self, config: ServerConfig, estimator_factory: Callable[[], DepthEstimator],
                 live_source: Callable[[], Source] | None = None,
                 live_settings: StreamSettings | None = None) -> None:
        self.config = config
        self.store = JobStore(config.data_dir)
        self.worker = JobWorker(self.store, estimator_factory, config.max_queued)
        self.live = (LiveStream(live_source, self._live_estimator, live_settings)
                     if live_source is not None else None)
        self.app = _build_app(self)

    def _live_estimator(self) -> DepthEstimator:
        if self.worker.estimator is None:
            raise StreamError("the model is not loaded yet")
        return self.worker.estimator

    def start(self) -> DepthServer:
        """Start the worker (builds the model); returns self."""
        self.worker.start()
        return self

    def close(self) -> None:
        """Stop the live stream and the worker (safe to call twice)."""
        if self.live is not None:
            self.live.close()
        self.worker.close()

    def __enter__(self) -> DepthServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def accept_upload(self, upload: Any, form: Mapping[str, str]) -> tuple[Job, bool]:
        """Store an upload, decide its kind by decoding, and queue it unless cached.

        Returns:
            ``(job, cached)``.

        Raises:
            ConfigError: bad settings in the form.
            SourceError: an empty file, or one that is neither a picture nor a video.
            UploadTooLargeError: over its kind's limit.
            QueueFullError: too many jobs waiting (the job is forgotten again).
        """
        settings = JobSettings.from_form(form)
        tmp = self.store.uploads_dir / uuid.uuid4().hex
        try:
            digest, size = self._save_upload(upload, tmp)
            kind, info = detect_kind(tmp, size, self.config)
            settings = settings.for_kind(kind)
            key = cache_key(digest, kind, settings, self.config.model_tag)
            name = display_name(getattr(upload, "filename", None))

            def make() -> Job:
                job_id = uuid.uuid4().hex
                folder = self.store.job_dir(job_id)
                folder.mkdir()
                os.replace(tmp, folder / "input")
                return Job(id=job_id, kind=kind, settings=settings, key=key, name=name,
                           size_bytes=size, info=info)

            job, cached = self.store.add_or_get(key, make)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        if not cached:
            try:
                self.worker.submit(job.id)
            except QueueFullError:
                self.store.remove(job.id)
                raise
        return job, cached

    def _save_upload(self, upload: Any, dest: Path) -> tuple[str, int]:
        return save_upload(upload.stream, dest, self.config)

    def info(self) -> dict[str, Any]:
        """What the page needs to know: limits, choices, whether live is on."""
        return {
            "max_image_bytes": self.config.max_image_bytes,
            "max_video_bytes": self.config.max_video_bytes,
            "cmaps": list(COLORMAP_NAMES), "layouts": list(choices(Layout)),
            "live": self.live is not None, "video": True,
            "jobs": self.store.counts(), "queued": self.worker.queued,
        }


def _error(status: int, message: str) -> Response:
    resp = jsonify(error=message, status=status)
    resp.status_code = status
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


def _add_error_handlers(app: Flask, server: DepthServer) -> None:
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
        return _error(exc.code or 500, exc.description or exc.name)

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


def _add_job_routes(app: Flask, server: DepthServer) -> None:
    @app.get("/")
    def index() -> Response:
        return send_from_directory(_STATIC, "index.html", max_age=0)

    @app.get("/api/info")
    def api_info() -> Response:
        return jsonify(server.info())

    @app.post("/api/jobs")
    def create_job() -> tuple[Response, int]:
        upload = request.files.get("file")
        if upload is None:
            return _error(400, "send the file in the multipart form field 'file'"), 400
        job, cached = server.accept_upload(upload, request.form)
        status = 200 if job.status is JobStatus.DONE else 202
        return jsonify(job.to_api(cached=cached)), status

    @app.get("/api/jobs/<job_id>")
    def get_job(job_id: str) -> Response:
        job = server.store.get(job_id)
        if job is None:
            return _error(404, f"no job {job_id!r}")
        return jsonify(job.to_api())

    @app.get("/results/<job_id>/<name>")
    def result_file(job_id: str, name: str) -> Response:
        job = server.store.get(job_id)
        download_name = job.download_name(name) if job is not None else None
        if download_name is None:
            return _error(404, "no such result")
        return send_from_directory(server.store.job_dir(job.id), name,
                                   as_attachment=request.args.get("download") is not None,
                                   download_name=download_name, max_age=3600, conditional=True)


def _build_app(server: DepthServer) -> Flask:
    app = Flask(__name__, static_folder=str(_STATIC), static_url_path="/static")
    app.request_class = type("Request", (_Request,), {"uploads_dir": server.store.uploads_dir})
    app.config["MAX_CONTENT_LENGTH"] = server.config.max_upload_bytes + _FORM_SLACK_BYTES
    app.json.sort_keys = False
    app.extensions["depthstream"] = server
    _add_error_handlers(app, server)
    _add_job_routes(app, server)
    _add_live_routes(app, server)
    return app


def create_app(
    data_dir: str | os.PathLike,
    estimator_factory: Callable[[], DepthEstimator],
    *,
    max_image_mb: float = 20,
    max_video_mb: float = 500,
    model_tag: str = "",
    live_source: Callable[[], Source] | None = None,
    live_settings: StreamSettings | None = None,
    start: bool = True,
) -> Flask:
    """Build the Flask app; its state is ``app.extensions["depthstream"]`` (a DepthServer).

    Args:
        data_dir: folder for uploads and results (created if missing).
        estimator_factory: builds the :class:`DepthEstimator`; called once, on the
            worker thread.
        max_image_mb: largest picture upload, in MB (10**6 bytes).
        max_video_mb: largest video upload, in MB.
        model_tag: identifies weights and backend in the cache key.
        live_source: opens the camera or URL for ``/live`` (e.g.
            ``lambda: LiveSource.from_camera(0)``); ``None``: no live page.
        live_settings: smoothing and colours of the live stream.
        start: start the worker now (builds the model).

    Raises:
        ConfigError: for limits that are not positive.
        StreamError: (``WeightsError``, ...) if the model cannot be built.
    """
    config = ServerConfig(data_dir=Path(data_dir), max_image_bytes=int(max_image_mb * MB),
                          max_video_bytes=int(max_video_mb * MB), model_tag=model_tag)
    server = DepthServer(config, estimator_factory, live_source, live_settings)
    if start:
        server.start()
    return server.app
