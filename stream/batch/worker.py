"""Batch worker: what one worker process does with a task (no Ray in this module).

Touches files (reads the inputs, writes segment files and outputs through the sinks and
:mod:`stream.core.files`); the pipelines it runs start their own threads, it starts none
itself. A :class:`Worker` loads the network once and then runs tasks one at a time: a
whole file (a one-machine convert), one segment of a long file, or the join of a file's
segments. :mod:`stream.batch.engine` wraps it as a Ray actor; tests run it in-process.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import shutil
import socket
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from stream.core.errors import ConfigError, StreamError
from stream.core.files import write_json_atomic
from stream.core.settings import StreamSettings
from stream.engines.estimator import DepthEstimator
from stream.runtime.builder import build_convert, build_sinks, closing_on_error, make_estimator, run
from stream.runtime.pipeline import Pipeline

from .options import BatchSettings
from .plan import FileJob

__all__ = ["ConvertTask", "JoinTask", "Task", "TaskResult", "Worker", "load_estimator"]

_DONE = "done.json"


@dataclass(frozen=True)
class ConvertTask:
    """Convert a whole file, or one segment of it, with the worker's network.

    Attributes:
        job: the file.
        part_dir: this task's own folder for temporary outputs (segment video, raw depth).
        segment: the segment (:class:`stream.batch.segments.Segment`), or ``None`` for the
            whole file, written straight to ``job.output``.
    """

    job: FileJob
    part_dir: Path
    segment: Any = None

    @property
    def name(self) -> str:
        """``sub/c.mp4`` or ``sub/c.mp4 segment 3``."""
        return self.job.rel if self.segment is None else \
            f"{self.job.rel} segment {self.segment.number}"


@dataclass(frozen=True)
class JoinTask:
    """Join a file's converted segments (in order) into its outputs.

    Attributes:
        job: the file.
        part_dirs: the segments' folders, in order.
        has_audio: copy the source's sound into the output.
        time_base: the source video's time base.
        rate: its frame rate.
        starts: each segment's first pts (``Segment.start_pts``, in ``time_base``).
    """

    job: FileJob
    part_dirs: tuple[Path, ...]
    has_audio: bool
    time_base: Fraction | None = None
    rate: Fraction | None = None
    starts: tuple[int, ...] = ()

    @property
    def name(self) -> str:
        """``sub/c.mp4 join``."""
        return f"{self.job.rel} join"


Task = ConvertTask | JoinTask


@dataclass(frozen=True)
class TaskResult:
    """What a task did.

    Attributes:
        frames: frames written (a join: frames in the joined file).
        seconds: wall time of the task.
        node: the host name of the machine that ran it.
        reused: a segment finished by an earlier run was kept.
        warnings: what went wrong without failing (a truncated input).
    """

    frames: int
    seconds: float
    node: str
    reused: bool = False
    warnings: tuple[str, ...] = ()


def load_estimator(settings: StreamSettings, batch: BatchSettings,
                   threads: int | None) -> DepthEstimator:
    """The network for a worker with ``threads`` CPU threads (or the batch's test double).

    Raises:
        WeightsError: no usable checkpoint on this machine.
        ConfigError: the backend is not available here, or the factory does not import.
    """
    if batch.estimator_factory is not None:
        module, _, name = batch.estimator_factory.partition(":")
        try:
            factory = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"estimator factory {batch.estimator_factory}: {exc}") from exc
        return factory(**batch.estimator_kwargs)
    return make_estimator(settings, threads=threads, progress=False)


class Worker:
    """Runs batch tasks on one network, loaded once (the body of a Ray actor).

    Args:
        settings: the conversion settings (the same for every file).
        batch: the batch settings.
        cpus: CPUs this worker may use; the network gets that many threads.
    """

    def __init__(self, settings: StreamSettings, batch: BatchSettings,
                 cpus: float | None = None) -> None:
        self.settings = dataclasses.replace(settings, overwrite=True, stats_path=None,
                                            raw_dir=None)
        self.batch = batch
        self.threads = max(1, math.ceil(cpus)) if cpus else None
        self.node = socket.gethostname()
        self._estimator: DepthEstimator | None = None
        self._lock = threading.Lock()
        self._progress: tuple[str, int] = ("", 0)

    def load(self) -> dict[str, Any]:
        """Load the network (once); return where this worker runs."""
        if self._estimator is None:
            if self.threads is not None:
                import cv2

                cv2.setNumThreads(self.threads)
            self._estimator = load_estimator(self.settings, self.batch, self.threads)
        return {"node": self.node, "pid": os.getpid()}

    def pid(self) -> int:
        """This worker's process id (tests kill it)."""
        return os.getpid()

    def progress(self) -> tuple[str, int]:
        """``(task name, frames written so far)`` of the task running now."""
        with self._lock:
            return self._progress

    def _count(self, name: str, frames: int) -> None:
        with self._lock:
            self._progress = (name, frames)

    def run(self, task: Task) -> TaskResult:
        """Run one task to its end.

        Raises:
            StreamError: the task failed (a damaged input, an unwritable output...).
        """
        self.load()
        started = time.monotonic()
        self._count(task.name, 0)
        if isinstance(task, JoinTask):
            frames, reused, warnings = self._join(task), False, ()
        elif task.segment is None:
            frames, warnings = self._whole(task)
            reused = False
        else:
            frames, reused, warnings = self._segment(task)
        return TaskResult(frames, time.monotonic() - started, self.node, reused,
                          tuple(warnings))

    def _settings(self, task: ConvertTask) -> StreamSettings:
        raw = task.part_dir / "raw" if task.job.raw_dir is not None else None
        return dataclasses.replace(self.settings, raw_dir=raw)

    def _fresh(self, folder: Path) -> None:
        """An empty ``folder`` (what a dead attempt left there is removed)."""
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)

    def _whole(self, task: ConvertTask) -> tuple[int, tuple[str, ...]]:
        job = task.job
        settings = self._settings(task)
        if settings.raw_dir is not None:
            self._fresh(task.part_dir)
        pipeline = build_convert(job.input, job.output, settings, estimator=self._estimator,
                                 progress=lambda done, _: self._count(task.name, done))
        stats = run(pipeline)
        if stats.frames_written == 0:
            raise StreamError(f"{job.input}: no frame decodes")
        if settings.raw_dir is not None:
            from .segments import join_raw

            join_raw([settings.raw_dir], job.raw_dir)
            shutil.rmtree(task.part_dir, ignore_errors=True)
        return stats.frames_written, stats.warnings

    def _segment(self, task: ConvertTask) -> tuple[int, bool, tuple[str, ...]]:
        from .segments import SegmentSinks, SegmentSource, check_frames

        segment, done = task.segment, task.part_dir / _DONE
        try:
            record = json.loads(done.read_text(encoding="utf-8"))
            if record.get("frames") == segment.frames:
                return segment.frames, True, ()  # finished by an earlier run
        except (OSError, ValueError):
            pass
        self._fresh(task.part_dir)
        settings = self._settings(task)
        source = SegmentSource(task.job.input, segment)
        with closing_on_error(source):
            sinks = build_sinks(settings, video=task.part_dir / f"segment{task.job.output.suffix}",
                                inputs=[task.job.input])
            wrapper = SegmentSinks(sinks, segment.start_index,
                                   lambda n: self._count(task.name, n))
        stats = run(Pipeline(source, self._estimator, [wrapper], settings))
        check_frames(task.name, wrapper.written, segment.frames)
        write_json_atomic(done, {"frames": wrapper.written, "node": self.node})
        return wrapper.written, False, stats.warnings

    def _join(self, task: JoinTask) -> int:
        from .segments import join_raw, join_videos

        job = task.job
        suffix = job.output.suffix
        videos = [folder / f"segment{suffix}" for folder in task.part_dirs]
        frames = join_videos(videos, job.output, job.input if task.has_audio else None,
                             task.time_base, task.rate, task.starts)
        if job.raw_dir is not None:
            join_raw([folder / "raw" for folder in task.part_dirs], job.raw_dir)
        return frames

    def check_paths(self, files: list[tuple[str, int, int]], probe: tuple[str, str]) -> list[str]:
        """What this machine cannot see: inputs (path, size, mtime) and the output folder.

        ``probe`` is ``(path, text)`` of a file the driver wrote in the output folder:
        reading the same text proves this machine sees the same storage there.
        """
        return check_paths(files, probe)

    def close(self) -> None:
        """Release the network."""
        if self._estimator is not None:
            self._estimator.close()
            self._estimator = None


def check_paths(files: list[tuple[str, int, int]], probe: tuple[str, str]) -> list[str]:
    """Problems seeing ``files`` (``(path, size, mtime_ns)``) and the probe file, on this host.

    Returns:
        One line per problem (empty when this machine sees everything as the driver does).
    """
    problems = []
    for path, size, mtime_ns in files:
        try:
            stat = os.stat(path)
        except OSError as exc:
            problems.append(f"{path}: {exc.strerror or exc}")
            continue
        if stat.st_size != size or stat.st_mtime_ns != mtime_ns:
            problems.append(f"{path}: another file than the driver's (size or time differ)")
    path, text = probe
    folder = os.path.dirname(path)
    try:
        seen = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        seen = f"unreadable ({exc.strerror or exc})"
    if seen != text:
        problems.append(f"output folder {folder}: not the driver's folder (its check file is "
                        f"{'missing' if not os.path.exists(path) else 'different'})")
    elif not os.access(folder, os.W_OK | os.X_OK):
        problems.append(f"output folder {folder}: not writable")
    return problems
