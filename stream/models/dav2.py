"""Model: Depth Anything V2 Small (DINOv2 ViT-S/14 encoder + DPT head) as ``torch.nn.Module`` s.

Module names follow the official checkpoints (``depth_anything_v2_vits.pth`` and the metric
``depth_anything_v2_metric_{hypersim,vkitti}_vits.pth``), so their state dicts load unchanged
with ``strict=True``. Everything is plain torch (no timm, no fused attention) so that
OpenVINO converts the network with dynamic height and width.

Two details decide whether the output equals the reference:

* The 37x37 position embeddings are resized as DINOv2 does it: bicubic (A = -0.75,
  ``align_corners=False``, no antialias) with the *scale factor* ``(n + 0.1) / 37``, not
  with the target size ``n``. The source coordinate of output index ``i`` is therefore
  ``(i + 0.5) * 37 / (n + 0.1) - 0.5``. The resize is written as two small interpolation
  matrices computed from the runtime number of patches, so one converted model serves every
  input size. At exactly 37x37 patches the reference skips the resize; so does this.
* Depth-to-picture resizes are bilinear with ``align_corners=True``.

OpenVINO: ``openvino.convert_model(model.eval(), example_input=torch.zeros(1, 3, 266, 350),
input=[(-1, 3, -1, -1)])`` gives one model for every batch and input size (or ``reshape`` it
to a static size); compile it with ``{"INFERENCE_PRECISION_HINT": "f32"}``, since on CPUs
with bf16 support OpenVINO's default precision misses the reference by about 10 %.

The input rule (keep aspect, both sides at least 518, multiples of 14, bicubic on the
float64 picture) and the output resize are data in the model specs
(:mod:`stream.models.registry`), applied by :mod:`stream.models.transforms`. Starts no
threads; touches no files.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stream.models.blocks import ResidualConvUnit

__all__ = [
    "DepthAnythingV2Small",
    "DinoV2Small",
    "DPTHead",
    "PATCH",
]

PATCH = 14
"""Side of a ViT patch in pixels; network inputs are multiples of it."""
EMBED = 384
DEPTH = 12
HEADS = 6
GRID = 37
"""Side of the trained position-embedding grid (518 / 14)."""
TAKE = (2, 5, 8, 11)
"""Blocks (0-based) whose normalised outputs feed the DPT head."""
FEATURES = 64
OUT_CHANNELS = (48, 96, 192, 384)
_CUBIC_A = -0.75
_POS_OFFSET = 0.1


# ---------------------------------------------------------------------------------------------
# Encoder: DINOv2 ViT-S/14


class PatchEmbed(nn.Module):
    """14x14 stride-14 convolution from RGB to 384 channels (``patch_embed.proj``)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, EMBED, PATCH, stride=PATCH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 3, h, w]`` to a patch grid ``[N, 384, h // 14, w // 14]``."""
        return self.proj(x)


class Attention(nn.Module):
    """Multi-head self-attention with one ``qkv`` linear layer and an output ``proj``."""

    def __init__(self, dim: int = EMBED, heads: int = HEADS) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, T, C]`` tokens to ``[N, T, C]``."""
        n, t, c = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = torch.softmax(q @ k.transpose(-2, -1), dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(n, t, c)
        return self.proj(out)


class Mlp(nn.Module):
    """``fc1`` (x4 width), exact (erf) GELU, ``fc2``."""

    def __init__(self, dim: int = EMBED, ratio: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, ratio * dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(ratio * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    """Per-channel scale ``gamma`` of a residual branch."""

    def __init__(self, dim: int = EMBED) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block with layer scale (layer norm eps 1e-6)."""

    def __init__(self, dim: int = EMBED) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim)
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


