"""Batch: convert a video library, or one long video, across machines with Ray.

A front end, above :mod:`stream.runtime.builder`. Importing this package is light (no Ray, no
PyAV, no network); :func:`run_batch` imports them when it runs. Modules:

* :mod:`~stream.batch.options`: :class:`BatchSettings` (output folder, cluster, pool,
  segments, retries), validated before anything starts;
* :mod:`~stream.batch.plan`: finding the videos, mirroring the tree, the manifest;
* :mod:`~stream.batch.segments`: keyframe segments, warm-up, lossless joins;
* :mod:`~stream.batch.worker`: what a worker does with a task (no Ray);
* :mod:`~stream.batch.engine`: Ray: the local instance or a cluster, actors, retries;
* :mod:`~stream.batch.progress`: the progress bar, the summary, ``--stats``;
* :mod:`~stream.batch.runner`: :func:`run_batch`, which ties them together.
"""

from __future__ import annotations

from typing import Any

from stream.batch.options import BatchSettings, OutputFormat
from stream.batch.report import BatchReport

__all__ = ["BatchSettings", "OutputFormat", "BatchReport", "run_batch"]


def run_batch(*args: Any, **kwargs: Any) -> BatchReport:
    """Convert videos across a Ray cluster; see :func:`stream.batch.runner.run_batch`."""
    from stream.batch.runner import run_batch as _run_batch

    return _run_batch(*args, **kwargs)

