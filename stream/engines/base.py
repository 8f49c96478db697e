"""Backend interface: what every engine offers (``infer``, ``submit``, ``imap``).

A backend turns preprocessed network input (float32 ``[1, 3, h, w]`` numpy) into the
network output (float32 ``[h, w]`` numpy). ``imap`` runs a stream of inputs and yields
outputs in input order; a backend may keep several requests in flight there. Every
backend carries the :class:`~stream.models.spec.ModelSpec` of the network it runs
(``spec``), which the estimator reads for preprocessing and the output resize.
The engines are :mod:`stream.engines.torch_backend` and
:mod:`stream.engines.openvino_backend`; :mod:`stream.engines.factory` picks one.
Starts no threads; touches no files.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Iterator
from enum import Enum
from typing import Any, TypeVar

import numpy as np

from stream.models.registry import MIDAS_SMALL_SPEC
from stream.models.spec import ModelSpec

__all__ = ["ONE_SOURCE", "Backend", "Job", "PerformanceHint", "default_threads", "as_input",
           "last_line", "say_to_stderr", "quiet"]

T = TypeVar("T")

ONE_SOURCE = "give a state dict or a weights file: one of them, not both"

log = logging.getLogger(__name__)


def default_threads() -> int:
    """Cores this process may use (``os.sched_getaffinity`` where available)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def say_to_stderr(message: str) -> None:
    """Print a one-line notice to stderr (one-time work, the precision chosen)."""
    print(f"depthstream: {message}", file=sys.stderr, flush=True)


def quiet(message: str) -> None:
    """Log a notice at INFO level (the default when nobody asked to be told)."""
    log.info("%s", message)


def as_input(x: np.ndarray) -> np.ndarray:
    """``x`` as a C-contiguous float32 array (both backends read its memory directly)."""
    return np.ascontiguousarray(x, dtype=np.float32)


def last_line(exc: BaseException) -> str:
    """The last line of an exception's text (a library's multi-line message), at most 200."""
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
    spec: ModelSpec = MIDAS_SMALL_SPEC

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
