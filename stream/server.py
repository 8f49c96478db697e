"""Server: the web UI and HTTP API (upload jobs, cached results, live MJPEG) around one model.

A Flask app with one background worker thread that owns the depth estimator: uploads
become jobs in a queue, so no two inferences fight for the cores. The page (``/``,
shipped in ``stream/static``, no CDN) uploads a picture or a video, polls the job and
shows the result with download links.

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
    ``/api/live`` (fps, viewers). Every viewer shares one pipeline, started by the first
    viewer and stopped soon after the last one leaves, so an unwatched camera costs
    nothing. Live frames and jobs take turns on the network (one lock), frame by frame.

Errors are JSON ``{"error": message}``: 400 (not a picture or video, bad settings),
404 (unknown job or file), 413 (too large), 503 (queue full, or the camera does not
open). There is no authentication: it binds 127.0.0.1 unless told otherwise.

Data folder layout: ``<data_dir>/jobs/<id>/{input, meta.json}`` plus, for a picture,
``result.png, side.png, depth16.png, depth16.npy``, for a video ``result.mp4,
depth16.zip`` (16-bit PNG per frame and ``timestamps.csv``); ``<data_dir>/uploads/``
holds uploads in flight. Finished jobs are found again after a restart.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import queue
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid
import zipfile
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np
from flask import Flask, Request, Response, jsonify, request, send_from_directory
from werkzeug.exceptions import HTTPException

from .backends import Backend
from .colormap import COLORMAPS, DisplayRange, minmax
from .errors import ConfigError, SinkError, SourceError, StreamError
from .inference import DepthEstimator
from .pictures import PictureSettings, render_picture
from .pipeline import Layout, Pipeline, RawFormat, StreamSettings, convert
from .records import DepthFrame
from .sinks import Renderer, Sink, SinkContext, write_depth_raw, write_image
from .sources import FileSource, LiveSource, Source, read_image
from .transforms import to_rgb

__all__ = [
    "MB",
    "OUTPUTS",
    "JobStatus",
    "JobKind",
    "JobSettings",
    "Job",
    "ServerConfig",
    "JobStore",
    "JobWorker",
    "LiveStream",
    "DepthServer",
    "UploadError",
    "detect_kind",
    "create_app",
    "default_data_dir",
    "serve",
]

log = logging.getLogger(__name__)

#: One megabyte as the size flags count it (10**6 bytes, as file managers show sizes).
MB = 1_000_000
# Multipart framing and form fields around the file: allowed on top of the file limit.
_FORM_SLACK_BYTES = 1 << 20
_CHUNK_BYTES = 1 << 20
_IN_MEMORY_BYTES = 500 * 1024  # werkzeug's own threshold for spooling an upload to disk
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
_STATIC = Path(__file__).with_name("static")


class JobStatus(Enum):
    """Where a job is: waiting in the queue, on the worker, finished, or failed."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class JobKind(Enum):
    """What an upload decoded as (never decided by its file name)."""

    PICTURE = "picture"
    VIDEO = "video"


#: Output files per kind, in the order the page lists them: (file, label, download suffix).
OUTPUTS: dict[JobKind, tuple[tuple[str, str, str], ...]] = {
    JobKind.PICTURE: (
        ("result.png", "Depth (colour PNG)", "_depth.png"),
        ("side.png", "Side by side (PNG)", "_side.png"),
        ("depth16.png", "Raw depth (16-bit PNG)", "_depth16.png"),
        ("depth16.npy", "Raw depth (float32 .npy)", "_depth.npy"),
    ),
    JobKind.VIDEO: (
        ("result.mp4", "Depth video (MP4)", "_depth.mp4"),
        ("depth16.zip", "Raw depth (16-bit PNG frames, .zip)", "_depth16.zip"),
    ),
}
_RESULT_FILES = frozenset(name for outs in OUTPUTS.values() for name, _, _ in outs)

_TRUE = ("1", "true", "on", "yes")
_FALSE = ("", "0", "false", "off", "no")


class UploadError(StreamError):
    """An upload the server refuses, with the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class JobSettings:
    """How a job renders its result (form fields of ``POST /api/jobs``).

    Attributes:
        cmap: colormap, one of :data:`stream.colormap.COLORMAPS`.
        invert: show near as dark instead of bright.
        layout: videos only: ``depth``, ``side`` (picture beside depth) or ``overlay``.
    """

    cmap: str = "inferno"
    invert: bool = False
    layout: Layout = Layout.DEPTH

    def __post_init__(self) -> None:
        if self.cmap not in COLORMAPS:
            raise ConfigError(f"unknown colormap {self.cmap!r}; choose one of "
                              f"{', '.join(COLORMAPS)}")
        object.__setattr__(self, "layout", _layout(self.layout))

    @classmethod
    def from_form(cls, form: Mapping[str, str]) -> JobSettings:
        """Settings from form fields; missing fields take their defaults.

        Raises:
            ConfigError: an unknown colormap or layout, or ``invert`` that is not a flag.
        """
        invert = str(form.get("invert", "")).strip().lower()
        if invert not in _TRUE + _FALSE:
            raise ConfigError(f"invert must be true or false, got {invert!r}")
        return cls(cmap=str(form.get("cmap") or "inferno").strip().lower(),
                   invert=invert in _TRUE,
                   layout=str(form.get("layout") or "depth").strip().lower())

    def for_kind(self, kind: JobKind) -> JobSettings:
        """Only the settings that change this kind's result (pictures have no layout)."""
        return dataclasses.replace(self, layout=Layout.DEPTH) if kind is JobKind.PICTURE else self

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"cmap": self.cmap, "invert": self.invert, "layout": self.layout.value}


