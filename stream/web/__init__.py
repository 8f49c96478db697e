"""Web: the browser UI and HTTP API (upload jobs, cached results, live MJPEG) around the models.

A Flask app served by waitress. Two worker threads share the depth estimators (one per
model a job asked for, the server's default built at start): pictures and videos wait in
separate lanes, so a picture never waits behind a long video, and the network takes one
frame at a time from each (and from the live view). The page
(``/``, shipped in ``stream/static``, no CDN) uploads a picture or a video, shows its
place in the queue, polls the job, can cancel it, and shows the result with download
links. Every live viewer shares one pipeline, started by the first viewer and stopped
soon after the last one leaves.

Made to face a network: only the Host names it was started for (no DNS rebinding), no
changes from another site's pages, a token on every route, every limit read from the
upload's header before anything is decoded (and checked again on every decoded frame),
uploads in flight and live viewers capped, slow clients cut off, write timeouts, a data
folder kept under its budget, and a clean stop on SIGTERM.

One module per subsystem; which of them start threads or touch files, each says:

* :mod:`.config`: the one settings record (limits, retention, token, Host names);
* :mod:`.auth`: the Host names and Origins it answers to; the token, from a header or a
  cookie, compared in constant time;
* :mod:`.models`: the models a job may ask for, each built on first use and shared;
* :mod:`.jobs`: job records and the store that mirrors them to ``meta.json``;
* :mod:`.uploads`: saving an upload, its header's limits, deciding what it is;
* :mod:`.worker`: the lanes that own the model and run the jobs, cancel;
* :mod:`.retention`: which finished jobs go when over the budget;
* :mod:`.live`: the live pipeline fanned out to MJPEG viewers;
* :mod:`.app`: the Flask routes, the server's state, exceptions to HTTP status codes;
* :mod:`.httpd`: waitress with timeouts for slow clients, early refusals, bodies buffered
  in the data folder, and a clean stop;
* :mod:`.serve`: :func:`serve`, which builds all of it and listens.

Importing this package starts nothing.
"""

from __future__ import annotations

from stream.web.app import STATUS_FOR, DepthServer, create_app, status_for
from stream.web.config import MB, ServerConfig, parse_size_wh
from stream.web.httpd import HttpServer
from stream.web.jobs import OUTPUTS, Job, JobKind, JobSettings, JobStatus, JobStore
from stream.web.live import LiveBusyError, LiveStream, LiveUnavailableError
from stream.web.models import ModelChoice, ModelUnavailableError
from stream.web.serve import default_data_dir, serve
from stream.web.uploads import UploadBusyError, UploadTooLargeError, detect_kind
from stream.web.worker import JobWorker, QueueFullError

__all__ = [
    "MB",
    "OUTPUTS",
    "STATUS_FOR",
    "DepthServer",
    "HttpServer",
    "Job",
    "JobKind",
    "JobSettings",
    "JobStatus",
    "JobStore",
    "JobWorker",
    "LiveBusyError",
    "LiveStream",
    "LiveUnavailableError",
    "ModelChoice",
    "ModelUnavailableError",
    "QueueFullError",
    "ServerConfig",
    "UploadBusyError",
    "UploadTooLargeError",
    "create_app",
    "default_data_dir",
    "detect_kind",
    "parse_size_wh",
    "serve",
    "status_for",
]
