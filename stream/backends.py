"""Backends: the one place that picks torch or OpenVINO, device and threads.

A backend turns preprocessed network input (float32 ``[1, 3, h, w]`` numpy) into the
network output (float32 ``[h, w]`` numpy). ``imap`` runs a stream of inputs and yields
outputs in input order; a backend may keep several requests in flight there.

* :class:`TorchBackend`: eager PyTorch in ``inference_mode``, CPU or CUDA; the reference.
* :class:`OpenVinoBackend`: :class:`~stream.model.MidasSmall` converted in-process with
  ``openvino.convert_model`` (no ONNX file), kept in an on-disk cache keyed by the weights
  digest, the OpenVINO version and the model code, so that a second start skips the
  conversion. ``infer`` uses a latency-compiled model (one request); ``imap`` keeps
  several requests in flight on a throughput-compiled model for files, or one request
  on the latency model when ``live``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import warnings
from collections import deque
from collections.abc import Iterable, Iterator
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch

from .errors import ConfigError, StreamError
from .files import atomic_dir
from .model import MidasSmall
from .weights import state_dict_digest

if TYPE_CHECKING:  # openvino is imported lazily: a missing or broken install must not break torch
    import openvino

__all__ = [
    "Backend",
    "TorchBackend",
    "OpenVinoBackend",
    "PerformanceHint",
    "BACKENDS",
    "ENV_CACHE",
    "create_backend",
    "default_cache_dir",
    "default_threads",
    "openvino_available",
]

T = TypeVar("T")

BACKENDS = ("auto", "openvino", "torch")
ENV_CACHE = "DEPTHSTREAM_CACHE"

# Bump when the conversion recipe changes in a way the other key parts do not capture.
_IR_FORMAT = 1
# Any shape of the right rank traces the same graph; H and W stay dynamic in the IR.
_EXAMPLE_SHAPE = (1, 3, 192, 256)

log = logging.getLogger(__name__)


def default_threads() -> int:
    """Cores this process may use (``os.sched_getaffinity`` where available)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def default_cache_dir() -> Path:
    r"""Root of depthstream's caches: ``$DEPTHSTREAM_CACHE``, else the platform's user cache.

    Linux and others: ``$XDG_CACHE_HOME/depthstream`` (``~/.cache/depthstream``); macOS:
    ``~/Library/Caches/depthstream``; Windows: ``%LOCALAPPDATA%\depthstream\Cache``.
    """
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env).expanduser()
    home = Path.home()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA")
        return (Path(base) if base else home / "AppData" / "Local") / "depthstream" / "Cache"
    if sys.platform == "darwin":
        return home / "Library" / "Caches" / "depthstream"
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else home / ".cache") / "depthstream"


def openvino_available() -> bool:
    """Whether ``import openvino`` works here."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def _as_input(x: np.ndarray) -> np.ndarray:
    """``x`` as a C-contiguous float32 array (both backends read its memory directly)."""
    return np.ascontiguousarray(x, dtype=np.float32)


class PerformanceHint(Enum):
    """OpenVINO's ``PERFORMANCE_HINT``: one fast request, or several requests sharing cores."""

    LATENCY = "LATENCY"
    THROUGHPUT = "THROUGHPUT"


