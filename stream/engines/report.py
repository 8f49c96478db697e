"""The model report: what the model cache holds for a checkpoint (``depthstream info``).

:func:`model_report` reads the checkpoint's cache entries (fp32 and int8, with int8's
self-check, its layers and fp32 and int8 timed on this machine) and says what ``auto``
uses and why. Starts no threads; touches files: reads the checkpoint (hashed when new)
and the model cache, and with ``precision`` makes that model (through the factory).
"""

from __future__ import annotations

import os
from typing import Any

from stream.core.errors import ConfigError
from stream.core.settings import ModelSettings
from stream.engines.base import default_threads
from stream.engines.cache import (
    fingerprint,
    fp32_entry,
    int8_entry,
    openvino_cache_dir,
    package_version,
)
from stream.engines.factory import create_backend
from stream.models.registry import get_spec
from stream.models.spec import ModelSpec

__all__ = ["model_report"]


def model_report(weights: str | os.PathLike | None = None, precision: str | None = None,
                 progress: bool = True, model: str | ModelSpec | None = None,
                 input_size: int | None = None) -> dict[str, Any]:
    """What the model cache holds for a checkpoint (``depthstream info``), as JSON.

    Args:
        weights: the checkpoint file; ``None`` looks where :func:`create_estimator` looks,
            without downloading.
        precision: also make the OpenVINO model of this precision when it is not cached
            (``fp32`` converts, ``int8`` converts, quantizes and times); ``None`` makes
            nothing.
        progress: print one-time work and progress bars to stderr.
        model: the network (a ``--model`` name or spec); default MiDaS v2.1 small.
        input_size: ``--input-size``: one input side for every use.

    Returns:
        The network input side per use (``input_sizes``: pictures, video files, live),
        the checkpoint, the cache, ``fp32_model`` and ``int8_model`` (folders or
        ``None``), ``int8_agreement`` (the self-check), ``int8_layers`` (the variant
        kept), ``int8_speed`` (fp32 and int8 milliseconds, the shape and the machine they
        were timed on), ``machine`` (this one) and ``auto`` (what it uses, and why).

    Raises:
        WeightsError: the checkpoint is missing (or, when a model must be made, unusable).
        ConfigError: ``precision`` is unknown or cannot be made here.
    """
    from stream.engines import quantize
    from stream.models.weights import check_file, resolve_path

    spec = get_spec(model)
    sides = {"pictures": spec.default_side(), "video files": spec.default_side(video=True),
             "live": spec.default_side(live=True)}
    if input_size is not None:  # one side for every use
        sides = dict.fromkeys(sides, spec.input.check_side(input_size))
    path = check_file(resolve_path(weights, spec.checkpoint, download_missing=False),
                      spec.checkpoint)
    root = openvino_cache_dir()
    if precision is not None:
        precision = ModelSettings(precision=precision).precision.value  # checked once
        create_backend("openvino", weights=path, precision=precision, progress=progress,
                       model=spec).close()
    source = fingerprint(path, root)
    threads = default_threads()
    report: dict[str, Any] = {
        "model": spec.name, "output": spec.output.value, "input_sizes": sides,
        "weights": str(source.path),
        "size_bytes": source.size, "sha256": source.digest,
        "cache": str(root), "openvino": package_version("openvino"),
        "nncf": package_version("nncf"), "threads": threads,
        "machine": quantize.machine_id(threads),
        "telemetry": "off in depthstream's processes (stream.core.privacy)",
        "fp32_model": None, "int8_model": None, "int8_agreement": None,
        "int8_layers": None, "int8_speed": None,
    }
    if source.weights is None:  # new or changed since its models were made
        report["auto"] = "fp32: no model made for this checkpoint yet (made on first use)"
        return report
    fp32 = fp32_entry(source, spec, root)
    report["fp32_model"] = str(fp32.path) if fp32.exists() else None
    try:
        int8 = int8_entry(source, spec, quantize.recipe_for(spec).digest(), root)
    except ConfigError as exc:  # the shipped frames are missing: int8 cannot be made
        report["auto"] = f"fp32: {exc}"
        return report
    if not int8.exists():
        report["auto"] = "fp32: no int8 model yet (--precision int8 makes one, once)"
        return report
    meta = int8.meta()
    check = quantize.Agreement.from_dict(meta.get("self_check"))
    speed = quantize.Speed.from_dict(meta.get("speed"))
    use, why = quantize.int8_verdict(check, speed, report["machine"])
    report.update(int8_model=str(int8.path), int8_layers=meta.get("layers"),
                  int8_agreement=None if check is None else check.to_dict(),
                  int8_speed=None if speed is None else speed.to_dict(),
                  auto=f"int8: {why}" if use else f"fp32: {why}")
    return report
