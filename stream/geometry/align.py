"""Align: least-squares scale and shift between relative depth maps (robust if asked).

MiDaS predicts inverse depth up to an unknown scale and shift. Evaluation, temporal
smoothing and metric conversion all need the same fit: ``s * pred + b ~= target``.
Starts no threads, touches no files.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fit_scale_shift"]


def fit_scale_shift(
    pred: np.ndarray,
    target: np.ndarray,
    mask: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> tuple[float, float]:
    """Weighted least-squares ``(s, b)`` minimising ``sum w * (s * pred + b - target)^2``.

    Args:
        pred: any shape, float.
        target: same shape as ``pred``.
        mask: optional boolean mask of pixels to use.
        weights: optional non-negative weights, same shape.

    Returns:
        ``(scale, shift)``; ``(1, mean difference)`` when ``pred`` is constant.
    """
    p = np.asarray(pred, dtype=np.float64).ravel()
    t = np.asarray(target, dtype=np.float64).ravel()
    w = np.ones_like(p) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    keep = np.isfinite(p) & np.isfinite(t) & (w > 0)
    if mask is not None:
        keep &= np.asarray(mask, dtype=bool).ravel()
    p, t, w = p[keep], t[keep], w[keep]
    if p.size == 0:
        return 1.0, 0.0
    sw = w.sum()
    mp, mt = (w * p).sum() / sw, (w * t).sum() / sw
    var = (w * (p - mp) ** 2).sum()
    if var <= 1e-12 * max(1.0, mp * mp) * sw:
        return 1.0, float(mt - mp)
    s = (w * (p - mp) * (t - mt)).sum() / var
    return float(s), float(mt - s * mp)

