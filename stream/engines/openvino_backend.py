"""The OpenVINO engine: the network converted once per checkpoint, then read back.

:class:`OpenVinoBackend` converts the spec's network in-process with
``openvino.convert_model`` (no ONNX file) once per checkpoint and keeps it in the model
cache (:mod:`stream.engines.cache`); a warm start reads the cached model and imports
neither torch nor timm. Precision ``int8`` uses an NNCF-quantized copy
(:mod:`stream.engines.quantize`); ``auto`` uses it only where its self-check against fp32
passed and it ran faster than fp32 on this machine. ``infer`` uses a latency-compiled
model (one request); ``imap`` keeps several requests in flight on a throughput-compiled
model for files, or one request on the latency model when ``live``; ``submit`` starts
one input on the latency model and returns at once (the caller works while the network
runs).

Starts no threads of its own (OpenVINO keeps a pool); touches files: the model cache,
and the checkpoint when a conversion needs it. ``import openvino`` happens with its
telemetry off (:mod:`stream.core.privacy`).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from stream.core.errors import ConfigError, StreamError
from stream.core.settings import Precision, parse_enum
from stream.engines.base import (
    ONE_SOURCE,
    Backend,
    Job,
    PerformanceHint,
    as_input,
    default_threads,
    last_line,
    quiet,
)
from stream.engines.cache import (
    CheckpointId,
    compiled_cache_dir,
    fingerprint,
    fp32_entry,
    openvino_cache_dir,
    remember,
)
from stream.models.registry import get_spec
from stream.models.spec import ModelSpec
from stream.models.weights import state_dict_digest

if TYPE_CHECKING:  # imported lazily: a warm start pays for neither
    import openvino

__all__ = ["OpenVinoBackend", "openvino_available", "import_openvino", "load_weights"]

T = TypeVar("T")

log = logging.getLogger(__name__)


def import_openvino() -> Any:
    """``import openvino`` with its telemetry off; ``ImportError`` when not installed."""
    from stream.core.privacy import disable_telemetry

    disable_telemetry()
    import openvino

    return openvino


def openvino_available() -> bool:
    """Whether ``import openvino`` works here."""
    try:
        import_openvino()
    except ImportError:
        return False
    return True


class OpenVinoBackend(Backend):
    """A network on OpenVINO's CPU plugin: converted once per checkpoint, then read back.

    The model on disk keeps height and width dynamic, so one conversion serves every
    aspect ratio; each input shape gets its own statically reshaped compiled model, made
    lazily on first use and kept (see :meth:`_compiled`), and OpenVINO's blob cache
    keeps compiled models across starts.

    Args:
        state_dict: checked weights (:func:`stream.models.weights.load_state_dict`), or ``None``
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
            ``auto`` (int8 where its self-check passed and it ran faster than fp32 on this
            machine, else fp32).
        say: prints one-line notices (one-time work, the precision chosen); default:
            logged at INFO level.
        progress: show NNCF's progress bars while quantizing.
        model: the network (a ``--model`` name or spec); default MiDaS v2.1 small.

    Raises:
        ConfigError: ``openvino`` cannot be imported, ``jobs`` < 1, an unknown precision,
            or int8 cannot be made here (no NNCF, shipped frames missing).
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
        model: str | ModelSpec | None = None,
    ) -> None:
        try:
            ov = import_openvino()
        except ImportError as exc:
            raise ConfigError(
                f"--backend openvino: openvino cannot be imported ({exc}); "
                "pip install openvino, or use --backend torch"
            ) from exc
        if jobs is not None and jobs < 1:
            raise ConfigError(f"jobs must be at least 1, not {jobs}")
        precision = parse_enum(Precision, precision, "precision").value
        if (state_dict is None) == (weights is None):
            raise ConfigError(ONE_SOURCE)
        self.spec = get_spec(model)
        self._ov = ov
        self.live = live
        self.threads = threads or default_threads()
        self.jobs = jobs
        self.cache_dir = Path(cache_dir) if cache_dir else openvino_cache_dir()
        self.compiled_dir = compiled_cache_dir(self.cache_dir)
        self._say = say or quiet
        self._core: openvino.Core | None = ov.Core()
        self.source = (fingerprint(weights, self.cache_dir) if weights is not None
                       else CheckpointId.from_state_dict(state_dict))
        if self.source.weights is None:  # a new or changed file: load it (torch) once
            state_dict = load_weights(None, weights, self.spec)
            self.source = remember(self.source, state_dict_digest(state_dict), self.cache_dir)
        self.fp32_entry = fp32_entry(self.source, self.spec, self.cache_dir)
        self.cache_entry = self.fp32_entry
        self._ir: openvino.Model | None = self._load_or_convert(state_dict, weights)
        self.agreement: Any = None
        self.speed: Any = None
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
                            entry.path, last_line(exc))
        state_dict = load_weights(state_dict, weights, self.spec)  # checked key by key
        self._say(f"preparing {self.spec.title} for this CPU, once (cached in "
                  f"{self.cache_dir})")
        model = _convert(self._ov, state_dict, self.spec)
        from stream.engines.cache import package_version

        meta = {"precision": "fp32", "model": self.spec.name, "weights": self.source.weights,
                "openvino": package_version("openvino"), "torch": package_version("torch"),
                "timm": package_version("timm")}
        # fp32 weights: the default fp16 compression moves outputs measurably.
        entry.write(lambda folder: self._ov.save_model(model, str(folder / "model.xml"),
                                                       compress_to_fp16=False), meta)
        return model

    def _pick_precision(self, precision: str, progress: bool) -> None:
        """Switch to the int8 model when asked for, or for ``auto`` where it is right here.

        ``int8`` makes the model when it is not cached (NNCF, about a minute, once per
        checkpoint) and times it against fp32 on this machine when it was not yet, and
        runs it, saying in one line when its self-check failed or it is slower here.
        ``auto`` never pays those costs by itself: it uses an int8 model made earlier
        whose self-check passed and that ran faster than fp32 on this machine
        (:func:`~stream.engines.quantize.int8_verdict`), else fp32.
        """
        from stream.engines import quantize

        if precision == "auto":
            made = quantize.find_cached(self._core, self.source, self.cache_dir,
                                        spec=self.spec)
            if made is None:
                self.reason = ("fp32: no int8 model made for this checkpoint yet "
                               "(--precision int8 makes one, once)")
                return
        else:
            made = quantize.load_or_quantize(self._ov, self._core, self._ir, self.source,
                                             self.cache_dir, self.threads, progress=progress,
                                             say=self._say, spec=self.spec)
        self.agreement, self.speed = made.agreement, made.speed
        use, why = quantize.int8_verdict(made.agreement, made.speed,
                                         quantize.machine_id(self.threads))
        if precision == "auto" and not use:
            self.reason = f"fp32: {why}"
            self._say(f"using fp32: {why}")
            return
        if not use:  # asked for by name: used, with a warning each time
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
        if self.speed is not None:
            out["int8_speed"] = self.speed.to_dict()
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

    def requests_in_flight(self, shape: tuple[int, ...] | None = None) -> int:
        """How many requests ``imap`` keeps in flight for inputs of ``shape``."""
        shape = shape or self.spec.example_shape()
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
        request.start_async({0: as_input(x)})  # copies the input in (share_inputs=False)
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
                x = as_input(x)
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


def _convert(ov: Any, state_dict: dict, spec: ModelSpec) -> openvino.Model:
    """Convert the spec's network with ``state_dict`` to an OpenVINO model, H and W dynamic."""
    import torch

    model = spec.build()
    model.load_state_dict(state_dict, strict=True)
    example = torch.zeros(spec.example_shape())
    with torch.inference_mode(), warnings.catch_warnings():
        # torch.jit.trace is deprecated and warns about the traced size arithmetic of
        # timm's Conv2dSame; OpenVINO keeps that arithmetic as shape ops, checked by tests.
        warnings.simplefilter("ignore")
        return ov.convert_model(
            model, example_input=example, input=[ov.PartialShape([1, 3, -1, -1])]
        )


def load_weights(state_dict: dict | None, weights: str | os.PathLike | None,
                 spec: ModelSpec) -> dict:
    """``state_dict``, or the checked weights read from the file ``weights`` (torch)."""
    if state_dict is not None:
        return state_dict
    from stream.models.weights import load_file

    return load_file(weights, spec.checkpoint)

