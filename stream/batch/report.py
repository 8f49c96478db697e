"""Batch report: what a batch run did, per file and in total (the ``--stats`` record).

Its own module so the runner, which fills it, and the progress display, which prints it,
both depend on it and not on each other.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FileReport", "BatchReport"]


@dataclass
class FileReport:
    """One file's result.

    Attributes:
        rel: the output below OUTDIR (``sub/c.mp4``).
        input: the input video.
        output: the output video.
        status: ``converted``, ``skipped`` (done by an earlier run) or ``failed``.
        frames: frames written.
        seconds: time the workers spent on it (all its segments and the join).
        segments: pieces it was converted in (1: whole).
        join_s: time the join of its segments took (0: converted whole).
        nodes: the machines that worked on it (host names).
        node_ids: their Ray node ids (several nodes may share a host).
        reason: why it failed.
        warnings: what went wrong without failing it.
    """

    rel: str
    input: str
    output: str
    status: str = "pending"
    frames: int = 0
    seconds: float = 0.0
    segments: int = 1
    join_s: float = 0.0
    nodes: list[str] = field(default_factory=list)
    node_ids: list[str] = field(default_factory=list)
    reason: str | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class BatchReport:
    """What a batch run did: per file, and in total.

    Attributes:
        files: one report per input video.
        elapsed_s: wall time of the run.
        workers: workers in the pool (0 when nothing was left to do).
        cpus_per_worker: CPUs each worker had.
        nodes: the machines of the cluster.
        retried: tasks run again because their worker died (or failed unexpectedly).
    """

    files: list[FileReport]
    elapsed_s: float = 0.0
    workers: int = 0
    cpus_per_worker: float = 0.0
    nodes: list[str] = field(default_factory=list)
    retried: int = 0

    def _count(self, status: str) -> int:
        return sum(1 for f in self.files if f.status == status)

    @property
    def converted(self) -> int:
        """Files converted by this run."""
        return self._count("converted")

    @property
    def skipped(self) -> int:
        """Files an earlier run had done."""
        return self._count("skipped")

    @property
    def failed(self) -> int:
        """Files that failed."""
        return self._count("failed")

    @property
    def frames(self) -> int:
        """Frames written by this run."""
        return sum(f.frames for f in self.files if f.status == "converted")

    @property
    def fps(self) -> float:
        """Frames written per second of wall time, across the cluster."""
        return self.frames / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``--stats``): per file, and the totals."""
        return {
            "files": [dataclasses.asdict(f) for f in self.files],
            "totals": {"files": len(self.files), "converted": self.converted,
                       "skipped": self.skipped, "failed": self.failed, "frames": self.frames,
                       "elapsed_s": self.elapsed_s, "fps": self.fps, "workers": self.workers,
                       "cpus_per_worker": self.cpus_per_worker, "nodes": self.nodes,
                       "retried": self.retried},
        }
