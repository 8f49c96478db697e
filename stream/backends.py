"""Backends: the one place that picks the engine (torch, OpenVINO), device, threads, precision.

A backend turns preprocessed network input (float32 ``[1, 3, h, w]`` numpy) into the
network output (float32 ``[h, w]`` numpy). ``imap`` runs a stream of inputs and yields
outputs in input order; a backend may keep several requests in flight there.

* :class:`TorchBackend`: eager PyTorch in ``inference_mode``, CPU or CUDA; the reference.
* :class:`OpenVinoBackend`: :class:`~stream.model.MidasSmall` converted in-process with
  ``openvino.convert_model`` (no ONNX file) once per checkpoint and kept in the model
  cache (:mod:`stream.model_cache`); a warm start reads the cached model and imports
  neither torch nor timm. Precision ``int8`` uses an NNCF-quantized copy
  (:mod:`stream.quantize`); ``auto`` uses it only where its self-check against fp32
  passed. ``infer`` uses a latency-compiled model (one request); ``imap`` keeps several
  requests in flight on a throughput-compiled model for files, or one request on the
  latency model when ``live``; ``submit`` starts one input on the latency model and
  returns at once (the caller works while the network runs).

Starts no threads of its own (the engines keep thread pools); touches files: the model
cache, and the checkpoint when a conversion or torch needs it.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from .errors import ConfigError, StreamError
from .model_cache import (
    ENV_CACHE,
    CheckpointId,
    compiled_cache_dir,
    default_cache_dir,
    fingerprint,
    fp32_entry,
    openvino_cache_dir,
    remember,
)

if TYPE_CHECKING:  # imported lazily: a warm start pays for neither
    import openvino

    from .model import MidasSmall

__all__ = [
    "Backend",
    "Job",
    "TorchBackend",
    "OpenVinoBackend",
    "PerformanceHint",
    "BACKENDS",
    "PRECISIONS",
    "ENV_CACHE",
    "create_backend",
    "default_cache_dir",
    "default_threads",
    "model_report",
    "openvino_available",
]

T = TypeVar("T")

BACKENDS = ("auto", "openvino", "torch")
PRECISIONS = ("auto", "fp32", "int8")

# Any shape of the right rank traces the same graph; H and W stay dynamic in the IR.
_EXAMPLE_SHAPE = (1, 3, 192, 256)

log = logging.getLogger(__name__)


def default_threads() -> int:
    """Cores this process may use (``os.sched_getaffinity`` where available)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def _import_openvino() -> Any:
    """``import openvino`` with its telemetry off; ``ImportError`` when not installed."""
    from .privacy import disable_telemetry

    disable_telemetry()
    import openvino

    return openvino


def openvino_available() -> bool:
    """Whether ``import openvino`` works here."""
    try:
        _import_openvino()
    except ImportError:
        return False
    return True


def _say_to_stderr(message: str) -> None:
    print(f"depthstream: {message}", file=sys.stderr, flush=True)


def _quiet(message: str) -> None:
    log.info("%s", message)


def _as_input(x: np.ndarray) -> np.ndarray:
    """``x`` as a C-contiguous float32 array (both backends read its memory directly)."""
    return np.ascontiguousarray(x, dtype=np.float32)


def _last_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1][:200] if text else type(exc).__name__


class PerformanceHint(Enum):
    """OpenVINO's ``PERFORMANCE_HINT``: one fast request, or several requests sharing cores."""

    LATENCY = "LATENCY"
    THROUGHPUT = "THROUGHPUT"


class Job:
    """An input given to :meth:`Backend.submit`: its ``output``, or the started ``request``."""

    def __init__(self, output: np.ndarray | None = None, request: Any = None) -> None:
        self._output, self._request = output, request

    def wait(self) -> np.ndarray:
        """The network output, as ``infer`` returns it; waits for a running request."""
        if self._request is not None:
            self._request.wait()
            # The output lives in the request, which the next input reuses: copy it out.
            self._output = self._request.get_output_tensor(0).data[0].copy()
            self._request = None
        return self._output