class Backend:
    """Interface: ``infer`` one input, ``imap`` a stream of tagged inputs in order."""

    name: str = "base"
    device: str = "cpu"

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Network output float32 ``[h, w]`` for a float32 ``[1, 3, h, w]`` input."""
        raise NotImplementedError

    def imap(self, items: Iterable[tuple[T, np.ndarray]]) -> Iterator[tuple[T, np.ndarray]]:
        """Yield ``(tag, output)`` for each ``(tag, input)``, in input order."""
        for tag, x in items:
            yield tag, self.infer(x)

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
        if device not in ("cpu", "cuda"):
            raise ConfigError(f"unknown device {device!r}; use cpu or cuda")
        if device == "cuda" and not torch.cuda.is_available():
            raise ConfigError(
                "--device cuda: no CUDA GPU is available to torch here; use --device cpu"
            )
        if device == "cpu":
            torch.set_num_threads(threads or default_threads())
        else:
            _cuda_convs_in_fp32()
        self.device = device
        self.model: MidasSmall | None = MidasSmall().eval()
        self.model.load_state_dict(state_dict, strict=True)
        self.model.to(device)
        self._memory_format = torch.channels_last if device == "cpu" else torch.contiguous_format
        self.model.to(memory_format=self._memory_format)

    def infer(self, x: np.ndarray) -> np.ndarray:  # noqa: D102
        if self.model is None:
            raise StreamError("the torch backend is closed")
        with torch.inference_mode():
            t = torch.from_numpy(_as_input(x)).to(self.device)
            out = self.model(t.contiguous(memory_format=self._memory_format))
        return np.ascontiguousarray(out[0].float().cpu().numpy())

    def close(self) -> None:  # noqa: D102
        self.model = None


def _cuda_convs_in_fp32() -> None:
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
    """MiDaS small on OpenVINO's CPU plugin, converted from :class:`MidasSmall` and cached.

    The IR on disk keeps height and width dynamic, so one conversion serves every aspect
    ratio; each input shape gets its own statically reshaped compiled model, made lazily on
    first use and kept (see :meth:`_compiled`).

    Args:
        state_dict: checked weights (:func:`stream.weights.load_state_dict`).
        live: ``imap`` keeps one latency-hinted request in flight (lowest delay per
            frame) instead of several throughput-hinted ones (most frames per second).
        threads: ``INFERENCE_NUM_THREADS``; default all cores this process may use.
        cache_dir: folder for converted models; default
            ``default_cache_dir() / "openvino"``.
        jobs: requests in flight in ``imap`` when not ``live``; default OpenVINO's
            ``OPTIMAL_NUMBER_OF_INFER_REQUESTS`` for the throughput-compiled model.

    Raises:
        ConfigError: ``openvino`` cannot be imported, or ``jobs`` < 1.
    """

    name = "openvino"
    device = "cpu"

    def __init__(
        self,
        state_dict: dict,
        live: bool = False,
        threads: int | None = None,
        cache_dir: str | os.PathLike | None = None,
        jobs: int | None = None,
    ) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise ConfigError(
                f"--backend openvino: openvino cannot be imported ({exc}); "
                "pip install openvino, or use --backend torch"
            ) from exc
        if jobs is not None and jobs < 1:
            raise ConfigError(f"jobs must be at least 1, not {jobs}")
        self._ov = ov
        self.live = live
        self.threads = threads or default_threads()
        self.jobs = jobs
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir() / "openvino"
        self._core: openvino.Core | None = ov.Core()
        self.cache_entry = self.cache_dir / _cache_key(state_dict, ov.get_version())
        self._ir: openvino.Model | None = self._load_or_convert(state_dict)
        self._compiled_models: dict[tuple[tuple[int, ...], PerformanceHint], Any] = {}
        self._latency_requests: dict[tuple[int, ...], Any] = {}

    # -- conversion and cache ---------------------------------------------------------

    def _load_or_convert(self, state_dict: dict) -> openvino.Model:
        """The cached IR when it reads back whole, else a fresh conversion saved to the cache."""
        xml = self.cache_entry / "model.xml"
        if xml.is_file():
            try:
                return self._read_ir(xml)
            except (RuntimeError, OSError, ValueError) as exc:
                reason = str(exc).strip().splitlines()[-1][:160] if str(exc).strip() else exc
                log.warning("OpenVINO cache %s is unreadable (%s); converting again",
                            self.cache_entry, reason)
        model = _convert(self._ov, state_dict)
        self._save_ir(model)
        return model

    def _read_ir(self, xml: Path) -> openvino.Model:
        # Refuse early what is plainly not IR XML: read_model would otherwise try every
        # frontend (TensorFlow, ONNX, ...) in turn and print their parse errors to stderr.
        with open(xml, "rb") as f:
            if not f.read(64).lstrip().startswith(b"<?xml"):
                raise ValueError(f"{xml} is not an OpenVINO IR file")
        model = self._core.read_model(str(xml))
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ValueError(f"{xml} has {len(model.inputs)} inputs, {len(model.outputs)} outputs")
        if model.inputs[0].get_partial_shape().rank.get_length() != 4:
            raise ValueError(f"{xml} input is not [1, 3, h, w]")
        return model

    def _save_ir(self, model: openvino.Model) -> None:
        """Write ``model.xml``/``model.bin`` to a temporary folder, then rename it into place.

        The pair becomes visible at once, never half written. A failure to write only costs
        the next start a conversion, so it is logged, not raised.
        """
        try:
            if self.cache_entry.exists():  # an unreadable entry being replaced
                shutil.rmtree(self.cache_entry, ignore_errors=True)
            with atomic_dir(self.cache_entry) as tmp:
                # fp32 weights: the default fp16 compression moves outputs measurably.
                self._ov.save_model(model, str(tmp / "model.xml"), compress_to_fp16=False)
        except (RuntimeError, OSError) as exc:
            log.warning("cannot write the OpenVINO cache entry %s (%s)", self.cache_entry, exc)

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
        return max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))

    # -- inference --------------------------------------------------------------------

    def infer(self, x: np.ndarray) -> np.ndarray:  # noqa: D102
        x = _as_input(x)
        request = self._latency_requests.get(x.shape)
        if request is None:
            request = self._compiled(x.shape, PerformanceHint.LATENCY).create_infer_request()
            self._latency_requests[x.shape] = request
        # infer copies the input in; the output lives in the request, so copy it out.
        return request.infer({0: x})[0][0].copy()

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


def _model_code_digest() -> str:
    """Short hash of what shapes the converted graph besides the weights: our model code."""
    import timm

    h = hashlib.sha256()
    h.update(Path(sys.modules[MidasSmall.__module__].__file__).read_bytes())
    h.update(f"timm {timm.__version__} torch {torch.__version__} format {_IR_FORMAT}".encode())
    return h.hexdigest()[:8]


def _cache_key(state_dict: dict, ov_version: str) -> str:
    """Cache entry name: weights digest, OpenVINO version, model code digest."""
    release = ov_version.split("-releases")[0]  # "2026.4.1-22982-e213a147257-releases/2026/4"
    version = "".join(c if c.isalnum() or c in "._" else "-" for c in release)
    return f"midas_small-{state_dict_digest(state_dict)}-ov{version}-{_model_code_digest()}"


def _convert(ov: Any, state_dict: dict) -> openvino.Model:
    """Convert :class:`MidasSmall` with ``state_dict`` to an OpenVINO model, H and W dynamic."""
    model = MidasSmall().eval()
    model.load_state_dict(state_dict, strict=True)
    example = torch.zeros(_EXAMPLE_SHAPE)
    log.info("converting MiDaS small to OpenVINO (once per weights and OpenVINO version)")
    with torch.inference_mode(), warnings.catch_warnings():
        # torch.jit.trace is deprecated and warns about the traced size arithmetic of
        # timm's Conv2dSame; OpenVINO keeps that arithmetic as shape ops, checked by tests.
        warnings.simplefilter("ignore")
        return ov.convert_model(
            model, example_input=example, input=[ov.PartialShape([1, 3, -1, -1])]
        )


def create_backend(
    name: str = "auto",
    state_dict: dict | None = None,
    device: str = "cpu",
    live: bool = False,
    threads: int | None = None,
) -> Backend:
    """Build a backend for ``state_dict``.

    Args:
        name: ``auto`` (OpenVINO when importable and device is cpu, else torch),
            ``openvino`` or ``torch``.
        state_dict: checked weights (:func:`stream.weights.load_state_dict`).
        device: ``cpu`` or ``cuda`` (torch only).
        live: prefer latency (one request in flight) over throughput.
        threads: CPU threads; default all cores this process may use.

    Raises:
        ConfigError: unknown name or device, or a backend that is not available here.

    Example:
        >>> backend = create_backend("auto", load_state_dict(), live=True)  # doctest: +SKIP
        >>> out = backend.infer(preprocess_array(rgb))  # doctest: +SKIP
    """
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"unknown device {device!r}; use cpu or cuda")
    if state_dict is None:
        raise ConfigError("create_backend needs a state dict (stream.weights.load_state_dict())")
    if name == "openvino" and device != "cpu":
        raise ConfigError(
            "--backend openvino runs on the cpu; use --backend torch for --device cuda"
        )
    if name == "openvino":
        return OpenVinoBackend(state_dict, live=live, threads=threads)
    if name == "auto" and device == "cpu" and openvino_available():
        try:
            return OpenVinoBackend(state_dict, live=live, threads=threads)
        except Exception as exc:  # openvino's own failures derive from Exception directly
            reason = str(exc).strip().splitlines()[-1][:160] if str(exc).strip() else repr(exc)
            log.warning("OpenVINO is not usable here (%s); using torch", reason)
    return TorchBackend(state_dict, device=device, threads=threads)
