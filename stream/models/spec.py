"""Model specs: what a depth network is, as data (checkpoint, input rule, output kind).

A :class:`ModelSpec` is everything the rest of the package needs to know about a network:
where its checkpoint comes from and what it holds (:class:`Checkpoint`), how a picture
becomes its input (:class:`InputRule`), what its output means
(:class:`~stream.core.records.DepthKind`, which every frame carries) and how that output is
resized back to the picture, and how to build the ``torch.nn.Module``
(:meth:`ModelSpec.build`, which imports torch and the family's module only then).

Preprocessing, the torch backend, the OpenVINO converter, the model cache key, the
example shape and the int8 self-check read a spec; nothing outside ``stream.models``
names a network class. Pure data: imports nothing heavy, starts no threads, touches no
files except the schema file next to this module when asked for it.

Example:
    >>> from stream.models.registry import get_spec
    >>> spec = get_spec("midas-small")
    >>> spec.input.network_size(480, 640)
    (192, 256)
"""

from __future__ import annotations

import importlib
import json
import math
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from stream.core.errors import ConfigError
from stream.core.units import DepthKind

__all__ = ["Bound", "Checkpoint", "InputRule", "ModelSpec", "OutputResize"]


class Bound(Enum):
    """How the input side bounds a keep-aspect resize."""

    UPPER = "upper"
    """Both sides at most ``side`` (MiDaS's "upper_bound")."""
    LOWER = "lower"
    """Both sides at least ``side`` (Depth Anything's "lower_bound")."""


class OutputResize(Enum):
    """How the network's output is resized to the picture, as its reference does."""

    CUBIC = "cubic"
    """Bicubic (a = -0.75), pixel centres: ``F.interpolate(bicubic, align_corners=False)``."""
    LINEAR_CORNERS = "linear-corners"
    """Bilinear with corners aligned: ``F.interpolate(bilinear, align_corners=True)``."""


@dataclass(frozen=True)
class Checkpoint:
    """One official checkpoint file: where it comes from and what it holds.

    Attributes:
        name: human name (``MiDaS v2.1 small``).
        file_name: the official file name (also its name in the download cache).
        url: the official download address (plain HTTPS).
        schema_file: ``(key, shape, dtype)`` of every tensor, a JSON file next to this
            module; the strict check compares a loaded file with it.
        licence: the licence of the weights (SPDX name where there is one).
        size_bytes: about how large the download is (for the progress bar's guess).
    """

    name: str
    file_name: str
    url: str
    schema_file: str
    licence: str
    size_bytes: int = field(default=0)

    def schema(self) -> list[tuple[str, tuple[int, ...], str]]:
        """``(key, shape, dtype)`` of every tensor in the checkpoint, in file order."""
        raw = json.loads(Path(__file__).with_name(self.schema_file).read_text())
        return [(k, tuple(s), d) for k, s, d in raw]


@dataclass(frozen=True)
class InputRule:
    """How a picture becomes the network's input.

    Keep the aspect ratio and scale so that both sides are at most (``Bound.UPPER``) or at
    least (``Bound.LOWER``) ``side``; round each side to the nearest multiple of
    ``multiple_of`` (halves to even, as numpy does), falling back to the multiple that
    keeps the bound where rounding would break it; resize bicubically on the float
    picture; then ``(rgb / 255 - mean) / std``.

    Attributes:
        side: the default input side (MiDaS small 256, Depth Anything 518).
        multiple_of: each side is a multiple of this (32; the patch size 14).
        bound: whether ``side`` is an upper or a lower bound.
        mean_rgb: per-channel mean of the 0..1 picture.
        std_rgb: per-channel standard deviation of the 0..1 picture.
        float64: resize the picture in float64, as a reference that does so (Depth
            Anything); float32 lands within a few 1e-5 of it, close to the tolerance.
    """

    side: int
    multiple_of: int
    bound: Bound
    mean_rgb: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std_rgb: tuple[float, float, float] = (0.229, 0.224, 0.225)
    float64: bool = False

    def _round(self, x: float, side: int) -> int:
        m = self.multiple_of
        y = int(round(x / m) * m)  # Python's round is half to even, as np.round
        if self.bound is Bound.UPPER and y > side:
            y = int(math.floor(x / m) * m)
        elif self.bound is Bound.LOWER and y < side:
            y = int(math.ceil(x / m) * m)
        # The reference allows 0 for very thin pictures; a network needs one multiple.
        return max(y, m)

    def check_side(self, side: int | None = None) -> int:
        """The input side to use: ``side`` (``--input-size``), or :attr:`side` for ``None``.

        Raises:
            ConfigError: a side smaller than one multiple.
        """
        side = self.side if side is None else side
        if side < self.multiple_of:
            raise ConfigError(f"the input size must be at least {self.multiple_of}, not {side}")
        return side

    def network_size(self, height: int, width: int, side: int | None = None) -> tuple[int, int]:
        """Network input size ``(h, w)`` for a picture of ``height x width``.

        Args:
            height: picture height in pixels.
            width: picture width in pixels.
            side: the input side to use instead of :attr:`side` (``--input-size``).

        Raises:
            ConfigError: a size that is not positive.
        """
        if height <= 0 or width <= 0:
            raise ConfigError(f"picture size must be positive, got {height}x{width}")
        side = self.check_side(side)
        pick = min if self.bound is Bound.UPPER else max
        scale = pick(side / height, side / width)
        return self._round(scale * height, side), self._round(scale * width, side)