class Backend:
    """Interface: ``infer`` one input, ``imap`` a stream of tagged inputs in order.

    ``submit`` starts one input and returns a :class:`Job`; one submission is in flight
    at a time per backend (the caller waits for its job before it submits again).
    :attr:`submits_in_background` says whether ``submit`` returns before the work is
    done (the default runs ``infer`` at once).
    """

    name: str = "base"
    device: str = "cpu"
    precision: str = "fp32"
    submits_in_background: bool = False

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Network output float32 ``[h, w]`` for a float32 ``[1, 3, h, w]`` input."""
        raise NotImplementedError

    def submit(self, x: np.ndarray) -> Job:
        """Start ``x``; the job's ``wait()`` returns what ``infer(x)`` would."""
        return Job(self.infer(x))

    def imap(self, items: Iterable[tuple[T, np.ndarray]]) -> Iterator[tuple[T, np.ndarray]]:
        """Yield ``(tag, output)`` for each ``(tag, input)``, in input order."""
        for tag, x in items:
            yield tag, self.infer(x)

    def describe(self) -> dict[str, Any]:
        """What runs: engine, device, precision (and for int8 its self-check), as JSON."""
        return {"backend": self.name, "device": self.device, "precision": self.precision}

    def close(self) -> None:
        """Release what the backend holds (safe to call twice)."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class TorchBackend(Backend):
    """Eager PyTorch in ``inference_mode``: the reference and the fallback.

    On the CPU the model and input are channels-last: oneDNN's convolutions then skip
    their layout reorders (less time per frame, same output).

    Args:
        state_dict: checked weights (:func:`stream.weights.load_state_dict`).
        device: ``cpu`` or ``cuda``.
        threads: CPU threads for torch (a process-wide setting); default all cores.

    Raises:
        ConfigError: unknown device, or ``cuda`` without a CUDA GPU.
    """

    name = "torch"

    def __init__(self, state_dict: dict, device: str = "cpu", threads: int | None = None) -> None:
        import torch

        from .model import MidasSmall

        if device not in ("cpu", "cuda"):
            raise ConfigError(f"unknown device {device!r}; use cpu or cuda")
        if device == "cuda" and not torch.cuda.is_available():
            raise ConfigError(
                "--device cuda: no CUDA GPU is available to torch here; use --device cpu"
            )
        if device == "cpu":
            torch.set_num_threads(threads or default_threads())
        else:
            _cuda_convs_in_fp32(torch)
        self._torch = torch
        self.device = device
        self.model: MidasSmall | None = MidasSmall().eval()
        self.model.load_state_dict(state_dict, strict=True)
        self.model.to(device)
        self._memory_format = torch.channels_last if device == "cpu" else torch.contiguous_format
        self.model.to(memory_format=self._memory_format)

    def infer(self, x: np.ndarray) -> np.ndarray:  # noqa: D102
        if self.model is None:
            raise StreamError("the torch backend is closed")
        torch = self._torch
        with torch.inference_mode():
            t = torch.from_numpy(_as_input(x)).to(self.device)
            out = self.model(t.contiguous(memory_format=self._memory_format))
        return np.ascontiguousarray(out[0].float().cpu().numpy())

    def close(self) -> None:  # noqa: D102
        self.model = None


def _cuda_convs_in_fp32(torch: Any) -> None:
    """Make cuDNN convolutions full fp32 (torch lets them run in TF32 on Ampere and later).

    TF32 moves this network's output beyond the golden tolerance; the small network is
    fast on a GPU either way, so the reference output is worth more. The setting
    is process-wide, like ``torch.set_num_threads``.
    """
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):  # torch >= 2.9
        conv.fp32_precision = "ieee"
    else:
        torch.backends.cudnn.allow_tf32 = False


class OpenVinoBackend(Backend):
    """MiDaS small on OpenVINO's CPU plugin: converted once per checkpoint, then read back.

    The model on disk keeps height and width dynamic, so one conversion serves every
    aspect ratio; each input shape gets its own statically reshaped compiled model, made
    lazily on first use and kept (see :meth:`_compiled`), and OpenVINO's blob cache
    keeps compiled models across starts.

    Args:
        state_dict: checked weights (:func:`stream.weights.load_state_dict`), or ``None``
            with ``weights``.
        live: ``imap`` keeps one latency-hinted request in flight (lowest delay per
            frame) instead of several throughput-hinted ones (most frames per second).
        threads: ``INFERENCE_NUM_THREADS``; default all cores this process may use.
        cache_dir: the model cache; default ``default_cache_dir() / "openvino"``.
        jobs: requests in flight in ``imap`` when not ``live``; default OpenVINO's
            ``OPTIMAL_NUMBER_OF_INFER_REQUESTS`` plus one (no stream waits for Python).
        weights: the checkpoint file (instead of ``state_dict``): when its model is
            cached, it is recognised by size, time and hash and never loaded.
        precision: ``fp32``, ``int8`` (quantized with NNCF, once per checkpoint) or
            ``auto`` (int8 where its self-check passed, else fp32).
        say: prints one-line notices (one-time work, the precision chosen); default:
            logged at INFO level.
        progress: show NNCF's progress bars while quantizing.

    Raises:
        ConfigError: ``openvino`` cannot be imported, ``jobs`` < 1, an unknown precision,
            or int8 cannot be made here (no NNCF, no samples).
        WeightsError: a conversion is needed and the checkpoint is not usable.
    """

    name = "openvino"
    device = "cpu"
    submits_in_background = True

    def __init__(
        self,
        state_dict: dict | None = None,
        live: bool = False,
        threads: int | None = None,
        cache_dir: str | os.PathLike | None = None,
        jobs: int | None = None,
        *,
        weights: str | os.PathLike | None = None,
        precision: str = "fp32",
        say: Callable[[str], None] | None = None,
        progress: bool = False,
    ) -> None:
        try:
            ov = _import_openvino()
        except ImportError as exc:
            raise ConfigError(
                f"--backend openvino: openvino cannot be imported ({exc}); "
                "pip install openvino, or use --backend torch"
            ) from exc
        if jobs is not None and jobs < 1:
            raise ConfigError(f"jobs must be at least 1, not {jobs}")
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {precision!r}; choose one of "
                              f"{', '.join(PRECISIONS)}")
        if (state_dict is None) == (weights is None):
            raise ConfigError("OpenVinoBackend needs a state dict or a weights file (one)")
        self._ov = ov
        self.live = live
        self.threads = threads or default_threads()
        self.jobs = jobs
        self.cache_dir = Path(cache_dir) if cache_dir else openvino_cache_dir()
        self.compiled_dir = compiled_cache_dir(self.cache_dir)
        self._say = say or _quiet
        self._core: openvino.Core | None = ov.Core()
        self.source = (fingerprint(weights, self.cache_dir) if weights is not None
                       else CheckpointId.from_state_dict(state_dict))
        if self.source.weights is None:  # a new or changed file: load it (torch) once
            state_dict = _load_weights(None, weights)
            self.source = remember(self.source, state_dict_digest(state_dict), self.cache_dir)
        self.fp32_entry = fp32_entry(self.source, self.cache_dir)
        self.cache_entry = self.fp32_entry
        self._ir: openvino.Model | None = self._load_or_convert(state_dict, weights)
        self.agreement: Any = None
        self.reason = "fp32 asked for"
        if precision != "fp32":
            self._pick_precision(precision, progress)
        self._compiled_models: dict[tuple[tuple[int, ...], PerformanceHint], Any] = {}
        self._latency_requests: dict[tuple[int, ...], Any] = {}

    # -- conversion, quantization and cache ---------------------------------------------

    def _load_or_convert(self, state_dict: dict | None,
                         weights: str | os.PathLike | None) -> openvino.Model:
        """The cached model when it reads back whole, else a conversion saved to the cache."""
        entry = self.fp32_entry
        if entry.exists():
            try:
                return _read_ir(self._core, entry.xml)
            except (RuntimeError, OSError, ValueError) as exc:
                log.warning("OpenVINO cache %s is unreadable (%s); converting again",
                            entry.path, _last_line(exc))
        state_dict = _load_weights(state_dict, weights)  # checked key by key
        self._say("preparing the network for this CPU, once (about 10 s; cached in "
                  f"{self.cache_dir})")
        model = _convert(self._ov, state_dict)
        from .model_cache import package_version

        meta = {"precision": "fp32", "weights": self.source.weights,
                "openvino": package_version("openvino"), "torch": package_version("torch"),
                "timm": package_version("timm")}
        # fp32 weights: the default fp16 compression moves outputs measurably.
        entry.write(lambda folder: self._ov.save_model(model, str(folder / "model.xml"),
                                                       compress_to_fp16=False), meta)
        return model

    def _pick_precision(self, precision: str, progress: bool) -> None:
        """Switch to the int8 model when asked for, or for ``auto`` when its check passed.

        ``int8`` makes the model when it is not cached (NNCF, about a minute, once per
        checkpoint). ``auto`` never pays that cost by itself: it uses an int8 model made
        earlier whose self-check passed, else fp32.
        """
        from . import quantize

        if precision == "auto":
            made = quantize.find_cached(self._core, self.source, self.cache_dir)
            if made is None:
                self.reason = ("fp32: no int8 model made for this checkpoint yet "
                               "(--precision int8 makes one, once)")
                return
        else:
            made = quantize.load_or_quantize(self._ov, self._core, self._ir, self.source,
                                             self.cache_dir, self.threads, progress=progress,
                                             say=self._say)
        self.agreement = made.agreement
        passed, why = quantize.agreement_passes(made.agreement)
        if precision == "auto" and not passed:
            self.reason = f"fp32: {why}"
            self._say(f"using fp32: {why}")
            return
        if not passed:  # asked for by name: used, with a warning each time
            self._say(f"warning: {why}; --precision auto would use fp32")
        self.reason = "int8 asked for" if precision == "int8" else why
        self.precision = "int8"
        self.cache_entry = made.entry
        self._ir = made.model

    def describe(self) -> dict[str, Any]:  # noqa: D102
        out = super().describe()
        out["reason"] = self.reason
        out["model"] = str(self.cache_entry.path)
        if self.agreement is not None:
            out["int8_agreement"] = self.agreement.to_dict()
        return out

    # -- compiled models --------------------------------------------------------------

    def _compiled(self, shape: tuple[int, ...], hint: PerformanceHint) -> Any:
        """The compiled model for one input shape and hint, made on first use.

        A static shape per input size, not the dynamic IR as is: reshaping folds timm's
        "same"-padding shape arithmetic (Conv2dSame) into constants, and the dynamic-shape
        model ran slower per frame. A reshape and compile costs far less than a
        conversion, so one dynamic IR is converted and cached on disk, and compiled per
        shape in memory.
        """
        if self._core is None:
            raise StreamError("the OpenVINO backend is closed")
        key = (shape, hint)
        compiled = self._compiled_models.get(key)
        if compiled is None:
            model = self._ir.clone()
            model.reshape({0: list(shape)})
            config = {
                "PERFORMANCE_HINT": hint.value,
                "INFERENCE_NUM_THREADS": self.threads,
                # OpenVINO defaults to bf16 on CPUs with AMX; keep fp32 so that every
                # machine gives the reference output (the 1e-4 golden tolerance).
                "INFERENCE_PRECISION_HINT": "f32",
                # OpenVINO's blob cache: a later start reads the compiled model back.
                "CACHE_DIR": str(self.compiled_dir),
            }
            compiled = self._core.compile_model(model, "CPU", config)
            self._compiled_models[key] = compiled
        return compiled

    def requests_in_flight(self, shape: tuple[int, ...] = _EXAMPLE_SHAPE) -> int:
        """How many requests ``imap`` keeps in flight for inputs of ``shape``."""
        if self.live:
            return 1
        if self.jobs is not None:
            return self.jobs
        compiled = self._compiled(tuple(shape), PerformanceHint.THROUGHPUT)
        return max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))) + 1

    # -- inference --------------------------------------------------------------------

    def infer(self, x: np.ndarray) -> np.ndarray:  # noqa: D102
        return self.submit(x).wait()

    def submit(self, x: np.ndarray) -> Job:
        """Start ``x`` on the latency model's one request for its shape (``infer``'s too)."""
        if (request := self._latency_requests.get(x.shape)) is None:
            request = self._compiled(x.shape, PerformanceHint.LATENCY).create_infer_request()
            self._latency_requests[x.shape] = request
        request.start_async({0: _as_input(x)})  # copies the input in (share_inputs=False)
        return Job(request=request)

    def imap(self, items: Iterable[tuple[T, np.ndarray]]) -> Iterator[tuple[T, np.ndarray]]:
        """Yield ``(tag, output)`` for each ``(tag, input)`` in input order.

        Live: one request at a time on the latency model (each frame as soon as possible).
        Files: up to :meth:`requests_in_flight` requests run at once on the throughput
        model; the oldest is waited for first, so order is kept without reordering.
        """
        if self.live:
            yield from super().imap(items)
            return
        pending: deque[tuple[T, Any, tuple[int, ...]]] = deque()
        idle: dict[tuple[int, ...], list[Any]] = {}
        limit: int | None = None

        def finish() -> tuple[T, np.ndarray]:
            tag, request, shape = pending.popleft()
            request.wait()
            out = request.get_output_tensor(0).data[0].copy()
            idle.setdefault(shape, []).append(request)
            return tag, out

        try:
            for tag, x in items:
                x = _as_input(x)
                compiled = self._compiled(x.shape, PerformanceHint.THROUGHPUT)
                if limit is None:
                    limit = self.requests_in_flight(x.shape)
                while len(pending) >= limit:
                    yield finish()
                free = idle.get(x.shape)
                request = free.pop() if free else compiled.create_infer_request()
                request.start_async({0: x})  # copies x (share_inputs=False)
                pending.append((tag, request, x.shape))
            while pending:
                yield finish()
        finally:
            # Stopped early (generator closed, or an error): let running requests end
            # before they are released.
            for _, request, _ in pending:
                request.wait()

    def close(self) -> None:  # noqa: D102
        self._latency_requests.clear()
        self._compiled_models.clear()
        self._ir = None
        self._core = None




def _read_ir(core: Any, xml: Path) -> openvino.Model:
    """Read a cached IR, refusing early what is plainly not one.

    ``read_model`` would otherwise try every frontend (TensorFlow, ONNX, ...) in turn on
    a damaged file and print their parse errors to stderr.
    """
    with open(xml, "rb") as f:
        if not f.read(64).lstrip().startswith(b"<?xml"):
            raise ValueError(f"{xml} is not an OpenVINO IR file")
    model = core.read_model(str(xml))
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(f"{xml} has {len(model.inputs)} inputs, {len(model.outputs)} outputs")
    if model.inputs[0].get_partial_shape().rank.get_length() != 4:
        raise ValueError(f"{xml} input is not [1, 3, h, w]")
    return model


def _convert(ov: Any, state_dict: dict) -> openvino.Model:
    """Convert :class:`MidasSmall` with ``state_dict`` to an OpenVINO model, H and W dynamic."""
    import torch

    from .model import MidasSmall

    model = MidasSmall().eval()
    model.load_state_dict(state_dict, strict=True)
    example = torch.zeros(_EXAMPLE_SHAPE)
    with torch.inference_mode(), warnings.catch_warnings():
        # torch.jit.trace is deprecated and warns about the traced size arithmetic of
        # timm's Conv2dSame; OpenVINO keeps that arithmetic as shape ops, checked by tests.
        warnings.simplefilter("ignore")
        return ov.convert_model(
            model, example_input=example, input=[ov.PartialShape([1, 3, -1, -1])]
        )


def _load_weights(state_dict: dict | None, weights: str | os.PathLike | None) -> dict:
    """``state_dict``, or the checked weights read from the file ``weights`` (torch)."""
    if state_dict is not None:
        return state_dict
    from .weights import load_file

    return load_file(weights)


def state_dict_digest(state: dict) -> str:
    """:func:`stream.weights.state_dict_digest` (imported when a file is loaded)."""
    from .weights import state_dict_digest as digest

    return digest(state)


def create_backend(
    name: str = "auto",
    state_dict: dict | None = None,
    device: str = "cpu",
    live: bool = False,
    threads: int | None = None,
    *,
    weights: str | os.PathLike | None = None,
    precision: str = "fp32",
    progress: bool = False,
) -> Backend:
    """Build a backend for ``state_dict`` or the checkpoint file ``weights``.

    Args:
        name: ``auto`` (OpenVINO when importable and device is cpu, else torch),
            ``openvino`` or ``torch``.
        state_dict: checked weights (:func:`stream.weights.load_state_dict`).
        device: ``cpu`` or ``cuda`` (torch only).
        live: prefer latency (one request in flight) over throughput.
        threads: CPU threads; default all cores this process may use.
        weights: a checkpoint file instead of ``state_dict``: OpenVINO reads its cached
            model without loading it (no torch import).
        precision: ``fp32``, ``int8`` (OpenVINO only) or ``auto`` (int8 on OpenVINO where
            its self-check against fp32 passed, else fp32).
        progress: print one-time work and the precision chosen to stderr, with
            progress bars.

    Raises:
        ConfigError: unknown name, device or precision, or a backend or precision that is
            not available here.
        WeightsError: the checkpoint is needed and not usable.

    Example:
        >>> backend = create_backend("auto", weights="midas_v21_small_256.pt")  # doctest: +SKIP
        >>> out = backend.infer(preprocess_array(rgb))  # doctest: +SKIP
    """
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"unknown device {device!r}; use cpu or cuda")
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose one of "
                          f"{', '.join(PRECISIONS)}")
    if state_dict is None and weights is None:
        raise ConfigError("create_backend needs a state dict (stream.weights.load_state_dict()) "
                          "or a weights file")
    if state_dict is not None and weights is not None:
        raise ConfigError("give create_backend a state dict or a weights file, not both")
    if name == "openvino" and device != "cpu":
        raise ConfigError(
            "--backend openvino runs on the cpu; use --backend torch for --device cuda"
        )
    if precision == "int8" and (name == "torch" or device != "cpu"):
        raise ConfigError("--precision int8 runs on OpenVINO (cpu); "
                          "drop --backend torch / --device cuda or use fp32")
    options = {"live": live, "threads": threads, "weights": weights, "precision": precision,
               "progress": progress, "say": _say_to_stderr if progress else None}
    if name == "openvino" or precision == "int8":
        return OpenVinoBackend(state_dict, **options)
    if name == "auto" and device == "cpu" and openvino_available():
        try:
            return OpenVinoBackend(state_dict, **options)
        except StreamError:
            raise  # a user's mistake (weights, samples): torch would not do better
        except Exception as exc:  # openvino's own failures derive from Exception directly
            log.warning("OpenVINO is not usable here (%s); using torch", _last_line(exc))
    return TorchBackend(_load_weights(state_dict, weights), device=device, threads=threads)


def model_report(weights: str | os.PathLike | None = None, precision: str | None = None,
                 progress: bool = True) -> dict[str, Any]:
    """What the model cache holds for a checkpoint (``depthstream info``), as JSON.

    Args:
        weights: the checkpoint file; ``None`` looks where :func:`create_estimator` looks,
            without downloading.
        precision: also make the OpenVINO model of this precision when it is not cached
            (``fp32`` converts, ``int8`` converts and quantizes); ``None`` makes nothing.
        progress: print one-time work and progress bars to stderr.

    Raises:
        WeightsError: the checkpoint is missing (or, when a model must be made, unusable).
        ConfigError: ``precision`` is unknown or cannot be made here.
    """
    from . import quantize
    from .model_cache import int8_entry, package_version
    from .weights import check_file, resolve_path

    path = check_file(resolve_path(weights, download_missing=False))
    root = openvino_cache_dir()
    if precision is not None:
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {precision!r}; choose one of "
                              f"{', '.join(PRECISIONS)}")
        create_backend("openvino", weights=path, precision=precision, progress=progress).close()
    source = fingerprint(path, root)
    report: dict[str, Any] = {
        "weights": str(source.path), "size_bytes": source.size, "sha256": source.digest,
        "cache": str(root), "openvino": package_version("openvino"),
        "nncf": package_version("nncf"), "threads": default_threads(),
        "telemetry": "off in depthstream's processes (stream.privacy)",
        "fp32_model": None, "int8_model": None, "int8_agreement": None,
    }
    if source.weights is None:  # new or changed since its models were made
        report["auto"] = "fp32: no model made for this checkpoint yet (made on first use)"
        return report
    fp32 = fp32_entry(source, root)
    report["fp32_model"] = str(fp32.path) if fp32.exists() else None
    try:
        int8 = int8_entry(source, quantize.DEFAULT_RECIPE.digest(), root)
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
