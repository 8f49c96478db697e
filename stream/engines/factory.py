"""The factory: the one place that picks the engine, device, threads and precision.

:func:`create_backend` checks the choice once (:class:`stream.core.settings.ModelSettings`)
and builds :class:`~stream.engines.openvino_backend.OpenVinoBackend` or
:class:`~stream.engines.torch_backend.TorchBackend` for a model spec;
:func:`model_report` is what ``depthstream info`` shows of the model cache. Starts no
threads; touches files through the backends (the model cache, the checkpoint).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from stream.core.errors import ConfigError, StreamError
from stream.core.settings import BackendName, Device, ModelSettings, Precision
from stream.engines.base import ONE_SOURCE, Backend, default_threads, last_line, say_to_stderr
from stream.engines.cache import fingerprint, fp32_entry, openvino_cache_dir
from stream.engines.openvino_backend import OpenVinoBackend, load_weights, openvino_available
from stream.engines.torch_backend import TorchBackend
from stream.models.registry import get_spec
from stream.models.spec import ModelSpec

__all__ = ["create_backend", "model_report"]

log = logging.getLogger(__name__)


def create_backend(
    name: str | BackendName = "auto",
    state_dict: dict | None = None,
    device: str | Device = "cpu",
    live: bool = False,
    threads: int | None = None,
    *,
    weights: str | os.PathLike | None = None,
    precision: str | Precision = "fp32",
    progress: bool = False,
    model: str | ModelSpec | None = None,
) -> Backend:
    """Build a backend for ``state_dict`` or the checkpoint file ``weights``.

    Args:
        name: ``auto`` (OpenVINO when importable and device is cpu, else torch),
            ``openvino`` or ``torch``.
        state_dict: checked weights (:func:`stream.models.weights.load_state_dict`).
        device: ``cpu`` or ``cuda`` (torch only).
        live: prefer latency (one request in flight) over throughput.
        threads: CPU threads; default all cores this process may use.
        weights: a checkpoint file instead of ``state_dict``: OpenVINO reads its cached
            model without loading it (no torch import).
        precision: ``fp32``, ``int8`` (OpenVINO only) or ``auto`` (int8 on OpenVINO where
            its self-check against fp32 passed, else fp32).
        progress: print one-time work and the precision chosen to stderr, with
            progress bars.
        model: the network (a ``--model`` name or spec); default MiDaS v2.1 small.

    Raises:
        ConfigError: unknown name, device, precision or model, or a backend or precision
            that is not available here.
        WeightsError: the checkpoint is needed and not usable.

    Example:
        >>> backend = create_backend("auto", weights="midas_v21_small_256.pt")  # doctest: +SKIP
        >>> out = backend.infer(preprocess_array(rgb))  # doctest: +SKIP
    """
    choice = ModelSettings(backend=name, device=device, precision=precision)  # checked once
    spec = get_spec(model)
    if (state_dict is None) == (weights is None):
        raise ConfigError(ONE_SOURCE)
    options = {"live": live, "threads": threads, "weights": weights,
               "precision": choice.precision.value, "progress": progress,
               "say": say_to_stderr if progress else None, "model": spec}
    on_cpu = choice.device is Device.CPU
    if choice.backend is BackendName.OPENVINO or choice.precision is Precision.INT8:
        return OpenVinoBackend(state_dict, **options)
    if choice.backend is BackendName.AUTO and on_cpu and openvino_available():
        try:
            return OpenVinoBackend(state_dict, **options)
        except StreamError:
            raise  # a user's mistake (weights, samples): torch would not do better
        except Exception as exc:  # openvino's own failures derive from Exception directly
            log.warning("OpenVINO is not usable here (%s); using torch", last_line(exc))
    return TorchBackend(load_weights(state_dict, weights, spec), device=choice.device.value,
                        threads=threads, model=spec)


def model_report(weights: str | os.PathLike | None = None, precision: str | None = None,
                 progress: bool = True, model: str | ModelSpec | None = None) -> dict[str, Any]:
    """What the model cache holds for a checkpoint (``depthstream info``), as JSON.

    Args:
        weights: the checkpoint file; ``None`` looks where :func:`create_estimator` looks,
            without downloading.
        precision: also make the OpenVINO model of this precision when it is not cached
            (``fp32`` converts, ``int8`` converts and quantizes); ``None`` makes nothing.
        progress: print one-time work and progress bars to stderr.
        model: the network (a ``--model`` name or spec); default MiDaS v2.1 small.

    Raises:
        WeightsError: the checkpoint is missing (or, when a model must be made, unusable).
        ConfigError: ``precision`` is unknown or cannot be made here.
    """
    from stream.engines import quantize
    from stream.engines.cache import int8_entry, package_version
    from stream.models.weights import check_file, resolve_path

    spec = get_spec(model)
    path = check_file(resolve_path(weights, spec.checkpoint, download_missing=False),
                      spec.checkpoint)
    root = openvino_cache_dir()
    if precision is not None:
        precision = ModelSettings(precision=precision).precision.value  # checked once
        create_backend("openvino", weights=path, precision=precision, progress=progress,
                       model=spec).close()
    source = fingerprint(path, root)
    report: dict[str, Any] = {
        "model": spec.name, "output": spec.output.value, "weights": str(source.path),
        "size_bytes": source.size, "sha256": source.digest,
        "cache": str(root), "openvino": package_version("openvino"),
        "nncf": package_version("nncf"), "threads": default_threads(),
        "telemetry": "off in depthstream's processes (stream.core.privacy)",
        "fp32_model": None, "int8_model": None, "int8_agreement": None,
    }
    if source.weights is None:  # new or changed since its models were made
        report["auto"] = "fp32: no model made for this checkpoint yet (made on first use)"
        return report
    fp32 = fp32_entry(source, spec, root)
    report["fp32_model"] = str(fp32.path) if fp32.exists() else None
    try:
        int8 = int8_entry(source, spec, quantize.DEFAULT_RECIPE.digest(), root)
    except OSError:
        int8 = None
        report["auto"] = "fp32: the samples int8 calibrates on are not here"
    if int8 is not None:
        check = quantize.Agreement.from_dict(int8.meta().get("self_check"))
        passed, why = quantize.agreement_passes(check)
        report["int8_model"] = str(int8.path) if int8.exists() else None
        report["int8_agreement"] = check.to_dict() if check is not None else None
        if not int8.exists():
            report["auto"] = "fp32: no int8 model yet (--precision int8 makes one, once)"
        else:
            report["auto"] = f"int8: {why}" if passed else f"fp32: {why}"
    return report