def _layout(value: Layout | str) -> Layout:
    """``value`` as a :class:`Layout`.

    Raises:
        ConfigError: not one of the layouts.
    """
    if isinstance(value, Layout):
        return value
    try:
        return Layout(str(value).strip().lower())
    except ValueError:
        raise ConfigError(f"unknown layout {value!r}; choose one of "
                          f"{', '.join(m.value for m in Layout)}") from None


@dataclass(frozen=True)
class Job:
    """One upload and what became of it; replaced (never mutated) on each change.

    Attributes:
        id: uuid4 hex, the only thing a path is built from.
        kind: picture or video.
        settings: the rendering settings (only those that matter for ``kind``).
        key: cache key: SHA-256 of the bytes, the settings and the model.
        name: display stem of the uploaded file name (never used for paths).
        size_bytes: upload size.
        status: queued, running, done or failed.
        progress: 0..1.
        error: a message the page shows when ``status`` is failed.
        created_s: wall-clock time of the upload (``time.time()``).
        info: facts for the page: width, height, frames, inference_ms, elapsed_ms, lo, hi.
        outputs: files of the finished result in the job's folder.
    """

    id: str
    kind: JobKind
    settings: JobSettings
    key: str
    name: str = "upload"
    size_bytes: int = 0
    status: JobStatus = JobStatus.QUEUED
    progress: float = 0.0
    error: str | None = None
    created_s: float = field(default_factory=time.time)
    info: Mapping[str, Any] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not _JOB_ID.match(self.id):
            raise ValueError(f"job id must be 32 lowercase hex digits, got {self.id!r}")
        if not 0.0 <= self.progress <= 1.0:
            raise ValueError(f"progress must be in [0, 1], got {self.progress}")

    def to_dict(self) -> dict[str, Any]:
        """What ``meta.json`` keeps (enough to serve the job again after a restart)."""
        return {
            "id": self.id, "kind": self.kind.value, "settings": self.settings.to_dict(),
            "key": self.key, "name": self.name, "size_bytes": self.size_bytes,
            "status": self.status.value, "progress": self.progress, "error": self.error,
            "created_s": self.created_s, "info": dict(self.info), "outputs": list(self.outputs),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Job:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: (or ``KeyError``/``TypeError``) for a damaged record.
        """
        return cls(id=d["id"], kind=JobKind(d["kind"]), settings=JobSettings(**d["settings"]),
                   key=d["key"], name=d.get("name", "upload"), size_bytes=d.get("size_bytes", 0),
                   status=JobStatus(d["status"]), progress=float(d.get("progress", 0.0)),
                   error=d.get("error"), created_s=float(d.get("created_s", 0.0)),
                   info=dict(d.get("info", {})), outputs=tuple(d.get("outputs", ())))

    def to_api(self, cached: bool = False) -> dict[str, Any]:
        """The ``GET /api/jobs/<id>`` answer."""
        results = {}
        if self.status is JobStatus.DONE:
            for name, label, suffix in OUTPUTS[self.kind]:
                if name in self.outputs:
                    results[name.replace(".", "_")] = {
                        "url": f"/results/{self.id}/{name}", "label": label,
                        "download": self.name + suffix,
                    }
        return {
            "id": self.id, "status": self.status.value, "progress": round(self.progress, 4),
            "kind": self.kind.value, "name": self.name, "settings": self.settings.to_dict(),
            "error": self.error, "cached": cached, "info": dict(self.info),
            "results": results, "status_url": f"/api/jobs/{self.id}",
        }


@dataclass(frozen=True)
class ServerConfig:
    """Where the server keeps its files and what it accepts.

    Attributes:
        data_dir: folder for jobs (created if missing).
        max_image_bytes: largest picture upload.
        max_video_bytes: largest video upload.
        model_tag: identifies the weights and backend, so a cached result is only
            reused for the same model.
        max_queued: jobs waiting at most; more uploads get 503.
    """

    data_dir: Path
    max_image_bytes: int = 20 * MB
    max_video_bytes: int = 500 * MB
    model_tag: str = ""
    max_queued: int = 64

    def __post_init__(self) -> None:
        if self.max_image_bytes <= 0 or self.max_video_bytes <= 0:
            raise ConfigError("upload limits must be positive")
        if self.max_queued < 1:
            raise ConfigError(f"max_queued must be positive, got {self.max_queued}")

    @property
    def max_upload_bytes(self) -> int:
        """The larger of the two limits: the most any upload may be."""
        return max(self.max_image_bytes, self.max_video_bytes)


def _limit_text(n_bytes: int) -> str:
    return f"{n_bytes / MB:g} MB"


def _display_name(filename: str | None) -> str:
    """A short, harmless stem of the client's file name, for download names only."""
    stem = Path(str(filename or "").replace("\\", "/").rsplit("/", 1)[-1]).stem
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._-")[:60]
    return stem or "upload"


def _write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class JobStore:
    """Jobs in memory, mirrored to ``<data_dir>/jobs/<id>/meta.json``; thread-safe.

    Finished jobs are loaded again at start; jobs a previous run left queued or running
    are marked failed (their upload can simply be sent again).
    """

    def __init__(self, data_dir: str | os.PathLike) -> None:
        self.root = Path(data_dir)
        self.jobs_dir = self.root / "jobs"
        self.uploads_dir = self.root / "uploads"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.uploads_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._by_key: dict[str, str] = {}
        self._load()

    def _load(self) -> None:
        for part in self.uploads_dir.iterdir():  # uploads cut short by a stop
            with contextlib.suppress(OSError):
                part.unlink()
        for meta in sorted(self.jobs_dir.glob("*/meta.json")):
            try:
                job = Job.from_dict(json.loads(meta.read_text(encoding="utf-8")))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("skipping damaged job record %s: %s", meta, exc)
                continue
            if job.id != meta.parent.name:
                continue
            if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
                job = dataclasses.replace(job, status=JobStatus.FAILED,
                                          error="the server stopped before this job finished; "
                                                "upload the file again")
                self._save(job)
            self._jobs[job.id] = job
            if job.status is JobStatus.DONE:
                self._by_key[job.key] = job.id

    def job_dir(self, job_id: str) -> Path:
        """The job's folder; ``job_id`` is checked first.

        Raises:
            KeyError: ``job_id`` is not a job id (so no path is built from it).
        """
        if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
            raise KeyError(job_id)
        return self.jobs_dir / job_id

    def get(self, job_id: str) -> Job | None:
        """The job, or ``None`` for an unknown or malformed id."""
        with self._lock:
            return self._jobs.get(job_id)

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)

    def add_or_get(self, key: str, make: Callable[[], Job]) -> tuple[Job, bool]:
        """The live job with this cache key (``(job, True)``), else ``(make(), False)`` added.

        A failed job does not count: the same upload runs again. Atomic, so two identical
        uploads at once make one job.
        """
        with self._lock:
            found = self._jobs.get(self._by_key.get(key, ""))
            if found is not None and found.status is not JobStatus.FAILED:
                return found, True
            job = make()
            self._jobs[job.id] = job
            self._by_key[key] = job.id
            self._save(job)
            return job, False

    def update(self, job_id: str, **changes: Any) -> Job:
        """Replace fields of a job; status changes are written to ``meta.json``."""
        with self._lock:
            old = self._jobs[job_id]
            job = dataclasses.replace(old, **changes)
            self._jobs[job_id] = job
            if job.status is not old.status or "outputs" in changes:
                self._save(job)
            return job

    def remove(self, job_id: str) -> None:
        """Forget a job that never ran, and delete its folder."""
        with self._lock:
            job = self._jobs.pop(job_id, None)
            if job is not None and self._by_key.get(job.key) == job_id:
                del self._by_key[job.key]
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    def counts(self) -> dict[str, int]:
        """Number of jobs in each status."""
        with self._lock:
            out = {s.value: 0 for s in JobStatus}
            for job in self._jobs.values():
                out[job.status.value] += 1
            return out

    def _save(self, job: Job) -> None:
        folder = self.jobs_dir / job.id
        try:
            folder.mkdir(exist_ok=True)
            _write_json_atomic(folder / "meta.json", job.to_dict())
        except OSError as exc:  # the job still runs; only a restart would forget it
            log.error("cannot write %s/meta.json: %s", folder, exc)


