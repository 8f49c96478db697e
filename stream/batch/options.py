"""Batch options: how ``depthstream batch`` spreads a video library over workers.

Starts no threads, touches no files, imports nothing heavy (no Ray): a bad option fails
here, before Ray starts. The per-file conversion settings (layout, colours, model...)
stay in :class:`stream.core.settings.StreamSettings`; :class:`BatchSettings` holds what only a
batch has: the output folder and format, the cluster, the pool, the segments, retries.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from stream.core.errors import ConfigError
from stream.core.settings import parse_enum

__all__ = ["OutputFormat", "BatchSettings", "DEFAULT_SEGMENT_S", "DEFAULT_WARMUP_S",
           "ENV_ESTIMATOR", "ENV_ESTIMATOR_KWARGS", "estimator_hook_from_env"]

DEFAULT_SEGMENT_S = 60.0
"""Default segment length: long enough that the warm-up and the join cost a few percent."""

DEFAULT_WARMUP_S = 2.0
"""Frames decoded (and run through the network) before a segment, not written."""

ENV_ESTIMATOR = "DEPTHSTREAM_BATCH_ESTIMATOR"
"""``module:callable`` returning a :class:`~stream.engines.estimator.DepthEstimator`: a test or
development hook that replaces the network in every worker (the tests' cheap double)."""

ENV_ESTIMATOR_KWARGS = "DEPTHSTREAM_BATCH_ESTIMATOR_KWARGS"
"""JSON object of keyword arguments for :data:`ENV_ESTIMATOR`'s callable."""


class OutputFormat(Enum):
    """Container of the output videos (the codec follows ``--codec`` or the container)."""

    MP4 = "mp4"
    MKV = "mkv"
    WEBM = "webm"

    @property
    def suffix(self) -> str:
        """``.mp4``, ``.mkv`` or ``.webm``."""
        return f".{self.value}"


def _positive(value: Any, what: str, integer: bool = False) -> Any:
    try:
        number = int(value) if integer else float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number, got {value!r}") from None
    if isinstance(value, bool) or (integer and number != value) or not (
            math.isfinite(number) and number > 0):
        kind = "a whole number" if integer else "a number"
        raise ConfigError(f"{what} must be {kind} above 0, got {value!r}")
    return number


@dataclass(frozen=True)
class BatchSettings:
    """What a batch run does besides converting each file.

    Attributes:
        out_dir: the output folder; the input tree is mirrored below it.
        video_format: container of the outputs.
        raw: also write raw depth to ``<out>/<sub>/<name>_raw/``.
        address: ``None`` starts a local Ray instance on this machine (loopback only);
            ``auto``, ``HOST:PORT`` or ``ray://HOST:10001`` joins a running cluster.
        workers: actors (each loads the network once); ``None``: as many as the cluster's
            CPUs hold at ``cpus_per_worker`` each.
        cpus_per_worker: CPUs each worker reserves, and its network's threads; ``None``:
            the number of CPUs of the smallest node (one worker per machine).
        segment_s: split videos longer than this at keyframes into segments of about
            this length, converted in parallel; 0 converts whole files.
        warmup_s: seconds decoded and run through the network before each segment (not
            written), so the smoother and the colour range have settled.
        retries: times a task whose worker died is tried again elsewhere.
        overwrite: redo files the manifest says are done, and replace outputs it does
            not know.
        stats_path: write per-file results and totals as JSON here.
        estimator_factory: ``module:callable`` building the estimator in each worker
            instead of the network (tests; see :data:`ENV_ESTIMATOR`).
        estimator_kwargs: keyword arguments for ``estimator_factory``.

    Raises:
        ConfigError: a value out of range.
    """

    out_dir: Path
    video_format: OutputFormat = OutputFormat.MP4
    raw: bool = False
    address: str | None = None
    workers: int | None = None
    cpus_per_worker: float | None = None
    segment_s: float = DEFAULT_SEGMENT_S
    warmup_s: float = DEFAULT_WARMUP_S
    retries: int = 2
    overwrite: bool = False
    stats_path: Path | None = None
    estimator_factory: str | None = None
    estimator_kwargs: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        _set = object.__setattr__
        if self.out_dir is None or not os.fspath(self.out_dir):
            raise ConfigError("batch needs an output folder (-o OUTDIR)")
        _set(self, "out_dir", Path(self.out_dir))
        _set(self, "video_format", parse_enum(OutputFormat, self.video_format, "format"))
        if self.address is not None and not str(self.address).strip():
            raise ConfigError("--address is empty; give auto, HOST:PORT or ray://HOST:10001")
        if self.workers is not None:
            _set(self, "workers", _positive(self.workers, "--workers", integer=True))
        if self.cpus_per_worker is not None:
            _set(self, "cpus_per_worker", _positive(self.cpus_per_worker, "--cpus-per-worker"))
        for name, what in (("segment_s", "--segment-seconds"), ("warmup_s", "warm-up")):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    math.isfinite(value) and value >= 0):
                raise ConfigError(f"{what} must be 0 or more seconds, got {value!r}")
            _set(self, name, float(value))
        if isinstance(self.retries, bool) or int(self.retries) != self.retries \
                or self.retries < 0:
            raise ConfigError(f"retries must be a whole number >= 0, got {self.retries!r}")
        if self.stats_path is not None:
            _set(self, "stats_path", Path(self.stats_path))
        factory = self.estimator_factory
        if factory is not None and (":" not in factory or not all(factory.split(":", 1))):
            raise ConfigError(f"estimator factory must be module:callable, got {factory!r}")
        _set(self, "estimator_kwargs", dict(self.estimator_kwargs or {}))


def estimator_hook_from_env() -> tuple[str | None, dict[str, Any]]:
    """``(factory, kwargs)`` from :data:`ENV_ESTIMATOR` and :data:`ENV_ESTIMATOR_KWARGS`.

    Raises:
        ConfigError: the keyword arguments are not a JSON object.
    """
    import json

    factory = os.environ.get(ENV_ESTIMATOR) or None
    text = os.environ.get(ENV_ESTIMATOR_KWARGS) or "{}"
    try:
        kwargs = json.loads(text)
    except ValueError:
        kwargs = None
    if not isinstance(kwargs, dict):
        raise ConfigError(f"{ENV_ESTIMATOR_KWARGS} must be a JSON object, got {text!r}")
    return factory, kwargs
