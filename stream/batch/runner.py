"""Batch runner: plan the files, run them on Ray, record results, report.

Touches files (the manifest, the ``--stats`` JSON, the segment folder in OUTDIR, stale
temporaries of earlier runs); starts no threads itself (Ray starts processes, see
:mod:`stream.batch.engine`). :func:`run_batch` is what ``depthstream batch`` calls.

Example:
    >>> report = run_batch(["videos/"], StreamSettings(layout="side"),
    ...                    BatchSettings(out_dir="depth/"))  # doctest: +SKIP
    >>> print(report.converted, report.failed)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream.core.errors import ConfigError, SinkError, StreamError
from stream.core.files import remove_stale_parts, write_json_atomic, write_text_atomic
from stream.core.settings import StreamSettings

from .options import BatchSettings
from .plan import PARTS_NAME, FileJob, Manifest, plan_jobs, settings_record
from .progress import BatchProgress
from .report import BatchReport, FileReport
from .worker import ConvertTask, JoinTask, Task, TaskResult

__all__ = ["FileReport", "BatchReport", "run_batch"]


@dataclass
class _File:
    job: FileJob
    plan: Any
    report: FileReport
    part_dir: Path
    left: int = 0
    frames_done: int = 0


class _Tracker:
    """Follows every file through its tasks; implements :class:`engine.TaskEvents`."""

    def __init__(self, files: list[_File], manifest: Manifest, key: str,
                 progress: BatchProgress) -> None:
        self.files = {f.job.rel: f for f in files}
        self.manifest, self.key, self.view = manifest, key, progress
        self.finished = 0

    def tasks(self) -> list[Task]:
        out: list[Task] = []
        for f in self.files.values():
            segments = f.plan.segments
            if not segments:
                out.append(ConvertTask(f.job, f.part_dir / "whole"))
            for segment in segments:
                out.append(ConvertTask(f.job, f.part_dir / f"{segment.number:05d}", segment))
            f.left = len(segments)
        return out

    def wanted(self, task: Task) -> bool:
        return self.files[task.job.rel].report.status == "pending"

    def done(self, task: Task, result: TaskResult, where: dict[str, Any]) -> list[Task]:
        f = self.files[task.job.rel]
        if f.report.status != "pending":
            return []
        node = str(where.get("node", result.node))
        if node not in f.report.nodes:
            f.report.nodes.append(node)
        node_id = str(where.get("node_id", node))
        if node_id not in f.report.node_ids:
            f.report.node_ids.append(node_id)
        f.report.warnings.extend(result.warnings)
        f.report.seconds += result.seconds
        if isinstance(task, ConvertTask) and task.segment is not None:
            f.frames_done += result.frames
            f.left -= 1
            if f.left > 0:
                return []
            dirs = tuple(f.part_dir / f"{s.number:05d}" for s in f.plan.segments)
            return [JoinTask(f.job, dirs, f.plan.has_audio, f.plan.time_base, f.plan.rate,
                             tuple(s.start_pts for s in f.plan.segments))]
        if isinstance(task, JoinTask):
            f.report.join_s = result.seconds
        f.frames_done = result.frames
        f.report.frames = result.frames
        f.report.status = "converted"
        self.manifest.mark(f.job, self.key, "done", frames=result.frames,
                           seconds=f.report.seconds, nodes=f.report.nodes,
                           node_ids=f.report.node_ids, segments=f.report.segments)
        self._close(f)
        return []

    def failed(self, task: Task, reason: str) -> None:
        f = self.files[task.job.rel]
        if f.report.status != "pending":
            return
        where = task.name[len(task.job.rel):].strip()
        f.report.status, f.report.reason = "failed", f"{where}: {reason}" if where else reason
        self.manifest.mark(f.job, self.key, "failed", reason=f.report.reason)
        self.view.failed(f.job.rel, f.report.reason)
        self._close(f)

    def _close(self, f: _File) -> None:
        self.finished += 1
        shutil.rmtree(f.part_dir, ignore_errors=True)
        self.manifest.save()

    def progress(self, running: list[tuple[Task, int]], workers: list[dict[str, Any]]) -> None:
        frames = sum(f.frames_done for f in self.files.values())
        frames += sum(n for task, n in running if self.wanted(task))
        self.view.update(frames, self.finished, workers)


def _check_settings(settings: StreamSettings, batch: BatchSettings) -> None:
    encoder = getattr(settings, "encoder", None)
    if encoder is not None:  # a codec the container cannot hold fails before Ray starts
        encoder.for_container(batch.video_format.suffix)
    if settings.raw_dir is not None:
        raise ConfigError("batch writes raw depth next to each output (--raw); "
                          "a single raw folder goes with convert")
    robot = getattr(settings, "robot", None)
    if robot is not None and getattr(robot, "outputs", False):
        raise ConfigError("batch writes videos and raw depth; robotics outputs go with convert")


def _select(jobs: list[FileJob], manifest: Manifest, key: str,
            batch: BatchSettings) -> tuple[list[FileJob], list[FileJob]]:
    """``(to do, skipped)``; refuses to replace outputs that are not this tool's."""
    todo, skipped, foreign = [], [], []
    for job in jobs:
        if not batch.overwrite and manifest.is_done(job, key):
            skipped.append(job)
            continue
        todo.append(job)
        exists = job.output.exists() or (job.raw_dir is not None and job.raw_dir.exists())
        if exists and not manifest.owns(job) and not batch.overwrite:
            foreign.append(job)
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise SinkError(f"output exists: {foreign[0].output}{more} (not written by an "
                        "earlier batch here; use --overwrite to replace)")
    return todo, skipped