def _probe_video(path: Path) -> dict[str, Any] | None:
    """What the page shows of a video if ``path`` opens as one and its first frame decodes."""
    try:
        with FileSource(path) as source:
            info = source.info
            frames = source.frames()
            try:
                first = next(frames, None)
            finally:
                frames.close()
    except SourceError:
        return None
    if first is None:
        return None
    return {"width": info.width, "height": info.height, "frames": info.frames,
            "fps": round(float(info.rate), 3) if info.rate else None,
            "duration_s": round(info.duration_s, 3) if info.duration_s else None,
            "audio": info.has_audio}


def detect_kind(path: Path, size_bytes: int, config: ServerConfig) -> tuple[JobKind, dict]:
    """Decide by decoding whether an upload is a picture or a video, and check its limit.

    Raises:
        UploadError: 413 over its kind's limit, 400 for anything that decodes as neither.
    """
    if size_bytes <= config.max_image_bytes:
        try:
            bgr = read_image(path)
        except SourceError:
            pass
        else:
            return JobKind.PICTURE, {"width": bgr.shape[1], "height": bgr.shape[0]}
    elif cv2.haveImageReader(str(path)):
        # A signature check only: decoding a huge picture just to refuse it is waste.
        raise UploadError(413, f"pictures may be up to {_limit_text(config.max_image_bytes)}; "
                               f"this one is {_limit_text(size_bytes)}")
    info = _probe_video(path)
    if info is None:
        raise UploadError(400, "this file is neither a picture nor a video that can be decoded")
    if size_bytes > config.max_video_bytes:
        raise UploadError(413, f"videos may be up to {_limit_text(config.max_video_bytes)}; "
                               f"this one is {_limit_text(size_bytes)}")
    return JobKind.VIDEO, info