def _axis_index(line: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(0, 1, ..., n - 1)`` and ``n`` as float tensors, ``n`` the length of the 1-d ``line``.

    Derived from the data, not from ``line.shape``, so that a traced or converted graph
    follows the runtime size.
    """
    ones = torch.ones_like(line, dtype=torch.float32)
    return torch.cumsum(ones, 0) - 1.0, ones.sum()


def _bicubic_matrix(index: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """``[n, 37]`` matrix of DINOv2's bicubic position-embedding resize along one axis.

    Row ``i`` holds the four cubic-convolution weights (A = -0.75) at the source coordinate
    ``(i + 0.5) * 37 / (n + 0.1) - 0.5``, taps clamped to the border, as torch's
    ``F.interpolate(scale_factor=(n + 0.1) / 37, mode="bicubic", align_corners=False)``.
    """
    src = (index + 0.5) * (GRID / (n + _POS_OFFSET)) - 0.5
    base = torch.floor(src)
    t = src - base
    a = _CUBIC_A
    s = 1.0 + t  # distance to the tap at base - 1 (in [1, 2])
    r = 2.0 - t  # distance to the tap at base + 2 (in [1, 2])
    u = 1.0 - t  # distance to the tap at base + 1 (in [0, 1])
    weights = (
        ((a * s - 5.0 * a) * s + 8.0 * a) * s - 4.0 * a,
        ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0,
        ((a + 2.0) * u - (a + 3.0)) * u * u + 1.0,
        ((a * r - 5.0 * a) * r + 8.0 * a) * r - 4.0 * a,
    )
    columns = torch.arange(GRID, dtype=torch.float32)[None, :]
    matrix = torch.zeros_like(index)[:, None] + torch.zeros_like(columns)
    for k, w in enumerate(weights):
        tap = torch.clamp(base + float(k - 1), 0.0, GRID - 1.0)
        matrix = matrix + w[:, None] * (tap[:, None] == columns).to(torch.float32)
    return matrix


def _position_matrices(grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column resize matrices (``[ph, 37]``, ``[pw, 37]``) for ``grid`` ``[N, C, ph, pw]``.

    Identities at exactly 37x37 patches, where the reference uses the table unchanged.
    """
    iy, ny = _axis_index(grid[0, 0, :, 0])
    ix, nx = _axis_index(grid[0, 0, 0, :])
    columns = torch.arange(GRID, dtype=torch.float32)[None, :]
    native = (ny == GRID) & (nx == GRID)
    wy = torch.where(native, (iy[:, None] == columns).to(torch.float32), _bicubic_matrix(iy, ny))
    wx = torch.where(native, (ix[:, None] == columns).to(torch.float32), _bicubic_matrix(ix, nx))
    return wy, wx


class DinoV2Small(nn.Module):
    """DINOv2 ViT-S/14 (384 wide, 12 blocks, 6 heads, cls token, no register tokens).

    ``forward(x)`` returns the outputs of blocks 2, 5, 8 and 11 after the final norm, class
    token dropped, each as a ``[N, 384, h // 14, w // 14]`` grid.
    """

    def __init__(self) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, EMBED))
        self.pos_embed = nn.Parameter(torch.zeros(1, GRID * GRID + 1, EMBED))
        self.mask_token = nn.Parameter(torch.zeros(1, EMBED))  # training only; kept for keys
        self.patch_embed = PatchEmbed()
        self.blocks = nn.ModuleList(Block() for _ in range(DEPTH))
        self.norm = nn.LayerNorm(EMBED, eps=1e-6)

    def patch_positions(self, grid: torch.Tensor) -> torch.Tensor:
        """Position embeddings of the patches of ``grid`` (``[N, C, ph, pw]``): ``[1, ph*pw, C]``.

        Bicubic resize of the 37x37 table with DINOv2's scale factor ``(n + 0.1) / 37``;
        at 37x37 patches the table itself, as in the reference.
        """
        wy, wx = _position_matrices(grid)
        table = self.pos_embed[0, 1:].reshape(GRID, GRID * EMBED)
        rows = (wy @ table).reshape(-1, GRID, EMBED)  # [ph, 37, C]
        pos = torch.matmul(wx, rows)  # [ph, pw, C]
        return pos.reshape(1, -1, EMBED)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[N, 3, h, w]`` to four ``[N, 384, h // 14, w // 14]`` feature grids."""
        grid = self.patch_embed(x)
        n, c, ph, pw = grid.shape
        tokens = grid.flatten(2).transpose(1, 2)
        tokens = tokens + self.patch_positions(grid)
        cls = self.cls_token + self.pos_embed[:, :1]
        x = torch.cat((cls.expand(n, -1, -1), tokens), dim=1)
        features = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in TAKE:
                out = self.norm(x)[:, 1:]
                features.append(out.transpose(1, 2).reshape(n, c, ph, pw))
        return features


# ---------------------------------------------------------------------------------------------
# Decoder: DPT head


class FusionBlock(nn.Module):
    """Fuse a coarse path with an optional skip input, upsample, project with a 1x1 conv.

    ``out = x (+ resConfUnit1(skip))``, then ``resConfUnit2``, then bilinear
    (``align_corners=True``) to the size of ``like`` or, without it, x2, then ``out_conv``.
    """

    def __init__(self, features: int = FEATURES) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, 1, bias=True)
        self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(
        self,
        x: torch.Tensor,
        skip: torch.Tensor | None = None,
        like: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Fuse ``x`` (and ``skip``), upsample to ``like``'s height and width (or x2)."""
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        if like is None:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)
        else:
            x = F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=True)
        return self.out_conv(x)


