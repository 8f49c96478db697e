"""Jobs: the web server's records (settings, job, limits) and the store that keeps them.

Touches files: :class:`JobStore` creates ``<data_dir>/jobs`` and ``<data_dir>/uploads``,
writes each job's ``meta.json`` (atomically, through :mod:`stream.files`), empties the
uploads folder and reads the records back at start. Starts no threads; the store is
safe to use from several.

Data folder layout: ``<data_dir>/jobs/<id>/{input, meta.json}`` plus the outputs listed
in :data:`OUTPUTS`; ``<data_dir>/uploads/`` holds uploads in flight.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..files import write_json_atomic
from ..settings import Layout, RenderSettings

__all__ = [
    "MB",
    "OUTPUTS",
    "JobStatus",
    "JobKind",
    "JobSettings",
    "Job",
    "ServerConfig",
    "JobStore",
    "is_job_id",
]

log = logging.getLogger(__name__)

#: One megabyte as the size flags count it (10**6 bytes, as file managers show sizes).
MB = 1_000_000
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
_TRUE = ("1", "true", "on", "yes")
_FALSE = ("", "0", "false", "off", "no")


def is_job_id(value: object) -> bool:
    """Whether ``value`` is a job id (uuid4 hex): the only thing a path is built from."""
    return isinstance(value, str) and _JOB_ID.match(value) is not None


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


@dataclass(frozen=True)
class JobSettings:
    """How a job renders its result (form fields of ``POST /api/jobs``).

    Attributes:
        cmap: colormap, one of :data:`stream.settings.COLORMAP_NAMES`.
        invert: show near as dark instead of bright.
        layout: videos only: ``depth``, ``side`` (picture beside depth) or ``overlay``.
    """

    cmap: str = "inferno"
    invert: bool = False
    layout: Layout = Layout.DEPTH

    def __post_init__(self) -> None:
        # Checked where every run's rendering is checked (one list of colormaps, layouts).
        render = RenderSettings(layout=self.layout, cmap=self.cmap, invert=self.invert)
        object.__setattr__(self, "layout", render.layout)

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
        created_s: wall-clock time of the upload (``time.time()``, seconds since the epoch).
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
        if not is_job_id(self.id):
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

    def download_name(self, output: str) -> str | None:
        """The name a finished output downloads as; ``None`` if it is not one of this job's."""
        if self.status is not JobStatus.DONE or output not in self.outputs:
            return None
        return next((self.name + suffix for name, _, suffix in OUTPUTS[self.kind]
                     if name == output), None)

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
        max_queued: jobs waiting at most; more uploads are refused (busy).
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
        if not is_job_id(job_id):
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
            write_json_atomic(folder / "meta.json", job.to_dict())
        except OSError as exc:  # the job still runs; only a restart would forget it
            log.error("cannot write %s/meta.json: %s", folder, exc)
