"""Backends: the one place that picks torch or OpenVINO, device and threads.

A backend turns preprocessed network input (float32 ``[1, 3, h, w]`` numpy) into the
network output (float32 ``[h, w]`` numpy). ``imap`` runs a stream of inputs and yields
outputs in input order; a backend may keep several requests in flight there.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import numpy as np
import torch

from .errors import ConfigError
from .model import MidasSmall

__all__ = ["Backend", "TorchBackend", "BACKENDS", "create_backend", "default_threads"]

T = TypeVar("T")

BACKENDS = ("auto", "openvino", "torch")


def default_threads() -> int:
    """Cores this process may use (``os.sched_getaffinity`` where available)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


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
    """Eager PyTorch in ``inference_mode``: the reference and the fallback."""

    name = "torch"

    def __init__(self, state_dict: dict, device: str = "cpu", threads: int | None = None) -> None:
        if device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA GPU is available to torch here; use --device cpu")
        if device not in ("cpu", "cuda"):
            raise ConfigError(f"unknown device {device!r}; use cpu or cuda")
        if device == "cpu":
            torch.set_num_threads(threads or default_threads())
        self.device = device
        self.model = MidasSmall().eval()
        self.model.load_state_dict(state_dict, strict=True)
        self.model.to(device)

    def infer(self, x: np.ndarray) -> np.ndarray:  # noqa: D102
        with torch.inference_mode():
            out = self.model(torch.from_numpy(x).to(self.device))
        return out[0].float().cpu().numpy()


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
        ConfigError: unknown name, or a backend that is not available here.
    """
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if state_dict is None:
        raise ConfigError("create_backend needs a state dict (stream.weights.load_state_dict())")
    return TorchBackend(state_dict, device=device, threads=threads)