def _scratch() -> nn.Module:
    """``depth_head.scratch``: 3x3 no-bias convs to 64 features, fusion blocks, output convs."""
    scratch = nn.Module()
    for i, channels in enumerate(OUT_CHANNELS, start=1):
        setattr(scratch, f"layer{i}_rn", nn.Conv2d(channels, FEATURES, 3, padding=1, bias=False))
    for i in range(1, 5):
        setattr(scratch, f"refinenet{i}", FusionBlock(FEATURES))
    scratch.output_conv1 = nn.Conv2d(FEATURES, FEATURES // 2, 3, padding=1)
    return scratch


class DPTHead(nn.Module):
    """DPT decoder of Depth Anything V2 Small (64 features, ``use_clstoken=False``).

    ``forward(features, like)`` takes the four encoder grids and the network input (for its
    height and width) and returns ``[N, 1, h, w]`` before the final activation's scaling:
    ReLU (relative head) or Sigmoid (metric head; the caller multiplies by the max depth).
    """

    def __init__(self, metric: bool = False) -> None:
        super().__init__()
        self.projects = nn.ModuleList(nn.Conv2d(EMBED, c, 1) for c in OUT_CHANNELS)
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(OUT_CHANNELS[0], OUT_CHANNELS[0], 4, stride=4),
            nn.ConvTranspose2d(OUT_CHANNELS[1], OUT_CHANNELS[1], 2, stride=2),
            nn.Identity(),
            nn.Conv2d(OUT_CHANNELS[3], OUT_CHANNELS[3], 3, stride=2, padding=1),
        ])
        self.scratch = _scratch()
        self.scratch.output_conv2 = nn.Sequential(
            nn.Conv2d(FEATURES // 2, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 1, 1),
            nn.Sigmoid() if metric else nn.ReLU(),
        )

    def forward(self, features: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
        """Four ``[N, 384, ph, pw]`` grids to ``[N, 1, h, w]``, ``(h, w)`` of ``like``."""
        s = self.scratch
        layers = [
            rn(resize(project(f)))
            for f, project, resize, rn in zip(
                features,
                self.projects,
                self.resize_layers,
                (s.layer1_rn, s.layer2_rn, s.layer3_rn, s.layer4_rn),
            )
        ]
        path = s.refinenet4(layers[3], like=layers[2])
        path = s.refinenet3(path, layers[2], like=layers[1])
        path = s.refinenet2(path, layers[1], like=layers[0])
        path = s.refinenet1(path, layers[0])
        out = s.output_conv1(path)
        out = F.interpolate(out, size=like.shape[-2:], mode="bilinear", align_corners=True)
        return s.output_conv2(out)


# ---------------------------------------------------------------------------------------------
# The network


class DepthAnythingV2Small(nn.Module):
    """Depth Anything V2 Small: :class:`DinoV2Small` (``pretrained``) + :class:`DPTHead`.

    Args:
        max_depth: ``None`` for the relative network (final ReLU; relative inverse depth,
            larger = nearer, arbitrary scale), or the metric network's range in metres
            (final Sigmoid times ``max_depth``: 20 for the Hypersim (indoor) checkpoint, 80
            for the Virtual KITTI (outdoor) one; larger = farther).

    ``forward(x)`` takes float32 ``[N, 3, h, w]`` with ``h`` and ``w`` multiples of 14 (see
    :func:`preprocess`) and returns ``[N, h, w]``. The state dict has exactly the official
    checkpoints' 239 keys; load them with ``load_state_dict(sd, strict=True)``.
    """

    def __init__(self, max_depth: float | None = None) -> None:
        super().__init__()
        if max_depth is not None and not max_depth > 0:
            raise ValueError(f"max_depth must be positive or None, got {max_depth!r}")
        self.max_depth = None if max_depth is None else float(max_depth)
        self.pretrained = DinoV2Small()
        self.depth_head = DPTHead(metric=max_depth is not None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 3, h, w]`` normalised RGB to ``[N, h, w]`` depth.

        Raises:
            ValueError: ``h`` or ``w`` is not a multiple of 14 (checked in eager mode only).
        """
        if not torch.jit.is_tracing() and (x.shape[-2] % PATCH or x.shape[-1] % PATCH):
            raise ValueError(f"height and width must be multiples of 14, got {tuple(x.shape)}")
        features = self.pretrained(x)
        depth = self.depth_head(features, x).squeeze(1)
        if self.max_depth is not None:
            depth = depth * self.max_depth
        return depth
