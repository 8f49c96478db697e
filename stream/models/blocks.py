"""Blocks: ``torch.nn.Module`` s that more than one network family is built from.

The residual convolution unit of the DPT-style decoders (MiDaS and Depth Anything both
refine their fused features with it). Module names follow the official checkpoints.
Starts no threads; touches no files.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ResidualConvUnit"]


class ResidualConvUnit(nn.Module):
    """ReLU, 3x3 conv, ReLU, 3x3 conv, plus the input (no batch norm in the small models)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1, bias=True)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = self.conv1(F.relu(x))
        out = self.conv2(F.relu(out))
        return out + x
