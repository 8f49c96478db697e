"""Model: the MiDaS v2.1 small network (``MidasSmall``) as ``torch.nn.Module`` s.

The backbone is timm's ``tf_efficientnet_lite3`` (TensorFlow "same" padding, batch-norm
eps 1e-3), created without pretrained weights; the decoder is written here. Module names
follow the official checkpoint ``midas_v21_small_256.pt`` so that its state dict loads
unchanged with ``strict=True``. Starts no threads and touches no files: weights come from
:mod:`stream.models.weights`.
"""

from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from torch import nn

from stream.models.blocks import ResidualConvUnit

__all__ = ["MidasSmall", "ResidualConvUnit", "FusionBlock"]


class FusionBlock(nn.Module):
    """Fuse a coarse path with an optional skip input, upsample x2, project channels.

    ``out = x0 (+ resConfUnit1(skip))``, then ``resConfUnit2``, then bilinear x2 with
    ``align_corners=True`` (as the reference), then a 1x1 ``out_conv``.
    """

    def __init__(self, features: int, out_features: int) -> None:
        super().__init__()
        self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, out_features, 1, bias=True)

    def forward(self, x: torch.Tensor,  # noqa: D102
                skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class _Upsample2x(nn.Module):
    """Bilinear x2 with ``align_corners=False`` (parameter-free slot in ``output_conv``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def _efficientnet_lite3_stages() -> nn.Module:
    """The four encoder stages, named as in the official checkpoint (``pretrained.layerN``)."""
    net = timm.create_model("tf_efficientnet_lite3", pretrained=False)
    stages = nn.Module()
    # timm folds the stem activation into bn1; the reference keeps it as a separate,
    # parameter-free module at index 2, so an Identity holds that index.
    stages.layer1 = nn.Sequential(net.conv_stem, net.bn1, nn.Identity(), *net.blocks[0:2])
    stages.layer2 = nn.Sequential(*net.blocks[2:3])
    stages.layer3 = nn.Sequential(*net.blocks[3:5])
    stages.layer4 = nn.Sequential(*net.blocks[5:7])
    return stages


class MidasSmall(nn.Module):
    """MiDaS v2.1 small: EfficientNet-Lite3 encoder, RefineNet-style decoder, 64 features.

    ``forward(x)`` takes float32 ``[N, 3, h, w]`` (h, w multiples of 32; see
    :func:`stream.models.transforms.preprocess`) and returns ``[N, h, w]`` relative inverse depth
    (larger = nearer, non-negative, arbitrary scale and shift).

    Example:
        >>> model = MidasSmall().eval()
        >>> model.load_state_dict(stream.models.weights.load_state_dict())  # doctest: +SKIP
    """

    encoder_channels = (32, 48, 136, 384)

    def __init__(self, features: int = 64) -> None:
        super().__init__()
        self.pretrained = _efficientnet_lite3_stages()
        widths = (features, features * 2, features * 4, features * 8)  # "expand"
        scratch = nn.Module()
        for i, (cin, cout) in enumerate(zip(self.encoder_channels, widths), start=1):
            setattr(scratch, f"layer{i}_rn", nn.Conv2d(cin, cout, 3, padding=1, bias=False))
        scratch.refinenet4 = FusionBlock(widths[3], widths[2])
        scratch.refinenet3 = FusionBlock(widths[2], widths[1])
        scratch.refinenet2 = FusionBlock(widths[1], widths[0])
        scratch.refinenet1 = FusionBlock(widths[0], widths[0])
        scratch.output_conv = nn.Sequential(
            nn.Conv2d(features, features // 2, 3, padding=1),
            _Upsample2x(),
            nn.Conv2d(features // 2, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 1, 1),
            nn.ReLU(),  # non-negative output
        )
        self.scratch = scratch

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        enc, s = self.pretrained, self.scratch
        l1 = enc.layer1(x)
        l2 = enc.layer2(l1)
        l3 = enc.layer3(l2)
        l4 = enc.layer4(l3)
        path = s.refinenet4(s.layer4_rn(l4))
        path = s.refinenet3(path, s.layer3_rn(l3))
        path = s.refinenet2(path, s.layer2_rn(l2))
        path = s.refinenet1(path, s.layer1_rn(l1))
        return s.output_conv(path).squeeze(1)
