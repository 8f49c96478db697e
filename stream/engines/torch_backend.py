"""The torch engine: eager PyTorch in ``inference_mode``, CPU or CUDA; the reference.

Builds the network from its model spec (:meth:`stream.models.spec.ModelSpec.build`) and
loads the checked weights strictly. Starts no threads of its own (torch keeps a pool);
touches no files.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stream.core.errors import ConfigError, StreamError
from stream.core.settings import CUDA_UNAVAILABLE
from stream.engines.base import Backend, as_input, default_threads
from stream.models.registry import get_spec
from stream.models.spec import ModelSpec

__all__ = ["TorchBackend"]


class TorchBackend(Backend):
    """Eager PyTorch in ``inference_mode``: the reference and the fallback.

    On the CPU the model and input are channels-last: oneDNN's convolutions then skip
    their layout reorders (less time per frame, same output).

    Args:
        state_dict: checked weights (:func:`stream.models.weights.load_state_dict`).
        device: ``cpu`` or ``cuda``.
        threads: CPU threads for torch (a process-wide setting); default all cores.
        model: the network (a ``--model`` name or spec); default MiDaS v2.1 small.

    Raises:
        ConfigError: unknown device, or ``cuda`` without a CUDA GPU.
    """

    name = "torch"

    def __init__(self, state_dict: dict, device: str = "cpu", threads: int | None = None,
                 model: str | ModelSpec | None = None) -> None:
        import torch

        from stream.core.settings import Device, parse_enum

        device = parse_enum(Device, device, "device").value
        if device == "cuda" and not torch.cuda.is_available():
            raise ConfigError(CUDA_UNAVAILABLE)
        if device == "cpu":
            torch.set_num_threads(threads or default_threads())
        else:
            _cuda_convs_in_fp32(torch)
        self._torch = torch
        self.device = device
        self.spec = get_spec(model)
        self.model: Any = self.spec.build()
        self.model.load_state_dict(state_dict, strict=True)
        self.model.to(device)
        self._memory_format = torch.channels_last if device == "cpu" else torch.contiguous_format
        self.model.to(memory_format=self._memory_format)

    def infer(self, x: np.ndarray) -> np.ndarray:  # noqa: D102
        if self.model is None:
            raise StreamError("the torch backend is closed")
        torch = self._torch
        with torch.inference_mode():
            t = torch.from_numpy(as_input(x)).to(self.device)
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
