"""Batch plan: the input videos, where each one's outputs go, and the manifest of results.

Reads folders (to find videos) and writes one file, the manifest in the output folder
(through :mod:`stream.core.files`, atomically); starts no threads, imports nothing heavy.

Outputs mirror the input tree: ``in/sub/c.mkv``, found in the folder ``in``, becomes
``OUTDIR/sub/c.mp4`` (and ``OUTDIR/sub/c_raw/``); a file named on the command line
goes to the top of ``OUTDIR``. The manifest (``OUTDIR/.depthstream-batch.json``)
records for each output the settings it was made with and its result, so that a rerun
skips what is done, redoes what changed, and knows which existing outputs are its own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from stream.core.errors import ConfigError, SinkError, SourceError
from stream.core.files import write_json_atomic
from stream.core.settings import StreamSettings

from .options import BatchSettings

__all__ = [
    "VIDEO_EXTENSIONS",
    "MANIFEST_NAME",
    "PARTS_NAME",
    "FileJob",
    "find_videos",
    "plan_jobs",
    "settings_record",
    "Manifest",
]

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v", ".mpg", ".mpeg", ".ts",
                    ".mts", ".m2ts", ".wmv", ".flv", ".3gp", ".ogv")
"""What a folder search takes for a video (a file named on the command line is tried as
one whatever its name)."""

MANIFEST_NAME = ".depthstream-batch.json"
PARTS_NAME = ".depthstream-parts"
"""Folder in OUTDIR for segments in progress; removed when the run has joined them all."""

# Settings that say where or how long, not what a conversion makes.
_NOT_IN_KEY = {"overwrite", "stats_path", "raw_dir", "duration_s", "queue_size",
               "snapshot_dir"}


@dataclass(frozen=True)
class FileJob:
    """One input video and its outputs.

    Attributes:
        input: the video (absolute).
        rel: the output's path below OUTDIR (``sub/c.mp4``), the manifest's key.
        output: the output video (absolute).
        raw_dir: the raw depth folder, or ``None``.
        size: the input's size in bytes when planned.
        mtime_ns: the input's modification time when planned.
    """

    input: Path
    rel: str
    output: Path
    raw_dir: Path | None
    size: int
    mtime_ns: int

    def identity(self, key: str) -> str:
        """A short id of this input, its state and the settings ``key`` (for part folders)."""
        text = f"{self.rel}\0{self.input}\0{self.size}\0{self.mtime_ns}\0{key}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def find_videos(inputs: Iterable[str | os.PathLike],
                skip: Path | None = None) -> list[tuple[Path, Path]]:
    """Files and folders -> ``(video, path relative to its input root)`` pairs, sorted.

    Folders are searched recursively for :data:`VIDEO_EXTENSIONS` (hidden files and
    folders are skipped, and so is ``skip``, the output folder when it lies inside an
    input folder). A file named directly is kept whatever its extension.

    Raises:
        SourceError: an input does not exist, or no video is found at all.
    """
    found: list[tuple[Path, Path]] = []
    for item in map(lambda p: Path(p).absolute(), inputs):
        if item.is_dir():
            for root, dirs, files in os.walk(item):
                here = Path(root)
                dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                                 and not (skip is not None and _inside(here / d, skip)))
                for name in sorted(files):
                    path = here / name
                    if not name.startswith(".") and path.suffix.lower() in VIDEO_EXTENSIONS:
                        found.append((path, path.relative_to(item)))
        elif item.is_file():
            found.append((item, Path(item.name)))
        else:
            raise SourceError(f"no such file or folder: {item}")
    if not found:
        names = ", ".join(map(str, inputs))
        raise SourceError(f"no videos found in {names} (looked for "
                          f"{', '.join(e.lstrip('.') for e in VIDEO_EXTENSIONS)})")
    return found


def plan_jobs(inputs: Iterable[str | os.PathLike], batch: BatchSettings) -> list[FileJob]:
    """The jobs for ``inputs``: each video with its mirrored outputs in ``batch.out_dir``.

    Raises:
        SourceError: an input is missing or holds no video.
        SinkError: the output folder cannot be made.
        ConfigError: two inputs map to one output (``a.mkv`` and ``a.mp4`` side by side,
            or two folders with the same file), or an input lies in the output folder.
    """
    out_dir = batch.out_dir.absolute()
    found = find_videos(inputs, skip=out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SinkError(f"cannot create the output folder {out_dir}: "
                        f"{exc.strerror or exc}") from exc
    jobs: dict[str, FileJob] = {}
    for path, rel in found:
        if _inside(path, out_dir):
            raise ConfigError(f"input {path} is inside the output folder {out_dir}")
        out_rel = rel.with_suffix(batch.video_format.suffix)
        key = out_rel.as_posix()
        if key in jobs:
            raise ConfigError(f"{jobs[key].input} and {path} would both be written to "
                              f"{out_dir / out_rel}; convert them in separate runs")
        stat = path.stat()
        raw = out_dir / out_rel.parent / f"{out_rel.stem}_raw" if batch.raw else None
        jobs[key] = FileJob(path, key, out_dir / out_rel, raw, stat.st_size, stat.st_mtime_ns)
    return list(jobs.values())


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def settings_record(settings: StreamSettings, batch: BatchSettings) -> tuple[dict, str]:
    """``(settings as JSON-ready dict, key)``: what decides an output's content.

    The key changes when any conversion setting does (layout, colours, smoothing,
    model, encoder, format, raw export, segment length...), or the weights file does;
    not for where or how the work runs (workers, address, overwrite, stats file).
    """
    record = {f.name: _plain(getattr(settings, f.name)) for f in dataclasses.fields(settings)
              if f.name not in _NOT_IN_KEY}
    if settings.weights is not None:
        try:
            stat = Path(settings.weights).stat()
            record["weights_file"] = [stat.st_size, stat.st_mtime_ns]
        except OSError:
            pass  # a missing file fails in the workers, with a clear message
    record.update(format=batch.video_format.value, raw=batch.raw, segment_s=batch.segment_s,
                  warmup_s=batch.warmup_s, estimator=batch.estimator_factory,
                  estimator_kwargs=_plain(batch.estimator_kwargs))
    text = json.dumps(record, sort_keys=True)
    return record, hashlib.sha256(text.encode()).hexdigest()[:20]


class Manifest:
    """The results of earlier runs into an output folder, and this run's as they come.

    Entries are keyed by the output's path below OUTDIR. A ``pending`` entry is written
    for every file before its work starts, so an existing output the manifest knows is
    this tool's to replace; only a ``done`` entry with the same settings key and the same
    input (size, modification time) lets a rerun skip the file.

    Args:
        out_dir: the output folder.
        min_interval_s: :meth:`save` writes at most this often unless forced (a library
            of thousands of files must not rewrite a large manifest per file).
    """

    def __init__(self, out_dir: Path, min_interval_s: float = 1.0) -> None:
        self.path = Path(out_dir) / MANIFEST_NAME
        self.min_interval_s = min_interval_s
        self.files: dict[str, dict[str, Any]] = {}
        self.settings: dict[str, Any] = {}
        self._saved_at = 0.0
        self._dirty = False
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and isinstance(data.get("files"), dict):
                self.files = data["files"]
        except (OSError, ValueError):
            pass  # no manifest yet (or not ours): every existing output is foreign

    def is_done(self, job: FileJob, key: str) -> bool:
        """The manifest says ``job`` was made with ``key`` from this input, and it exists."""
        entry = self.files.get(job.rel)
        return bool(
            entry and entry.get("status") == "done" and entry.get("settings_key") == key
            and entry.get("input") == str(job.input) and entry.get("input_size") == job.size
            and entry.get("input_mtime_ns") == job.mtime_ns and job.output.is_file()
            and (job.raw_dir is None or job.raw_dir.is_dir()))

    def owns(self, job: FileJob) -> bool:
        """An earlier run (any settings) of this tool wrote or was writing ``job``'s output."""
        return job.rel in self.files

    def mark(self, job: FileJob, key: str, status: str, **result: Any) -> None:
        """Record ``job``'s status (``pending``, ``done``, ``failed``) and its result."""
        self.files[job.rel] = {
            "input": str(job.input), "input_size": job.size, "input_mtime_ns": job.mtime_ns,
            "settings_key": key, "status": status, "updated": time.time(), **result,
        }
        self._dirty = True

    def save(self, force: bool = False) -> None:
        """Write the manifest atomically (now if ``force``, else if the interval passed)."""
        now = time.monotonic()
        if not self._dirty or (not force and now - self._saved_at < self.min_interval_s):
            return
        write_json_atomic(self.path, {"tool": "depthstream batch", "version": 1,
                                      "settings": self.settings, "files": self.files})
        self._saved_at, self._dirty = now, False