def _sweep(out_dir: Path, todo: list[_File], overwrite: bool) -> None:
    """Remove what killed runs left: temporaries, and segment folders no file needs now.

    Segments an interrupted run finished with the same settings are kept (the rerun
    uses them), unless ``overwrite`` asks for everything to be made again.
    """
    folders = {out_dir} | {f.job.output.parent for f in todo}
    for folder in folders:
        remove_stale_parts(folder)
    parts = out_dir / PARTS_NAME
    keep = set() if overwrite else {f.part_dir.name for f in todo}
    if parts.is_dir():
        for entry in parts.iterdir():
            if entry.name not in keep:
                shutil.rmtree(entry, ignore_errors=True)


def _plan_files(todo: list[FileJob], key: str, batch: BatchSettings,
                reports: dict[str, FileReport]) -> list[_File]:
    from .segments import plan_video

    parts = batch.out_dir.absolute() / PARTS_NAME
    files = []
    for job in todo:
        report = reports[job.rel]
        try:
            plan = plan_video(job.input, batch.segment_s, batch.warmup_s)
        except StreamError as exc:
            report.status, report.reason = "failed", str(exc)
            continue
        report.segments = max(1, len(plan.segments))
        files.append(_File(job, plan, report, parts / job.identity(key)))
    return files


def _mkdir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SinkError(f"cannot create {folder}: {exc.strerror or exc}") from exc


def _total_frames(files: list[_File]) -> int | None:
    total = 0
    for f in files:
        frames = f.plan.frames
        if frames is None and f.plan.duration_s and f.plan.rate:
            frames = round(f.plan.duration_s * float(f.plan.rate))
        if frames is None:
            return None
        total += frames
    return total


def run_batch(inputs: list[str | os.PathLike], settings: StreamSettings | None,
              batch: BatchSettings, progress: BatchProgress | None = None) -> BatchReport:
    """Convert every video of ``inputs`` into ``batch.out_dir``, spread over Ray workers.

    Files finished by an earlier run with the same settings are skipped; a file that
    fails (after retries) is reported and the others go on.

    Args:
        inputs: video files and folders (searched recursively).
        settings: the conversion settings, as for ``convert`` (no raw folder, no stats).
        batch: output folder and format, cluster, pool, segments, retries.
        progress: what to show; default a progress bar on stderr.

    Raises:
        SourceError: an input is missing or there is no video.
        SinkError: outputs exist that an earlier batch did not write (without overwrite).
        ConfigError: bad settings, the cluster cannot be reached, or a node cannot see
            the inputs or the output folder.
        WeightsError: the workers find no usable checkpoint.
    """
    started = time.monotonic()
    settings = settings or StreamSettings()
    _check_settings(settings, batch)
    progress = progress or BatchProgress()
    out_dir = batch.out_dir.absolute()
    jobs = plan_jobs(inputs, batch)
    record, key = settings_record(settings, batch)
    manifest = Manifest(out_dir)
    todo, skipped = _select(jobs, manifest, key, batch)
    reports = {j.rel: FileReport(j.rel, str(j.input), str(j.output)) for j in jobs}
    for job in skipped:
        entry = manifest.files.get(job.rel, {})
        reports[job.rel].status, reports[job.rel].frames = "skipped", entry.get("frames", 0)
    report = BatchReport(list(reports.values()))
    files = _plan_files(todo, key, batch, reports)
    _sweep(out_dir, files, batch.overwrite)
    try:
        for job in todo:
            failed = reports[job.rel]
            if failed.status == "failed":  # not a video: the others go on
                manifest.mark(job, key, "failed", reason=failed.reason)
                progress.failed(job.rel, failed.reason or "")
        if files:
            manifest.settings = record
            for f in files:
                manifest.mark(f.job, key, "pending")
                _mkdir(f.job.output.parent)
            manifest.save(force=True)
            _run(files, settings, batch, manifest, key, progress, report)
    finally:
        progress.close()
        manifest.save(force=True)
        with contextlib.suppress(OSError):
            (out_dir / PARTS_NAME).rmdir()  # only when empty: nothing left to resume
        report.elapsed_s = time.monotonic() - started
    if batch.stats_path is not None:
        write_json_atomic(batch.stats_path, report.to_dict())
    return report


def _run(files: list[_File], settings: StreamSettings, batch: BatchSettings,
         manifest: Manifest, key: str, progress: BatchProgress, report: BatchReport) -> None:
    """Start or join Ray, check every node, run the tasks."""
    from .engine import Scheduler, check_nodes, connect, pool_size

    out_dir = batch.out_dir.absolute()
    with connect(batch.address) as nodes:
        workers, cpus = pool_size(nodes, batch.workers, batch.cpus_per_worker)
        report.workers, report.cpus_per_worker = workers, cpus
        report.nodes = [n.label for n in nodes]
        probe = out_dir / f".depthstream-check-{secrets.token_hex(4)}"
        text = secrets.token_hex(16)
        write_text_atomic(probe, text)
        try:
            check_nodes(nodes, [(str(f.job.input), f.job.size, f.job.mtime_ns) for f in files],
                        (str(probe), text))
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()
        tracker = _Tracker(files, manifest, key, progress)
        progress.start(_total_frames(files), len(files), report.skipped, workers, cpus,
                       len(nodes))
        scheduler = Scheduler(settings, batch, workers, cpus)
        try:
            scheduler.run(tracker.tasks(), tracker)
        finally:
            report.retried = scheduler.retried
            scheduler.close()
    for f in files:
        if f.report.status == "pending":  # interrupted before it ran
            f.report.status, f.report.reason = "failed", "not run"