@dataclass(frozen=True)
class ModelSpec:
    """A depth network: its checkpoint, input rule, output and how to build it.

    Attributes:
        name: the ``--model`` name (``midas-small``, ``dav2-small``, ...).
        title: human name for messages and ``info``.
        checkpoint: the official checkpoint it loads unchanged.
        input: how a picture becomes its input.
        output: what its output means.
        resize: how the output is resized to the picture.
        builder: ``module:Class`` under ``stream.models`` that builds the network.
        build_args: keyword arguments of ``builder`` (a metric head's ``max_depth``).
        max_depth: the largest depth a metric network gives, in metres; ``None`` for
            relative output.
        example_side: the side of the example input traced for OpenVINO's converter
            (and the size int8 is calibrated and timed at).
        video_side: the default input side of ``convert`` (files); ``None``: ``side``.
        live_side: the default input side of live input (cameras, streams, ``live``):
            the largest that keeps the live goal on a 2-core CPU; ``None``: ``side``.
        int8_fp32_patterns: node-name patterns an int8 variant may leave in fp32 (a
            backbone whose matrix products gain nothing from int8 on CPUs without VNNI);
            empty: only the all-layers variant is tried.
        summary: one line on what the model is good for (``info``, the README's table).
    """

    name: str
    title: str
    checkpoint: Checkpoint
    input: InputRule
    output: DepthKind
    resize: OutputResize
    builder: str
    build_args: tuple[tuple[str, Any], ...] = ()
    max_depth: float | None = None
    example_side: int | None = None
    video_side: int | None = None
    live_side: int | None = None
    int8_fp32_patterns: tuple[str, ...] = ()
    summary: str = ""

    @property
    def metric(self) -> bool:
        """Whether the output is depth in metres."""
        return self.output is DepthKind.METRIC

    @property
    def module_name(self) -> str:
        """The dotted module that holds the network's code (for the cache key)."""
        return "stream.models." + self.builder.split(":")[0]

    @property
    def source_file(self) -> Path:
        """The network's own source file (the family's module)."""
        return Path(__file__).with_name(self.builder.split(":")[0] + ".py")

    @property
    def source_files(self) -> tuple[Path, ...]:
        """Every source file the network is built from (hashed into the model cache key)."""
        return self.source_file, Path(__file__).with_name("blocks.py")

    def default_side(self, live: bool = False, video: bool = False) -> int:
        """The input side used when none is asked for: live, video file, or picture."""
        side = self.live_side if live else self.video_side if video else None
        return self.input.side if side is None else side

    def example_shape(self) -> tuple[int, int, int, int]:
        """An input shape ``[1, 3, h, w]`` for tracing: a 480x640 picture at ``example_side``."""
        h, w = self.input.network_size(480, 640, self.example_side)
        return (1, 3, h, w)

    def build(self) -> Any:
        """A new ``torch.nn.Module`` of this network in eval mode (random weights).

        Imports torch and the family's module.
        """
        module_name, class_name = self.builder.split(":")
        module = importlib.import_module(f"stream.models.{module_name}")
        return getattr(module, class_name)(**dict(self.build_args)).eval()
