"""Web: the browser UI and HTTP API (upload jobs, cached results, live MJPEG) around one model.

A Flask app with one background worker thread that owns the depth estimator: uploads
become jobs in a queue, so no two inferences fight for the cores. The page (``/``,
shipped in ``stream/static``, no CDN) uploads a picture or a video, polls the job and
shows the result with download links. Every live viewer shares one pipeline, started by
the first viewer and stopped soon after the last one leaves; live frames and jobs take
turns on the network, frame by frame.

One module per subsystem; which of them start threads or touch files, each says:

* :mod:`.jobs`: job records, limits, and the store that mirrors them to ``meta.json``;
* :mod:`.uploads`: saving an upload, deciding by decoding what it is, size limits;
* :mod:`.worker`: the thread that owns the model and runs the jobs;
* :mod:`.live`: the live pipeline fanned out to MJPEG viewers;
* :mod:`.app`: the Flask routes, the server's state, exceptions to HTTP status codes;
* :mod:`.serve`: :func:`serve`, which builds all of it and listens.

Importing this package starts nothing.
"""

from __future__ import annotations

from .app import STATUS_FOR, DepthServer, create_app, status_for
from .jobs import MB, OUTPUTS, Job, JobKind, JobSettings, JobStatus, JobStore, ServerConfig
from .live import LiveStream, LiveUnavailableError
from .serve import default_data_dir, serve
from .uploads import UploadTooLargeError, detect_kind
from .worker import JobWorker, QueueFullError

__all__ = [
    "MB",
    "OUTPUTS",
    "STATUS_FOR",
    "DepthServer",
    "Job",
    "JobKind",
    "JobSettings",
    "JobStatus",
    "JobStore",
    "JobWorker",
    "LiveStream",
    "LiveUnavailableError",
    "QueueFullError",
    "ServerConfig",
    "UploadTooLargeError",
    "create_app",
    "default_data_dir",
    "detect_kind",
    "serve",
    "status_for",
]
