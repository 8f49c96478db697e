"""Jobs: the web server's job records and the store that keeps them.

Touches files: :class:`JobStore` creates ``<data_dir>/jobs`` and ``<data_dir>/uploads``,
writes each job's ``meta.json`` (atomically, through :mod:`stream.core.files`), deletes a
job's files when it is cancelled, fails or is evicted, empties the uploads folder and
reads the records back at start. Starts no threads; the store is safe to use from
several.

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
from urllib.parse import quote

from stream.core.errors import ConfigError
from stream.core.files import write_json_atomic
from stream.core.settings import Layout, RenderSettings
from stream.models.registry import get_spec

__all__ = [
    "METRIC_LABELS",
    "OUTPUTS",
    "JobStatus",
    "JobKind",
    "JobSettings",
    "Job",
    "JobStore",
    "is_job_id",
    "public_message",
]

log = logging.getLogger(__name__)

_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
_TRUE = ("1", "true", "on", "yes")
_FALSE = ("", "0", "false", "off", "no")
# An absolute path in a message: POSIX (/a/b) or Windows (C:\\a\\b); shown by its last part.
_PATH = re.compile(r"(?<![\w./:])/(?:[^\s'\"/\\:]+/)*([^\s'\"/\\:]+)"
                   r"|\b[A-Za-z]:\\(?:[^\s'\"/\\:]+\\)*([^\s'\"/\\:]+)")


def is_job_id(value: object) -> bool:
    """Whether ``value`` is a job id (uuid4 hex): the only thing a path is built from."""
    return isinstance(value, str) and _JOB_ID.match(value) is not None


def public_message(message: object) -> str:
    """A message fit for a client: every absolute path replaced by its file name.

    ``"cannot write /srv/data/jobs/<id>/result.mp4: No space"`` becomes
    ``"cannot write result.mp4: No space"``; the server's folders never leave it, and a
    job's ``input`` is called "the upload".
    """
    def shown(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        stem = name.rstrip(").,;")  # punctuation after the path is the sentence's
        return ("the upload" if stem == "input" else stem) + name[len(stem):]

    return _PATH.sub(shown, str(message))


class JobStatus(Enum):
    """Where a job is: waiting, on a worker, finished, failed, or cancelled by a client."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """Whether the job will not change any more."""
        return self not in (JobStatus.QUEUED, JobStatus.RUNNING)


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
        ("depth16.npy", "Raw depth (float32 .npy)", "_depth16.npy"),
    ),
    JobKind.VIDEO: (
        ("result.mp4", "Depth video (MP4)", "_depth.mp4"),
        ("depth16.zip", "Raw depth (16-bit PNG frames, .zip)", "_depth16.zip"),
    ),
}


#: Labels of a metric model's raw outputs (the files hold metres, or millimetres).
METRIC_LABELS: dict[str, str] = {
    "depth16.png": "Raw depth (16-bit PNG, millimetres)",
    "depth16.npy": "Raw depth (float32 .npy, metres)",
    "depth16.zip": "Raw depth (16-bit PNG frames, millimetres, .zip)",
}


def download_suffix(kind: JobKind, output: str) -> str | None:
    """What a download of ``output`` ends with (``"_depth.png"``), or ``None``."""
    return next((suffix for name, _, suffix in OUTPUTS[kind] if name == output), None)


@dataclass(frozen=True)
class JobSettings:
    """How a job renders its result (form fields of ``POST /api/jobs``).

    Attributes:
        cmap: colormap, one of :data:`stream.core.settings.COLORMAP_NAMES`.
        invert: show near as dark instead of bright.
        layout: videos only: ``depth``, ``side`` (picture beside depth) or ``overlay``.
        model: the network (a ``--model`` name); ``None``: the server's default.
    """

    cmap: str = "inferno"
    invert: bool = False
    layout: Layout = Layout.DEPTH
    model: str | None = None

    def __post_init__(self) -> None:
        # Checked where every run's rendering is checked (one list of colormaps, layouts).
        render = RenderSettings(layout=self.layout, cmap=self.cmap, invert=self.invert)
        object.__setattr__(self, "layout", render.layout)
        if self.model is not None:
            object.__setattr__(self, "model", get_spec(self.model).name)

    @classmethod
    def from_form(cls, form: Mapping[str, str]) -> JobSettings:
        """Settings from form fields; missing fields take their defaults.

        Raises:
            ConfigError: an unknown colormap, layout or model, or ``invert`` that is not a
                flag.
        """
        invert = str(form.get("invert", "")).strip().lower()
        if invert not in _TRUE + _FALSE:
            raise ConfigError(f"invert must be true or false, got {invert!r}")
        return cls(cmap=str(form.get("cmap") or "inferno").strip().lower(),
                   invert=invert in _TRUE,
                   layout=str(form.get("layout") or "depth").strip().lower(),
                   model=str(form.get("model") or "").strip().lower() or None)

    def for_kind(self, kind: JobKind) -> JobSettings:
        """Only the settings that change this kind's result (pictures have no layout)."""
        return dataclasses.replace(self, layout=Layout.DEPTH) if kind is JobKind.PICTURE else self

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"cmap": self.cmap, "invert": self.invert, "layout": self.layout.value,
                "model": self.model}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> JobSettings:
        """Inverse of :meth:`to_dict` (fields of older records are ignored)."""
        return cls(**{k: d[k] for k in ("cmap", "invert", "layout", "model") if k in d})


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
        status: queued, running, done, failed or cancelled.
        progress: 0..1.
        error: a message the page shows when ``status`` is failed (never a path).
        created_s: wall-clock time of the upload (``time.time()``, seconds since the epoch).
        used_s: wall-clock time it was last uploaded, finished or downloaded (for
            least-recently-used eviction).
        info: facts for the page: width, height, frames, inference_ms, elapsed_ms, lo, hi;
            the model that made it (``model``, ``model_title``, ``units``: ``m`` for
            metres, else ``relative``), its ``precision``, and ``warnings``.
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
    used_s: float = 0.0
    info: Mapping[str, Any] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not is_job_id(self.id):
            raise ValueError(f"job id must be 32 lowercase hex digits, got {self.id!r}")
        if not 0.0 <= self.progress <= 1.0:
            raise ValueError(f"progress must be in [0, 1], got {self.progress}")
        if not self.used_s:
            object.__setattr__(self, "used_s", self.created_s)

    def to_dict(self) -> dict[str, Any]:
        """What ``meta.json`` keeps (enough to serve the job again after a restart)."""
        return {
            "id": self.id, "kind": self.kind.value, "settings": self.settings.to_dict(),
            "key": self.key, "name": self.name, "size_bytes": self.size_bytes,
            "status": self.status.value, "progress": self.progress, "error": self.error,
            "created_s": self.created_s, "used_s": self.used_s, "info": dict(self.info),
            "outputs": list(self.outputs),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Job:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: (or ``KeyError``/``TypeError``) for a damaged record.
        """
        return cls(id=d["id"], kind=JobKind(d["kind"]),
                   settings=JobSettings.from_dict(d["settings"]), key=d["key"],
                   name=d.get("name", "upload"), size_bytes=d.get("size_bytes", 0),
                   status=JobStatus(d["status"]), progress=float(d.get("progress", 0.0)),
                   error=d.get("error"), created_s=float(d.get("created_s", 0.0)),
                   used_s=float(d.get("used_s", 0.0)), info=dict(d.get("info", {})),
                   outputs=tuple(d.get("outputs", ())))

    def download_name(self, output: str, name: str | None = None) -> str | None:
        """The name a finished output downloads as; ``None`` if it is not one of this job's.

        Args:
            output: the output file (``result.png``).
            name: the stem to use instead of the first uploader's (a cached hit's own).
        """
        if self.status is not JobStatus.DONE or output not in self.outputs:
            return None
        suffix = download_suffix(self.kind, output)
        return None if suffix is None else (name or self.name) + suffix

    def to_api(self, cached: bool = False, name: str | None = None,
               position: int | None = None) -> dict[str, Any]:
        """The ``GET /api/jobs/<id>`` answer.

        Args:
            cached: the upload was answered by an earlier identical one.
            name: the display stem to name downloads after (default: the job's).
            position: where a queued job waits (1: next).
        """
        name = name or self.name
        results = {}
        metric = self.info.get("units") == "m"
        if self.status is JobStatus.DONE:
            for output, label, suffix in OUTPUTS[self.kind]:
                if metric:
                    label = METRIC_LABELS.get(output, label)
                if output in self.outputs:
                    url = f"/results/{self.id}/{output}"
                    results[output.replace(".", "_")] = {
                        "url": url, "label": label, "download": name + suffix,
                        "download_url": f"{url}?download={quote(name)}",
                    }
        return {
            "id": self.id, "status": self.status.value, "progress": round(self.progress, 4),
            "position": position if self.status is JobStatus.QUEUED else None,
            "kind": self.kind.value, "name": name, "settings": self.settings.to_dict(),
            "error": self.error, "cached": cached, "info": dict(self.info),
            "results": results, "status_url": f"/api/jobs/{self.id}",
        }


class JobStore:
    """Jobs in memory, mirrored to ``<data_dir>/jobs/<id>/meta.json``; thread-safe.

    Finished jobs are loaded again at start; jobs a previous run left queued or running
    are marked failed (their upload can simply be sent again), and a failed or
    cancelled job keeps only its ``meta.json``.
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
            if not job.status.finished:
                job = dataclasses.replace(job, status=JobStatus.FAILED,
                                          error="the server stopped before this job finished; "
                                                "upload the file again")
                self._save(job)
            if job.status is not JobStatus.DONE:
                self.clear_files(job.id)
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

    def jobs(self) -> list[Job]:
        """Every job, as it is now."""
        with self._lock:
            return list(self._jobs.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)

    def add_or_get(self, key: str, make: Callable[[], Job]) -> tuple[Job, bool]:
        """The live job with this cache key (``(job, True)``), else ``(make(), False)`` added.

        A failed or cancelled job does not count: the same upload runs again. Atomic, so
        two identical uploads at once make one job.
        """
        with self._lock:
            found = self._jobs.get(self._by_key.get(key, ""))
            if found is not None and found.status in (JobStatus.FAILED, JobStatus.CANCELLED):
                found = None
            if found is not None:
                found = self._jobs[found.id] = dataclasses.replace(found, used_s=time.time())
                return found, True
            job = make()
            self._jobs[job.id] = job
            self._by_key[key] = job.id
            self._save(job)
            return job, False

    def update(self, job_id: str, **changes: Any) -> Job:
        """Replace fields of a job; status changes are written to ``meta.json``.

        Raises:
            KeyError: no such job (it was evicted or removed).
        """
        with self._lock:
            old = self._jobs[job_id]
            if old.status.finished and changes.get("status", old.status) is not old.status:
                return old  # finished is final: a late worker update loses to a cancel
            if changes.get("status", old.status) is not old.status:
                changes.setdefault("used_s", time.time())
            job = dataclasses.replace(old, **changes)
            self._jobs[job_id] = job
            if job.status is not old.status or "outputs" in changes:
                self._save(job)
            return job

    def touch(self, job_id: str) -> None:
        """Mark a job used now (a download): it is evicted later."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                self._jobs[job_id] = dataclasses.replace(job, used_s=time.time())

    def remove(self, job_id: str) -> None:
        """Forget a job and delete its folder."""
        with self._lock:
            job = self._jobs.pop(job_id, None)
            if job is not None and self._by_key.get(job.key) == job_id:
                del self._by_key[job.key]
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    def clear_files(self, job_id: str) -> None:
        """Delete every file of a job but its ``meta.json`` (partial or stale output)."""
        folder = self.job_dir(job_id)
        with contextlib.suppress(FileNotFoundError):
            for path in folder.iterdir():
                if path.name == "meta.json":
                    continue
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        path.unlink()

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
