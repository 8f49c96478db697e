"""Settings: what a run is configured with, each value validated once, when it is made.

Starts no threads, touches no files, imports nothing heavy: a bad argument fails here,
before torch, timm, OpenVINO or PyAV are imported. The enums are the single list of
choices (the CLI's ``choices=`` come from them). Records, bottom-up:

* :class:`RenderSettings`: layout, overlay alpha, colormap, invert;
* :class:`ModelSettings`: weights, backend, device, precision;
* :class:`ExportSettings`: the raw depth folder, its format, unsmoothed or not;
* :class:`RunLimits`: duration, queue size, the ``--stats`` file;
* :class:`StreamSettings`: everything a conversion or live run is asked to do, with the
  records above as properties (its keyword constructor is the public API).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError

__all__ = [
    "BackendName",
    "Device",
    "Precision",
    "Layout",
    "RawFormat",
    "COLORMAP_NAMES",
    "DEFAULT_SMOOTH",
    "choices",
    "parse_enum",
    "smooth_strength",
    "RenderSettings",
    "ModelSettings",
    "ExportSettings",
    "RunLimits",
    "StreamSettings",
]

E = TypeVar("E", bound=Enum)

DEFAULT_SMOOTH = 0.8
"""Default temporal smoothing strength (chosen with ``benchmarks/temporal.py``)."""

COLORMAP_NAMES = ("inferno", "magma", "plasma", "viridis", "turbo", "jet", "bone", "gray")
"""Colormaps by name (near = bright in each); :mod:`stream.colormap` maps them to tables."""


class BackendName(Enum):
    """Inference engine: OpenVINO when installed (CPU), else torch; or one of them."""

    AUTO = "auto"
    OPENVINO = "openvino"
    TORCH = "torch"


class Device(Enum):
    """Where torch runs the network."""

    CPU = "cpu"
    CUDA = "cuda"


class Precision(Enum):
    """Network precision: ``auto`` picks int8 only where its self-check passed."""

    AUTO = "auto"
    FP32 = "fp32"
    INT8 = "int8"


class Layout(Enum):
    """What a window or video shows: the depth, picture and depth side by side, or a blend."""

    DEPTH = "depth"
    SIDE = "side"
    OVERLAY = "overlay"


class RawFormat(Enum):
    """Raw depth files per frame: 16-bit PNG, or 16-bit PNG plus float32 ``.npy``."""

    PNG = "png"
    NPY = "npy"


def choices(kind: type[Enum]) -> tuple[str, ...]:
    """The values of an enum, for ``argparse`` ``choices=``."""
    return tuple(str(m.value) for m in kind)


def parse_enum(kind: type[E], value: Any, what: str) -> E:
    """``kind(value)``, or a :class:`ConfigError` that lists the choices."""
    if isinstance(value, kind):
        return value
    try:
        return kind(value)
    except ValueError:
        raise ConfigError(f"unknown {what} {value!r}; choose one of "
                          f"{', '.join(choices(kind))}") from None


def smooth_strength(smooth: bool | float | None = None, off: bool = False) -> float:
    """The smoothing strength from the user's words.

    Args:
        smooth: ``True``/``None`` (default strength), ``False`` (off), or a strength 0..1.
        off: ``--no-smooth`` was given (contradicts a non-zero ``smooth``).

    Raises:
        ConfigError: not a number, out of 0..1, or contradicting ``off``.
    """
    if off:
        if smooth not in (None, False, 0):
            raise ConfigError("--no-smooth and --smooth contradict each other")
        return 0.0
    if smooth is None or smooth is True:
        return DEFAULT_SMOOTH
    if smooth is False:
        return 0.0
    try:
        value = float(smooth)
    except (TypeError, ValueError):
        raise ConfigError(f"smooth must be True, False or a strength, got {smooth!r}") from None
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ConfigError(f"smooth must be from 0 (off) to 1, got {smooth}")
    return value


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


@dataclass(frozen=True)
class RenderSettings:
    """How a depth frame becomes a picture.

    Attributes:
        layout: depth only, side by side (twice as wide), or depth blended over the picture.
        alpha: weight of the depth colours in the overlay, 0..1.
        cmap: one of :data:`COLORMAP_NAMES`.
        invert: show near as dark.
    """

    layout: Layout = Layout.DEPTH
    alpha: float = 0.5
    cmap: str = "inferno"
    invert: bool = False

    def __post_init__(self) -> None:
        _set(self, "layout", parse_enum(Layout, self.layout, "layout"))
        try:
            alpha = float(self.alpha)
        except (TypeError, ValueError):
            alpha = math.nan
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"alpha must be between 0 and 1, got {self.alpha}")
        if self.cmap not in COLORMAP_NAMES:
            raise ConfigError(
                f"unknown colormap {self.cmap!r}; choose one of {', '.join(COLORMAP_NAMES)}")


@dataclass(frozen=True)
class ModelSettings:
    """Which network runs where.

    Attributes:
        weights: checkpoint path; ``None`` looks in the usual places.
        backend: the inference engine.
        device: torch's device.
        precision: fp32, int8 (OpenVINO), or auto.
    """

    weights: str | None = None
    backend: BackendName = BackendName.AUTO
    device: Device = Device.CPU
    precision: Precision = Precision.AUTO

    def __post_init__(self) -> None:
        _set(self, "backend", parse_enum(BackendName, self.backend, "backend"))
        _set(self, "device", parse_enum(Device, self.device, "device"))
        _set(self, "precision", parse_enum(Precision, self.precision, "precision"))
        if self.weights is not None:
            _set(self, "weights", os.fspath(self.weights))
        if self.backend is BackendName.OPENVINO and self.device is Device.CUDA:
            raise ConfigError(
                "--backend openvino runs on the cpu; use --backend torch for --device cuda")
        if self.precision is Precision.INT8 and (self.backend is BackendName.TORCH
                                                 or self.device is Device.CUDA):
            raise ConfigError("--precision int8 runs on OpenVINO (cpu); "
                              "drop --backend torch / --device cuda or use fp32")


@dataclass(frozen=True)
class ExportSettings:
    """Raw depth written next to (or instead of) the video.

    Attributes:
        raw_dir: folder for a 16-bit PNG per frame and ``timestamps.csv``; ``None``: none.
        raw_format: PNG, or PNG and float32 ``.npy``.
        raw_unsmoothed: write the network's own per-frame depth, not the smoothed one.
    """

    raw_dir: Path | None = None
    raw_format: RawFormat = RawFormat.PNG
    raw_unsmoothed: bool = False

    def __post_init__(self) -> None:
        _set(self, "raw_format", parse_enum(RawFormat, self.raw_format, "raw format"))
        if self.raw_dir is not None:
            _set(self, "raw_dir", Path(self.raw_dir))


@dataclass(frozen=True)
class RunLimits:
    """How long a run goes on, how much it may hold, where its statistics go.

    Attributes:
        duration_s: stop after this many seconds; ``None`` runs to the end.
        queue_size: frames each file queue may hold (live queues hold one).
        stats_path: write the run's statistics as JSON here.
    """

    duration_s: float | None = None
    queue_size: int = 4
    stats_path: Path | None = None

    def __post_init__(self) -> None:
        if self.duration_s is not None and not (self.duration_s > 0
                                                and math.isfinite(self.duration_s)):
            raise ConfigError(f"duration must be positive, got {self.duration_s}")
        if int(self.queue_size) != self.queue_size or self.queue_size < 1:
            raise ConfigError(f"queue_size must be >= 1, got {self.queue_size}")
        if self.stats_path is not None:
            _set(self, "stats_path", Path(self.stats_path))


@dataclass(frozen=True)
class StreamSettings:
    """Everything a conversion or live run is asked to do (shared, read-only, by threads).

    The keyword constructor takes every value flat; :attr:`render`, :attr:`model`,
    :attr:`export` and :attr:`limits` group them, and each group validates its own.

    Attributes:
        layout, alpha, cmap, invert: see :class:`RenderSettings`.
        smooth: temporal smoothing strength from 0 (off) to 1.
        raw_unsmoothed, raw_dir, raw_format: see :class:`ExportSettings`.
        overwrite: replace existing outputs.
        backend, device, weights, precision: see :class:`ModelSettings`.
        duration_s, queue_size, stats_path: see :class:`RunLimits`.
    """

    layout: Layout = Layout.DEPTH
    alpha: float = 0.5
    cmap: str = "inferno"
    invert: bool = False
    smooth: float = DEFAULT_SMOOTH
    raw_unsmoothed: bool = False
    raw_dir: Path | None = None
    raw_format: RawFormat = RawFormat.PNG
    overwrite: bool = False
    backend: BackendName = BackendName.AUTO
    device: Device = Device.CPU
    weights: str | None = None
    duration_s: float | None = None
    queue_size: int = 4
    precision: Precision = Precision.AUTO
    stats_path: Path | None = None

    def __post_init__(self) -> None:
        _set(self, "smooth", smooth_strength(self.smooth))
        groups = {
            "render": RenderSettings(self.layout, self.alpha, self.cmap, self.invert),
            "model": ModelSettings(self.weights, self.backend, self.device, self.precision),
            "export": ExportSettings(self.raw_dir, self.raw_format, self.raw_unsmoothed),
            "limits": RunLimits(self.duration_s, self.queue_size, self.stats_path),
        }
        for group in groups.values():  # the flat fields take the checked, parsed values
            for name in group.__dataclass_fields__:
                _set(self, name, getattr(group, name))
        for name, group in groups.items():
            _set(self, f"_{name}", group)

    @property
    def render(self) -> RenderSettings:
        """Layout and colours."""
        return self._render  # type: ignore[attr-defined]

    @property
    def model(self) -> ModelSettings:
        """Weights, backend, device, precision."""
        return self._model  # type: ignore[attr-defined]

    @property
    def export(self) -> ExportSettings:
        """Raw depth export."""
        return self._export  # type: ignore[attr-defined]

    @property
    def limits(self) -> RunLimits:
        """Duration, queue size, statistics file."""
        return self._limits  # type: ignore[attr-defined]
