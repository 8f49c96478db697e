"""Retention: which finished jobs the web server deletes, to stay within its budget.

Touches files: :func:`sweep` measures the data folder and deletes the folders of the jobs
it evicts (through :meth:`stream.web.jobs.JobStore.remove`). Starts no threads; the
server calls it after each job, when idle and before it accepts an upload.

Three limits, in this order: finished jobs unused for ``keep_s`` go; then, least
recently used first, finished jobs go until at most ``max_jobs`` records are left and
the data folder holds at most ``max_data_bytes``. Waiting and running jobs are never
evicted, nor the most recently used finished one (its owner may be downloading it).
Failed and cancelled jobs hold no files (the worker deletes them at once), only their
record, and go first.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from .config import ServerConfig
from .jobs import Job, JobStatus, JobStore

__all__ = ["folder_bytes", "sweep"]


def folder_bytes(path: Path) -> int:
    """Bytes of every file under ``path`` (0 if it is gone)."""
    total = 0
    try:
        entries = list(os.scandir(path))
    except OSError:
        return 0
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                total += folder_bytes(Path(entry.path))
            else:
                total += entry.stat(follow_symlinks=False).st_size
        except OSError:  # deleted meanwhile
            continue
    return total


def _eviction_order(jobs: list[Job]) -> list[Job]:
    """Finished jobs, the first to go first: records without files, then by last use."""
    finished = [j for j in jobs if j.status.finished]
    return sorted(finished, key=lambda j: (j.status is JobStatus.DONE, j.used_s))


def sweep(store: JobStore, config: ServerConfig, now_s: float | None = None) -> list[str]:
    """Evict finished jobs over the age, count and size limits; return their ids."""
    now_s = time.time() if now_s is None else now_s
    jobs = store.jobs()
    order = _eviction_order(jobs)
    newest = max((j for j in order if j.status is JobStatus.DONE), key=lambda j: j.used_s,
                  default=None)
    evicted: list[str] = []

    def evict(job: Job) -> None:
        store.remove(job.id)
        evicted.append(job.id)

    if config.keep_s is not None:
        for job in [j for j in order if now_s - j.used_s > config.keep_s]:
            evict(job)
    order = [j for j in order if j.id not in evicted and j is not newest]
    while order and len(jobs) - len(evicted) > config.max_jobs:
        evict(order.pop(0))
    total = folder_bytes(store.root)
    while order and total > config.max_data_bytes:
        job = order.pop(0)
        total -= folder_bytes(store.job_dir(job.id))
        evict(job)
    return evicted
