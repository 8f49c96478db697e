"""Colormap: depth to colour (near = warm/bright), and the display range used to scale it.

Starts no threads, touches no files. Pure array functions, plus :class:`DisplayRange`,
the running range streams use instead of per-frame min-max (single pictures keep
:func:`minmax`). MiDaS output is relative *inverse* depth, so larger values are nearer;
``colorize`` maps ``hi`` (nearest) to the bright end of the colormap. Do not invert
before colouring unless the user asks (``invert=True``).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from stream.core.errors import ConfigError

__all__ = ["COLORMAPS", "DisplayRange", "FixedRange", "colorize", "normalize_depth", "minmax"]

COLORMAPS: dict[str, int] = {
    "inferno": cv2.COLORMAP_INFERNO,
    "magma": cv2.COLORMAP_MAGMA,
    "plasma": cv2.COLORMAP_PLASMA,
    "viridis": cv2.COLORMAP_VIRIDIS,
    "turbo": cv2.COLORMAP_TURBO,
    "jet": cv2.COLORMAP_JET,
    "bone": cv2.COLORMAP_BONE,
    "gray": -1,
}


def minmax(depth: np.ndarray) -> tuple[float, float]:
    """Finite min and max of a depth map (the single-picture display range)."""
    finite = depth[np.isfinite(depth)]
    if finite.size == 0:
        return 0.0, 1.0
    return float(finite.min()), float(finite.max())


# Larger maps are scaled in bands of rows of about this many pixels (small temporaries).
_BAND_PIXELS = 1 << 21


def normalize_depth(depth: np.ndarray, lo: float, hi: float, invert: bool = False) -> np.ndarray:
    """Depth scaled to uint8 0..255: ``lo`` and below -> 0, ``hi`` and above -> 255."""
    span = float(hi) - float(lo)
    if not np.isfinite(span) or span <= 0:
        return np.full(depth.shape, 255 if invert else 0, np.uint8)
    if depth.ndim < 2 or depth.size <= _BAND_PIXELS:
        return _scaled(depth, lo, span, invert)
    out = np.empty(depth.shape, np.uint8)
    rows = max(1, _BAND_PIXELS // (depth.size // depth.shape[0]))
    for top in range(0, depth.shape[0], rows):
        out[top:top + rows] = _scaled(depth[top:top + rows], lo, span, invert)
    return out


def _scaled(depth: np.ndarray, lo: float, span: float, invert: bool) -> np.ndarray:
    """:func:`normalize_depth` of one band, ``span > 0``."""
    # One float32 buffer, every step in place (a frame per step, no temporaries).
    scaled = np.subtract(depth, np.float32(lo), dtype=np.float32)
    scaled *= np.float32(255.0 / span)
    # fmax/fmin (not clip) also settle what is not finite: NaN -> 0, +inf -> 255.
    np.fmax(scaled, np.float32(0.0), out=scaled)
    np.fmin(scaled, np.float32(255.0), out=scaled)
    if invert:
        np.subtract(np.float32(255.0), scaled, out=scaled)
    scaled += np.float32(0.5)
    return scaled.astype(np.uint8)


def colorize(
    depth: np.ndarray,
    lo: float,
    hi: float,
    cmap: str = "inferno",
    invert: bool = False,
) -> np.ndarray:
    """Colour a float depth map: uint8 BGR ``[H, W, 3]``, ``hi`` (nearest) warm and bright.

    Args:
        depth: float ``[H, W]`` relative inverse depth (larger = nearer).
        lo: value shown at the dark end (far).
        hi: value shown at the bright end (near).
        cmap: one of :data:`COLORMAPS`.
        invert: show near as dark instead (for users who want depth, not inverse depth).

    Returns:
        uint8 BGR picture of the same height and width.

    Raises:
        ConfigError: for an unknown colormap or a depth map that is not 2-d.
    """
    if cmap not in COLORMAPS:
        raise ConfigError(f"unknown colormap {cmap!r}; choose one of {', '.join(COLORMAPS)}")
    if depth.ndim != 2:
        raise ConfigError(f"depth must be [H, W], got shape {depth.shape}")
    gray = normalize_depth(depth, lo, hi, invert)
    code = COLORMAPS[cmap]
    if code < 0:
        return cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    return cv2.applyColorMap(gray, code)


class DisplayRange:
    """Running display range for streams: robust percentiles, eased, quick to widen.

    Per-frame min-max moves every colour whenever anything enters or leaves the picture.
    This keeps ``(lo, hi)`` near the ``low_pct``/``high_pct`` percentiles of recent
    frames instead: each bound moves a share of the way to the new frame's percentile,
    ``widen_rate`` when that widens the range (so new near or far things soon get their
    own colours) and ``shrink_rate`` when it narrows it (so colours stay put when
    something leaves). Percentiles come from a strided subsample of about
    ``max_samples`` pixels, so an update costs the same however large the frame.

    Args:
        low_pct: percentile shown at the dark (far) end, in ``[0, 100)``.
        high_pct: percentile shown at the bright (near) end, in ``(low_pct, 100]``.
        widen_rate: share of the gap closed per frame when the range grows, in ``(0, 1]``.
        shrink_rate: share of the gap closed per frame when the range shrinks, in
            ``(0, widen_rate]``.
        max_samples: about how many pixels the percentiles are taken from.

    Raises:
        ConfigError: for settings out of range.

    Example:
        >>> rng = DisplayRange()
        >>> lo, hi = rng.update(np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10))
        >>> round(lo, 2), round(hi, 2)
        (0.02, 0.98)
    """

    def __init__(
        self,
        low_pct: float = 2.0,
        high_pct: float = 98.0,
        widen_rate: float = 0.5,
        shrink_rate: float = 0.05,
        max_samples: int = 4096,
    ) -> None:
        if not 0.0 <= low_pct < high_pct <= 100.0:
            raise ConfigError(f"need 0 <= low_pct < high_pct <= 100, got {low_pct}, {high_pct}")
        if not 0.0 < widen_rate <= 1.0:
            raise ConfigError(f"widen_rate must be in (0, 1], got {widen_rate}")
        if not 0.0 < shrink_rate <= widen_rate:
            raise ConfigError(f"shrink_rate must be in (0, widen_rate], got {shrink_rate}")
        if max_samples < 1:
            raise ConfigError(f"max_samples must be positive, got {max_samples}")
        self.low_pct = float(low_pct)
        self.high_pct = float(high_pct)
        self.widen_rate = float(widen_rate)
        self.shrink_rate = float(shrink_rate)
        self.max_samples = int(max_samples)
        self._range: tuple[float, float] | None = None

    @property
    def range(self) -> tuple[float, float] | None:
        """The current ``(lo, hi)``, or ``None`` before the first update."""
        return self._range

    def reset(self) -> None:
        """Forget the range: the next update takes that frame's percentiles as they are."""
        self._range = None

    def percentiles(self, depth: np.ndarray) -> tuple[float, float] | None:
        """Subsampled ``(low_pct, high_pct)`` percentiles of ``depth``; ``None`` if none finite."""
        h, w = depth.shape[:2]
        step = max(1, math.ceil(math.sqrt(h * w / self.max_samples)))
        sample = depth[step // 2 :: step, step // 2 :: step]
        sample = sample[np.isfinite(sample)]
        if sample.size == 0:
            return None
        lo, hi = np.percentile(sample, (self.low_pct, self.high_pct))
        return float(lo), float(hi)

    def update(self, depth: np.ndarray) -> tuple[float, float]:
        """Fold one depth map into the range.

        Args:
            depth: float ``[H, W]`` depth map of the stream (in one scale across frames,
                e.g. the output of :class:`stream.depth.smoothing.TemporalSmoother`).

        Returns:
            ``(lo, hi)`` to pass to :func:`colorize`. The first frame (after
            :meth:`reset`) gives its own percentiles; a frame with no finite value
            leaves the range as it was (``(0.0, 1.0)`` if there is none yet).
        """
        target = self.percentiles(np.asarray(depth))
        if target is None:
            return self._range if self._range is not None else (0.0, 1.0)
        if self._range is None:
            self._range = target
            return target
        lo, hi = self._range
        t_lo, t_hi = target
        lo += (self.widen_rate if t_lo < lo else self.shrink_rate) * (t_lo - lo)
        hi += (self.widen_rate if t_hi > hi else self.shrink_rate) * (t_hi - hi)
        self._range = (lo, hi)
        return self._range


class FixedRange:
    """A display range that never moves: ``--range-m NEAR:FAR`` for metric depth.

    Has :class:`DisplayRange`'s ``update``/``reset`` so a stream can use either.

    Args:
        lo: the low end (for metres: the near distance, shown warm).
        hi: the high end (the far distance).

    Example:
        >>> FixedRange(0.5, 8.0).update(np.zeros((2, 2), np.float32))
        (0.5, 8.0)
    """

    def __init__(self, lo: float, hi: float) -> None:
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ConfigError(f"a fixed range needs finite lo < hi, got {lo}, {hi}")
        self.range = (float(lo), float(hi))

    def reset(self) -> None:
        """Nothing to forget."""

    def update(self, depth: np.ndarray) -> tuple[float, float]:
        """The fixed ``(lo, hi)``, whatever ``depth`` holds."""
        return self.range
