"""Colormap: depth to colour (near = warm/bright), and the display range used to scale it.

Pure array functions. MiDaS output is relative *inverse* depth, so larger values are
nearer; ``colorize`` maps ``hi`` (nearest) to the bright end of the colormap. Do not
invert before colouring unless the user asks (``invert=True``).
"""

from __future__ import annotations

import cv2
import numpy as np

from .errors import ConfigError

__all__ = ["COLORMAPS", "colorize", "normalize_depth", "minmax"]

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


def normalize_depth(depth: np.ndarray, lo: float, hi: float, invert: bool = False) -> np.ndarray:
    """Depth scaled to uint8 0..255: ``lo`` and below -> 0, ``hi`` and above -> 255."""
    span = float(hi) - float(lo)
    if not np.isfinite(span) or span <= 0:
        scaled = np.zeros(depth.shape, np.float32)
    else:
        scaled = (depth.astype(np.float32, copy=False) - np.float32(lo)) * np.float32(255.0 / span)
    np.nan_to_num(scaled, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
    np.clip(scaled, 0.0, 255.0, out=scaled)
    if invert:
        scaled = 255.0 - scaled
    return (scaled + 0.5).astype(np.uint8)


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
