"""The factory: the one place that picks the engine, device, threads and precision.

:func:`create_backend` checks the choice once (:class:`stream.core.settings.ModelSettings`)
and builds :class:`~stream.engines.openvino_backend.OpenVinoBackend` or
:class:`~stream.engines.torch_backend.TorchBackend` for a model spec (what
``depthstream info`` shows of the model cache is :mod:`stream.engines.report`). Starts no
threads; touches files through the backends (the model cache, the checkpoint).

A backend is never swapped silently. ``auto`` falls back from OpenVINO to torch only for
the failures a fallback fixes, named in one warning line (:data:`FALLBACKS`): openvino
cannot be imported, or its CPU plugin does not run on this processor. Any other
OpenVINO failure stops with one line. A stop signal (Ctrl+C, SIGTERM, SIGHUP) that
arrives while a backend is made always stops: also when an engine turned the interrupt
into an ordinary exception (a C++ layer does), or swallowed it. A torch and torchvision
that do not match are named as such, with the fix.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

from stream.core.errors import ConfigError, StreamError
from stream.core.settings import BackendName, Device, ModelSettings, Precision
from stream.engines.base import ONE_SOURCE, Backend, last_line, say_to_stderr
from stream.engines.openvino_backend import OpenVinoBackend, import_openvino, load_weights
from stream.engines.torch_backend import TorchBackend
from stream.models.registry import get_spec
from stream.models.spec import ModelSpec

__all__ = ["FALLBACKS", "TORCH_MISMATCH", "create_backend"]

log = logging.getLogger(__name__)

FALLBACKS = {
    "import": "openvino cannot be imported",
    "cpu": "OpenVINO's CPU plugin does not run on this processor",
}
"""The OpenVINO failures ``auto`` falls back to torch for (torch runs where they happen)."""

TORCH_MISMATCH = ("torch and torchvision do not match (torch {torch}, torchvision {vision}: "
                  "{reason}); install a matching pair from one index, e.g. pip install "
                  "--force-reinstall torch torchvision --index-url "
                  "https://download.pytorch.org/whl/cpu")
"""The one line for a broken torch/torchvision pair (a CPU torch with a CUDA torchvision)."""

_MISMATCH_RE = re.compile(r"(?:operator )?torchvision::\w+ does not exist|PyTorch and "
                          r"torchvision versions are incompatible")
_STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP")
                      if hasattr(signal, n))
Noted = list[tuple[int, Callable[..., Any]]]


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
        name: ``auto`` (OpenVINO on the cpu; torch, with one warning line, where one
            of :data:`FALLBACKS` stops OpenVINO, and on cuda), ``openvino`` or ``torch``.
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
        ConfigError: unknown name, device, precision or model, a backend or precision
            that is not available here, or torch and torchvision that do not match.
        WeightsError: the checkpoint is needed and not usable.
        StreamError: ``auto``: OpenVINO failed otherwise than :data:`FALLBACKS` (one line).
        KeyboardInterrupt: a stop signal arrived meanwhile (also one an engine turned
            into an ordinary exception or swallowed).

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
    with _noting_stop_signals() as noted:
        try:
            backend = _build(choice, state_dict, options, noted)
        except Exception as exc:  # noqa: BLE001 - an interrupt in disguise, or a broken torch
            _stop_if_interrupted(exc, noted)
            _raise_if_torch_mismatch(exc)
            raise
        if noted:  # an engine swallowed the interrupt and went on: stop here
            backend.close()
            _stop_if_interrupted(None, noted)
    return backend


def _build(choice: ModelSettings, state_dict: dict | None, options: dict[str, Any],
           noted: Noted) -> Backend:
    """The backend ``choice`` names; ``auto`` falls back to torch only for :data:`FALLBACKS`."""
    spec = options["model"]
    if choice.backend is BackendName.OPENVINO or choice.precision is Precision.INT8:
        return OpenVinoBackend(state_dict, **options)
    if choice.backend is BackendName.AUTO and choice.device is Device.CPU:
        try:
            import_openvino()
            return OpenVinoBackend(state_dict, **options)
        except StreamError:
            raise  # a user's mistake (weights, calibration frames): torch would not do better
        except Exception as exc:  # noqa: BLE001 - openvino's failures derive from Exception
            _stop_if_interrupted(exc, noted)
            _raise_if_torch_mismatch(exc)
            why = _fallback_reason(exc)
            if why is None:
                raise StreamError(f"OpenVINO failed: {last_line(exc)} (--backend torch runs "
                                  f"without it)") from exc
            _warn(f"{why} ({last_line(exc)}); using torch (slower)",
                  options["say"] is not None)
    return TorchBackend(load_weights(state_dict, options["weights"], spec),
                        device=choice.device.value, threads=options["threads"], model=spec)


def _fallback_reason(exc: Exception) -> str | None:
    """Which of :data:`FALLBACKS` ``exc`` is, or None (then there is no fallback)."""
    if isinstance(exc, ImportError):
        return FALLBACKS["import"]
    try:
        devices = import_openvino().Core().available_devices
    except Exception:  # noqa: BLE001 - the runtime cannot even list its devices here
        devices = []
    return FALLBACKS["cpu"] if "CPU" not in devices else None


def _warn(message: str, to_stderr: bool) -> None:
    """One warning line: on stderr for the command line, else to the log."""
    if to_stderr:
        say_to_stderr(f"warning: {message}")
    else:
        log.warning("%s", message)


def _raise_if_torch_mismatch(exc: BaseException) -> None:
    """Raise the one-line :data:`TORCH_MISMATCH` error when ``exc`` comes from one."""
    cause: BaseException | None = exc
    while cause is not None:
        match = _MISMATCH_RE.search(str(cause))
        if match:
            from stream.engines.cache import package_version

            raise ConfigError(TORCH_MISMATCH.format(
                torch=package_version("torch"), vision=package_version("torchvision"),
                reason=match[0])) from exc
        cause = cause.__cause__ or cause.__context__


def _stop_if_interrupted(exc: BaseException | None, noted: Noted) -> None:
    """Re-raise the interrupt behind ``exc`` (its cause), or the first stop signal noted."""
    cause = exc
    while cause is not None:
        if isinstance(cause, KeyboardInterrupt):
            raise cause
        cause = cause.__cause__ or cause.__context__
    if noted:
        signum, handler = noted[0]
        handler(signum, None)  # raises what the handler raises (KeyboardInterrupt and kin)
        raise KeyboardInterrupt


@contextlib.contextmanager
def _noting_stop_signals() -> Iterator[Noted]:
    """Note every stop signal that arrives in the block and stops the program.

    The handlers in place still run; a signal counts when its handler raised (Ctrl+C's
    KeyboardInterrupt, the command line's stop on SIGTERM). Only Python handlers are
    wrapped (an ignored signal stays ignored), only in the main thread (where Python runs
    them); a handler the block's code replaced is left alone.
    """
    noted: Noted = []
    if threading.current_thread() is not threading.main_thread():
        yield noted
        return
    wrapped = {}
    for signum in _STOP_SIGNALS:
        handler = signal.getsignal(signum)
        if callable(handler):
            wrapped[signum] = (handler, functools.partial(_note, noted, handler))
            signal.signal(signum, wrapped[signum][1])
    try:
        yield noted
    finally:
        for signum, (handler, wrapper) in wrapped.items():
            if signal.getsignal(signum) is wrapper:
                signal.signal(signum, handler)


def _note(noted: Noted, handler: Callable[..., Any], signum: int, frame: Any) -> None:
    """Run ``handler``; note the signal when it stops the program (it raised)."""
    try:
        handler(signum, frame)
    except BaseException:
        noted.append((signum, handler))
        raise