class _LockedBackend(Backend):
    """A backend whose network runs under a lock: live frames and jobs take turns.

    Pre- and post-processing stay outside the lock; only the network is exclusive, so
    the cores are never split between two inferences.
    """

    def __init__(self, inner: Backend, lock: threading.Lock) -> None:
        self.inner = inner
        self.lock = lock
        self.name = inner.name
        self.device = inner.device

    def infer(self, x: np.ndarray) -> np.ndarray:  # noqa: D102
        with self.lock:
            return self.inner.infer(x)

    def close(self) -> None:  # noqa: D102
        self.inner.close()


class JobWorker:
    """The one thread that owns the estimator and runs jobs, one at a time, in order.

    The estimator is built on the worker thread by ``estimator_factory``; :meth:`start`
    waits for it and re-raises its error. Its network runs under :attr:`model_lock`,
    which the live stream (the only other user of :attr:`estimator`) shares.
    """

    def __init__(self, store: JobStore, estimator_factory: Callable[[], DepthEstimator],
                 max_queued: int = 64) -> None:
        self.store = store
        self.model_lock = threading.Lock()
        self._factory = estimator_factory
        self._queue: queue.Queue[str] = queue.Queue(maxsize=max_queued)
        self._stop = threading.Event()
        # Per video job: the pipeline sets its event on its own failures too, which
        # must end that job, not the worker.
        self._job_stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self.estimator: DepthEstimator | None = None
        self.jobs_run = 0

    def start(self, timeout_s: float = 300.0) -> JobWorker:
        """Start the thread and wait until the model is built.

        Raises:
            StreamError: (e.g. ``WeightsError``, ``ConfigError``) if building it failed.
        """
        self._thread = threading.Thread(target=self._run, name="depthstream-jobs", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            self.stop()
            raise StreamError(f"the model was not ready after {timeout_s:g} s")
        if self._error is not None:
            self.join()
            raise self._error
        return self

    def submit(self, job_id: str) -> None:
        """Queue a job.

        Raises:
            UploadError: 503 when the queue is full.
        """
        try:
            self._queue.put_nowait(job_id)
        except queue.Full:
            raise UploadError(503, "the server is busy; try again in a minute") from None

    @property
    def queued(self) -> int:
        """Jobs waiting (not counting the running one)."""
        return self._queue.qsize()

    def stop(self) -> None:
        """Ask the thread to end; a running video job stops early (and fails)."""
        self._stop.set()
        self._job_stop.set()

    def join(self, timeout_s: float | None = 10.0) -> None:
        """Wait for the thread to end."""
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def close(self) -> None:
        """Stop and join (safe to call twice)."""
        self.stop()
        self.join()

    def __enter__(self) -> JobWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        try:
            built = self._factory()
            self.estimator = DepthEstimator(_LockedBackend(built.backend, self.model_lock))
        except BaseException as exc:  # noqa: BLE001 - handed to start(), which re-raises
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            while not self._stop.is_set():
                try:
                    job_id = self._queue.get(timeout=0.1)
                except queue.Empty:
                    continue
                self._run_job(job_id)
        finally:
            self.estimator.close()

    def _run_job(self, job_id: str) -> None:
        job = self.store.get(job_id)
        if job is None:
            return
        start = time.perf_counter()
        self.store.update(job_id, status=JobStatus.RUNNING, progress=0.0)
        try:
            if job.kind is JobKind.PICTURE:
                info, outputs = self._run_picture(job)
            else:
                info, outputs = self._run_video(job)
        except StreamError as exc:
            self.store.update(job_id, status=JobStatus.FAILED, error=str(exc))
        except Exception as exc:  # a bug must not kill the worker; the page says what
            log.exception("job %s failed", job_id)
            self.store.update(job_id, status=JobStatus.FAILED,
                              error=f"internal error ({type(exc).__name__}: {exc})")
        else:
            info = {**job.info, **info,
                    "elapsed_ms": round((time.perf_counter() - start) * 1000.0, 1)}
            self.store.update(job_id, status=JobStatus.DONE, progress=1.0, info=info,
                              outputs=tuple(outputs))
        finally:
            self.jobs_run += 1

    def _progress(self, job_id: str, value: float) -> None:
        self.store.update(job_id, progress=min(1.0, max(0.0, float(value))))

    def _run_picture(self, job: Job) -> tuple[dict, list[str]]:
        folder = self.store.job_dir(job.id)
        bgr = read_image(folder / "input")
        self._progress(job.id, 0.1)
        depth, ms = self.estimator.predict(to_rgb(bgr, "bgr"))
        self._progress(job.id, 0.8)
        lo, hi = minmax(depth)
        settings = PictureSettings(cmap=job.settings.cmap, invert=job.settings.invert)
        write_image(folder / "result.png", render_picture(bgr, depth, settings))
        write_image(folder / "side.png",
                    render_picture(bgr, depth, dataclasses.replace(settings, side=True)))
        write_depth_raw(folder / "depth16", depth, lo, hi, npy=True)
        info = {"width": bgr.shape[1], "height": bgr.shape[0], "inference_ms": round(ms, 1),
                "lo": lo, "hi": hi}
        return info, ["result.png", "side.png", "depth16.png", "depth16.npy"]

    def _run_video(self, job: Job) -> tuple[dict, list[str]]:
        folder = self.store.job_dir(job.id)
        raw = folder / "depth16"
        shutil.rmtree(raw, ignore_errors=True)  # what an interrupted run left
        expected = job.info.get("frames") or round((job.info.get("duration_s") or 0)
                                                   * (job.info.get("fps") or 0))

        def progress(done: int, total: int | None) -> None:
            total = total or expected
            if total:  # the last few percent are the encoder's flush and the zip
                self._progress(job.id, 0.97 * min(done / total, 1.0))

        self._job_stop = threading.Event()
        if self._stop.is_set():
            self._job_stop.set()
        settings = StreamSettings(layout=job.settings.layout, cmap=job.settings.cmap,
                                  invert=job.settings.invert, raw_dir=raw,
                                  raw_format=RawFormat.PNG, overwrite=True)
        stats = convert(folder / "input", folder / "result.mp4", settings,
                        estimator=self.estimator, progress=progress, stop_event=self._job_stop)
        if stats.interrupted:
            raise StreamError("the server stopped before this video was finished; "
                              "upload it again")
        if stats.frames_written == 0:
            raise SourceError("no frame of this video could be decoded")
        _zip_folder(raw, folder / "depth16.zip")
        shutil.rmtree(raw, ignore_errors=True)
        info = {"frames": stats.frames_written, "inference_ms": round(stats.inference_ms_mean, 1),
                "fps_processed": round(stats.fps, 2)}
        if stats.warnings:
            info["warnings"] = list(stats.warnings)
        return info, ["result.mp4", "depth16.zip"]


def _zip_folder(folder: Path, target: Path) -> None:
    """Store every file of ``folder`` in a zip (PNGs are compressed already), atomically."""
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".part", dir=target.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
            for path in sorted(folder.iterdir()):
                zf.write(path, path.name)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class _HubSink(Sink):
    """Hands each DepthFrame of the live pipeline to the :class:`LiveStream` (render thread)."""

    def __init__(self, hub: LiveStream, generation: int) -> None:
        self.hub = hub
        self.generation = generation

    def open(self, context: SinkContext) -> None:  # noqa: D102
        self.context = context

    def write(self, frame: DepthFrame) -> None:  # noqa: D102
        self.hub._on_frame(frame, self.generation, self.context.dropped())

    def close(self) -> None:  # noqa: D102
        self.hub._on_end(self.generation)


class LiveStream:
    """One live pipeline shared by every viewer of ``/live/stream.mjpg``.

    The first viewer opens the source and starts the pipeline; after the last one
    leaves it runs ``idle_s`` longer (a page reload keeps it) and stops, so an unwatched
    camera costs nothing. Each frame is JPEG-encoded at most once per layout, however
    many viewers watch it; a slow viewer skips frames instead of holding others back.

    Args:
        open_source: opens the camera or URL (a :class:`stream.sources.LiveSource`).
        estimator: gives the (shared, locked) estimator when a pipeline starts.
        settings: smoothing and colours of the live pipeline.
        idle_s: how long the pipeline outlives its last viewer.
        jpeg_quality: JPEG quality of the stream, 1..100.
        frame_timeout_s: a viewer's stream ends when no frame came for this long.
    """

    BOUNDARY = "depthframe"

    def __init__(self, open_source: Callable[[], Source],
                 estimator: Callable[[], DepthEstimator],
                 settings: StreamSettings | None = None, idle_s: float = 3.0,
                 jpeg_quality: int = 80, frame_timeout_s: float = 15.0) -> None:
        self._open_source = open_source
        self._estimator = estimator
        self.settings = settings or StreamSettings()
        self.idle_s = idle_s
        self.jpeg_quality = int(jpeg_quality)
        self.frame_timeout_s = frame_timeout_s
        self._lock = threading.RLock()  # pipeline start/stop and viewer count
        self._cond = threading.Condition()  # new frames
        self._pipeline: Pipeline | None = None
        self._generation = 0
        self._running = False
        self._viewers = 0
        self._idle_timer: threading.Timer | None = None
        self._closed = False
        self._latest: DepthFrame | None = None
        self._seq = 0
        self._arrivals: deque[float] = deque(maxlen=60)
        self._dropped = 0
        self._jpegs: dict[Layout, tuple[int, bytes]] = {}
        self._encode_lock = threading.Lock()
        self.error: str | None = None
        self.pipelines_started = 0
        self.size_wh: tuple[int, int] | None = None

    # -- viewers ---------------------------------------------------------------

    def viewer(self, layout: Layout | str = Layout.DEPTH) -> _Viewer:
        """A new viewer's MJPEG body (an iterable of parts; closing it lets go).

        Raises:
            SourceError: the camera or URL cannot be opened.
            StreamError: the server is stopping.
        """
        layout = _layout(layout)
        self._acquire()
        return _Viewer(self, layout)

    def _acquire(self) -> None:
        with self._lock:
            if self._closed:
                raise StreamError("the server is stopping")
            if self._idle_timer is not None:
                self._idle_timer.cancel()
                self._idle_timer = None
            if not self._running:
                self._start_pipeline()
            self._viewers += 1

    def _release(self) -> None:
        with self._lock:
            self._viewers -= 1
            if self._viewers == 0 and not self._closed:
                timer = threading.Timer(self.idle_s, self._stop_if_idle)
                timer.daemon = True
                self._idle_timer = timer
                timer.start()

    def _stop_if_idle(self) -> None:
        with self._lock:
            if self._viewers == 0:
                self._stop_pipeline()

    def next_part(self, layout: Layout, last_seq: int) -> tuple[int, bytes] | None:
        """The next frame after ``last_seq`` as an MJPEG part, or ``None`` at the end."""
        deadline = time.monotonic() + self.frame_timeout_s
        with self._cond:
            while True:
                if self._closed or not self._running:
                    return None
                if self._seq != last_seq and self._latest is not None:
                    seq, frame = self._seq, self._latest
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(min(remaining, 0.5))
        jpeg = self._jpeg(layout, seq, frame)
        head = (f"--{self.BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                f"Content-Length: {len(jpeg)}\r\n\r\n").encode()
        return seq, head + jpeg + b"\r\n"

    def _jpeg(self, layout: Layout, seq: int, frame: DepthFrame) -> bytes:
        with self._encode_lock:
            cached = self._jpegs.get(layout)
            if cached is not None and cached[0] == seq:
                return cached[1]
            image = Renderer(layout, cmap=self.settings.cmap,
                             invert=self.settings.invert).render(frame)
            ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
            if not ok:
                raise StreamError("cannot encode a live frame as JPEG")
            self._jpegs[layout] = (seq, data.tobytes())
            return self._jpegs[layout][1]

    # -- pipeline --------------------------------------------------------------

    def _start_pipeline(self) -> None:
        self._stop_pipeline()  # join what ended by itself (a stream that stopped)
        try:
            source = self._open_source()
        except StreamError as exc:  # goes to the viewer (503) and to the status
            self.error = str(exc)
            raise
        self._generation += 1
        try:
            pipeline = Pipeline(source, self._estimator(), [_HubSink(self, self._generation)],
                                self.settings, colour_range=DisplayRange())
        except BaseException:
            source.close()
            raise
        with self._cond:
            self._latest, self._seq = None, self._seq + 1
            self._arrivals.clear()
            self._running = True
        self.error = None
        self.size_wh = source.info.size_wh
        self._pipeline = pipeline.start()
        self.pipelines_started += 1

    def _stop_pipeline(self) -> None:
        pipeline, self._pipeline = self._pipeline, None
        with self._cond:
            self._running = False
            self._generation += 1  # what the stopped pipeline still sends is ignored
            self._cond.notify_all()
        if pipeline is None:
            return
        pipeline.stop()
        try:
            pipeline.join(10.0)
        except StreamError as exc:
            self.error = str(exc)
            log.warning("live stream stopped: %s", exc)

    def _on_frame(self, frame: DepthFrame, generation: int, dropped: int) -> None:
        with self._cond:
            if generation != self._generation:
                return
            self._latest = frame
            self._seq += 1
            self._dropped = dropped
            self._arrivals.append(time.monotonic())
            self._cond.notify_all()

    def _on_end(self, generation: int) -> None:
        with self._cond:
            if generation == self._generation:
                self._running = False
                if self.error is None:
                    self.error = "the live source stopped sending frames"
                self._cond.notify_all()

    # -- status ----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """``running``, ``viewers``, ``fps`` (last 2 s), ``inference_ms``, ``error``..."""
        now = time.monotonic()
        with self._cond:
            recent = [t for t in self._arrivals if now - t <= 2.0]
            fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 2 else 0.0
            frame = self._latest
            running = self._running
            dropped = self._dropped
        return {
            "running": running, "viewers": self._viewers, "fps": round(fps, 2),
            "inference_ms": round(frame.inference_ms, 1) if frame is not None else None,
            "latency_ms": round((now - frame.captured) * 1000.0, 1)
            if frame is not None and running else None,
            "size_wh": list(self.size_wh) if self.size_wh else None,
            "dropped": dropped, "error": None if running else self.error,
        }

    def close(self) -> None:
        """Stop the pipeline and end every viewer's stream (safe to call twice)."""
        with self._lock:
            self._closed = True
            if self._idle_timer is not None:
                self._idle_timer.cancel()
            self._stop_pipeline()


class _Viewer:
    """One viewer's MJPEG body: iterates parts; ``close()`` (werkzeug calls it) lets go.

    A class, not a generator: a generator that never started would not run its
    ``finally`` when closed, and the viewer count would leak.
    """

    def __init__(self, hub: LiveStream, layout: Layout) -> None:
        self.hub = hub
        self.layout = layout
        self._seq = -1
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._closed:
            raise StopIteration
        part = self.hub.next_part(self.layout, self._seq)
        if part is None:
            self.close()
            raise StopIteration
        self._seq = part[0]
        return part[1]

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.hub._release()


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
            UploadError: 400, 413 or 503 with a message for the page.
        """
        try:
            settings = JobSettings.from_form(form)
        except ConfigError as exc:
            raise UploadError(400, str(exc)) from None
        tmp = self.store.uploads_dir / uuid.uuid4().hex
        try:
            digest, size = self._save_upload(upload, tmp)
            if size == 0:
                raise UploadError(400, "the file is empty")
            kind, info = detect_kind(tmp, size, self.config)
            settings = settings.for_kind(kind)
            key = hashlib.sha256(json.dumps(
                [digest, kind.value, settings.to_dict(), self.config.model_tag],
                sort_keys=True).encode()).hexdigest()
            name = _display_name(getattr(upload, "filename", None))

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
            except UploadError:
                self.store.remove(job.id)
                raise
        return job, cached

    def _save_upload(self, upload: Any, dest: Path) -> tuple[str, int]:
        h = hashlib.sha256()
        size = 0
        with open(dest, "wb") as f:
            while chunk := upload.stream.read(_CHUNK_BYTES):
                size += len(chunk)
                if size > self.config.max_upload_bytes:
                    raise UploadError(413, self._too_large_message())
                h.update(chunk)
                f.write(chunk)
        return h.hexdigest(), size

    def _too_large_message(self) -> str:
        return (f"the file is too large: pictures may be up to "
                f"{_limit_text(self.config.max_image_bytes)}, videos up to "
                f"{_limit_text(self.config.max_video_bytes)}")

    def info(self) -> dict[str, Any]:
        """What the page needs to know: limits, choices, whether live is on."""
        return {
            "max_image_bytes": self.config.max_image_bytes,
            "max_video_bytes": self.config.max_video_bytes,
            "cmaps": list(COLORMAPS), "layouts": [m.value for m in Layout],
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


def _build_app(server: DepthServer) -> Flask:
    app = Flask(__name__, static_folder=str(_STATIC), static_url_path="/static")
    app.request_class = type("Request", (_Request,), {"uploads_dir": server.store.uploads_dir})
    app.config["MAX_CONTENT_LENGTH"] = server.config.max_upload_bytes + _FORM_SLACK_BYTES
    app.json.sort_keys = False
    app.extensions["depthstream"] = server

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
            return _error(413, server._too_large_message())
        return _error(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(UploadError)
    def _upload_error(exc: UploadError) -> Response:
        return _error(exc.status, str(exc))

    @app.errorhandler(Exception)
    def _internal_error(exc: Exception) -> Response:  # a bug or a full disk: JSON too
        log.exception("request %s %s failed", request.method, request.path)
        return _error(500, f"internal error ({type(exc).__name__}); see the server's log")

    @app.get("/")
    def index() -> Response:
        return send_from_directory(_STATIC, "index.html", max_age=0)

    @app.get("/live")
    def live_page() -> Response:
        if server.live is None:
            return _error(404, "no live source: start the server with --camera N or --url URL")
        return send_from_directory(_STATIC, "live.html", max_age=0)

    @app.get("/live/stream.mjpg")
    def live_stream() -> Response:
        if server.live is None:
            return _error(404, "no live source: start the server with --camera N or --url URL")
        try:
            body = server.live.viewer(request.args.get("layout", "depth"))
        except ConfigError as exc:
            return _error(400, str(exc))
        except StreamError as exc:  # the camera or URL does not open
            return _error(503, str(exc))
        resp = Response(body, direct_passthrough=True,
                        content_type=f"multipart/x-mixed-replace; boundary={LiveStream.BOUNDARY}")
        resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.get("/api/live")
    def live_status() -> Response:
        if server.live is None:
            return _error(404, "no live source: start the server with --camera N or --url URL")
        return jsonify(server.live.status())

    @app.get("/api/info")
    def api_info() -> Response:
        return jsonify(server.info())

    @app.post("/api/jobs")
    def create_job() -> tuple[Response, int]:
        upload = request.files.get("file")
        if upload is None:
            return _error(400, "send the file in the multipart form field 'file'"), 400
        job, cached = server.accept_upload(upload, request.form)
        body = job.to_api(cached=cached)
        status = 200 if job.status is JobStatus.DONE else 202
        return jsonify(body), status

    @app.get("/api/jobs/<job_id>")
    def get_job(job_id: str) -> Response:
        job = server.store.get(job_id) if _JOB_ID.match(job_id) else None
        if job is None:
            return _error(404, f"no job {job_id!r}")
        return jsonify(job.to_api())

    @app.get("/results/<job_id>/<name>")
    def result_file(job_id: str, name: str) -> Response:
        job = server.store.get(job_id) if _JOB_ID.match(job_id) else None
        if (job is None or job.status is not JobStatus.DONE or name not in _RESULT_FILES
                or name not in job.outputs):
            return _error(404, "no such result")
        download = request.args.get("download") is not None
        suffix = next((s for n, _, s in OUTPUTS[job.kind] if n == name), "")
        return send_from_directory(server.store.job_dir(job.id), name,
                                   as_attachment=download, download_name=job.name + suffix,
                                   max_age=3600, conditional=True)

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


def default_data_dir() -> Path:
    """``$XDG_CACHE_HOME/depthstream/server`` (``~/.cache/depthstream/server``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "depthstream" / "server"


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    data_dir: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    backend: str = "auto",
    device: str = "cpu",
    camera: int | None = None,
    url: str | None = None,
    max_image_mb: float = 20,
    max_video_mb: float = 500,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Run the web UI until interrupted (Ctrl-C raises ``KeyboardInterrupt`` after cleanup).

    Args:
        host: address to bind; 127.0.0.1 keeps it on this machine (there is no
            authentication), 0.0.0.0 opens it to the network.
        port: TCP port; 0 picks a free one (the URL printed says which).
        data_dir: folder for uploads and results (default :func:`default_data_dir`).
        weights: checkpoint path (default: ``$DEPTHSTREAM_WEIGHTS``, cache, download).
        backend: ``auto``, ``openvino`` or ``torch``.
        device: ``cpu`` or ``cuda``.
        camera: camera index for ``/live``.
        url: stream URL for ``/live`` (instead of ``camera``).
        max_image_mb: largest picture upload, in MB.
        max_video_mb: largest video upload, in MB.
        ready: called with the server's base URL once it listens (default: print it).

    Raises:
        WeightsError: missing or wrong weights (before anything listens).
        ConfigError: bad limits, backend or device, or both camera and url.
        SourceError: the camera or URL gives no frames.
        SinkError: the address cannot be listened on (port in use, no such address).
    """
    from werkzeug.serving import make_server

    from .backends import create_backend
    from .weights import load_state_dict, state_dict_digest

    if camera is not None and url is not None:
        raise ConfigError("give --camera or --url, not both")
    live_source: Callable[[], Source] | None = None
    if camera is not None:
        live_source = functools.partial(LiveSource.from_camera, int(camera))
    elif url is not None:
        live_source = functools.partial(LiveSource.from_url, str(url))
    if live_source is not None:
        live_source().close()  # a camera that is not there is a usage error, found now
    state = load_state_dict(weights)  # fail fast, in the caller's thread, before binding
    tag = f"{state_dict_digest(state)}-{backend}-{device}"

    def factory() -> DepthEstimator:
        return DepthEstimator(create_backend(backend, state, device=device))

    app = create_app(data_dir if data_dir is not None else default_data_dir(), factory,
                     max_image_mb=max_image_mb, max_video_mb=max_video_mb, model_tag=tag,
                     live_source=live_source)
    server: DepthServer = app.extensions["depthstream"]
    try:
        if port:  # werkzeug would print its own advice and exit: check first, say it once
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((host, port))
        httpd = make_server(host, port, app, threaded=True)
    except (OSError, SystemExit) as exc:  # werkzeug prints and exits on a port in use
        server.close()
        reason = exc.strerror if isinstance(exc, OSError) else "the port is in use"
        raise SinkError(f"cannot listen on {host}:{port}: {reason}") from None
    # One line per request (the page polls several times a second) would bury the
    # warnings; failed jobs and live errors still show.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    shown = f"[{host}]" if ":" in host else host
    base = f"http://{shown}:{httpd.server_port}"
    if ready is None:
        live = f", live view at {base}/live" if live_source is not None else ""
        print(f"depthstream: serving on {base}/{live} (no authentication; Ctrl-C stops)",
              flush=True)
    else:
        ready(base)
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()
        server.close()
