"""Smoothing: causal temporal stabilisation of per-frame relative depth.

MiDaS predicts inverse depth up to a scale and shift that change from frame to frame,
plus noise, so a raw stream flickers. :class:`TemporalSmoother` keeps a running estimate
and, for each new prediction, (1) fits the prediction to the estimate with a robust
scale-and-shift fit, (2) blends the aligned prediction into the estimate: a lot where
neither the picture nor the aligned depth changed, little (down to nothing) where either
did, so moving things leave no ghosts. A scene cut (most pixels change) starts afresh.

All decisions are made on a low-resolution grid (about 80 pixels on the long side); only
the final blend runs at full resolution, so the cost is a few passes over the depth map.
Large maps are blended in bands of rows: apart from the new estimate no full-size array
is made. No look-ahead: it works live. Starts no threads, touches no files.

Example:
    >>> smoother = TemporalSmoother(strength=0.8)
    >>> for depth, bgr in stream:  # doctest: +SKIP
    ...     steady = smoother.update(depth, bgr)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import cv2
import numpy as np

from stream.core.errors import ConfigError
from stream.core.settings import DEFAULT_SMOOTH
from stream.geometry.align import fit_scale_shift

__all__ = ["DEFAULT_STRENGTH", "TemporalSmoother"]

#: Default ``strength``; chosen with ``benchmarks/temporal.py`` (see its sweep).
DEFAULT_STRENGTH = DEFAULT_SMOOTH

# At strength 1 a static pixel keeps this share of the running estimate per frame
# (time constant 1 / (1 - 0.95) = 20 frames); strength scales it linearly.
_MAX_KEEP = 0.95
# Long side of the working grid on which the fit and the change masks are computed.
_WORK_SIDE = 80
# The robust fit starts from the best of several plain fits (whole grid, each tile of a
# 3x3 split, each pair of tiles), judged by how many pixels they explain within this
# fraction of the display range; a mover covering a third of the picture cannot drag it.
_TILES = 3
_INLIER = 0.08
_PAIRS = np.triu_indices(_TILES * _TILES, 1)
# Reweighting passes (Cauchy weights) that refine the fit from that start.
_FIT_PASSES = 2
# A depth change counts from this many "typical changes" (median over cells) ...
_CHANGE_K = 3.0
# ... but never below 1% of the display range (noise-free input) nor above 10% (so when
# much of the picture changes, a large change still counts).
_CHANGE_FLOOR = 0.01
_CHANGE_CAP = 0.1
# The same for picture changes, in grey levels (camera noise, compression; pans).
_IMAGE_FLOOR = 6.0
_IMAGE_CAP = 15.0
# Scene cut: more than this share of the picture changed ...
_CUT_FRACTION = 0.5
# ... in depth: the aligned prediction is off by more than this fraction of the range,
_CUT_DEPTH = 0.1
# ... or the fit keeps less than this share of the estimate's spread (unrelated scenes
# fit best with a scale near zero);
_CUT_SPREAD = 1.0 / 3.0
# ... in the picture: by more than this many grey levels.
_CUT_IMAGE = 20.0
# Maps with more pixels than this are blended in bands of about this many pixels, so
# the temporaries of the blend stay small however large the picture.
_BAND_PIXELS = 1 << 21


class TemporalSmoother:
    """Causal, per-pixel temporal smoothing of relative (inverse) depth or of metres.

    Relative depth has its own scale and shift in every frame, so each prediction is
    first aligned to the running estimate; the output stays in one scale across frames:
    that of the first frame after a :meth:`reset`, a scene cut or a change of size.
    Metric depth (``align=False``) already shares one scale, metres: it is blended as it
    is, never rescaled.

    Args:
        strength: 0 (off: the input comes back unchanged) to 1 (strongest). A static
            pixel takes ``1 - 0.95 * strength`` of each new aligned prediction.
        align: fit each prediction's scale and shift to the estimate (relative depth);
            ``False`` for metres.

    Raises:
        ConfigError: if ``strength`` is not a number in ``[0, 1]``.
    """

    def __init__(self, strength: float = DEFAULT_STRENGTH, align: bool = True) -> None:
        try:
            value = float(strength)
        except (TypeError, ValueError):
            raise ConfigError(f"smoothing strength must be a number, got {strength!r}") from None
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"smoothing strength must be in [0, 1], got {strength!r}")
        self._strength = value
        self.align = bool(align)
        self._alpha_static = np.float32(1.0 - _MAX_KEEP * value)
        self.reset()

    @property
    def strength(self) -> float:
        """The strength given at construction, in ``[0, 1]``."""
        return self._strength

    @property
    def static_weight(self) -> float:
        """Share of each new aligned prediction that a static pixel takes: ``1 - 0.95 s``."""
        return float(self._alpha_static)

    @property
    def scene_cut(self) -> bool:
        """True when the last :meth:`update` started afresh.

        That is the first frame after construction or :meth:`reset`, a change of size, or
        a detected scene cut; the output is then the input itself, in its own scale, so a
        caller that keeps a running display range should reset it too.
        """
        return self._scene_cut

    def reset(self) -> None:
        """Forget the running estimate: the next frame is treated as the first."""
        self._estimate: np.ndarray | None = None  # full-resolution output of the last frame
        self._small: np.ndarray | None = None  # the same on the working grid
        self._gray: np.ndarray | None = None  # last picture, grey, on the working grid
        self._small_wh = (1, 1)
        self._block = 1
        self._scene_cut = False

    def update(self, depth: np.ndarray, frame: np.ndarray | None = None, *,
               consume: bool = False) -> np.ndarray:
        """Smooth one prediction.

        Args:
            depth: float ``[H, W]`` relative inverse depth (larger = nearer). Pixels
                that are not finite are filled (NaN with the median, infinities with
                the finite extremes) so they cannot spread through the estimate.
            frame: the BGR uint8 picture the prediction came from, any size with the same
                aspect ratio (it is resized to the working grid), or ``None``. With it,
                changes in the picture also stop the blending, which catches motion in
                regions of flat depth.
            consume: the caller gives ``depth`` up: the result may be written into it
                (one full-size array less). Off, ``depth`` is left as it was.

        Returns:
            float32 ``[H, W]``, a new read-only array (the smoother's own running
            estimate, so it is not copied), in the scale of the running estimate. With
            ``strength == 0`` the input itself (as float32) comes back.

        Raises:
            ConfigError: if ``depth`` is not 2-d or ``frame`` is not an image.
        """
        depth = _checked_depth(depth, frame)
        if self._strength == 0.0:
            self._scene_cut = False
            return depth.astype(np.float32, copy=False)
        given = depth
        depth = depth.astype(np.float32, copy=False)
        # A NaN or an infinity shows in the extremes (and that needs no full-size mask).
        if not (math.isfinite(depth.min()) and math.isfinite(depth.max())):
            depth = _finite(depth)
        # Ours to overwrite: a copy made above, or the caller's, given up.
        owned = depth is not given or (consume and depth.flags.writeable
                                       and depth.flags.c_contiguous)
        gray = None if frame is None else self._small_gray(frame, depth.shape)
        if self._estimate is None or self._estimate.shape != depth.shape:
            return self._restart(depth, gray, owned)
        fit = self._fit(depth, gray)
        if fit is None:
            return self._restart(depth, gray, owned)
        estimate, small = self._blend(depth, fit, depth if owned else None)
        self._hold_range(estimate, small)
        estimate.flags.writeable = False  # handed out as it is: nobody may change it
        self._estimate = estimate
        self._small = small
        self._gray = gray
        self._scene_cut = False
        return estimate

    # -- internals ---------------------------------------------------------------------

    def _fit(self, depth: np.ndarray, gray: np.ndarray | None) -> _Fit | None:
        """Align ``depth`` to the estimate on the working grid; ``None`` on a scene cut."""
        small_new = cv2.resize(depth, self._small_wh, interpolation=cv2.INTER_AREA)
        small_est = self._small
        image_change = None
        if gray is not None and self._gray is not None:
            image_change = _picture_change(gray, self._gray)
            if image_change is None:
                return None
        span = _robust_span(small_est)
        if self.align:
            scale, shift = _robust_fit(small_new, small_est, image_change, span)
        else:
            scale, shift = 1.0, 0.0  # metres: one scale already
        if not (math.isfinite(scale) and math.isfinite(shift) and scale > 0.0):
            return None
        resid_small = scale * small_new + shift - small_est
        if _is_depth_cut(resid_small, small_new, scale, span):
            return None
        return _Fit(scale, shift, span, resid_small, image_change)

    def _blend(self, depth: np.ndarray, fit: _Fit,
               out: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """The new estimate at full resolution and on the grid: change-aware blend.

        Three passes over bands of rows (one band for all but large maps): the aligned
        prediction's difference from the estimate, written where the new estimate goes;
        its largest size per grid cell; then the blend, in place. ``out`` may be
        ``depth`` itself: each band is read before it is written.
        """
        est = self._estimate
        if out is None:
            out = np.empty_like(est)
        for top, bottom in self._row_bands:
            cv2.addWeighted(depth[top:bottom], fit.scale, est[top:bottom], -1.0, fit.shift,
                            dst=out[top:bottom])
        alpha_small = self._blend_weights(self._pooled_change(out), fit)
        for top, bottom in self._row_bands:
            band = out[top:bottom]
            band *= self._alpha_rows(alpha_small, top, bottom)
            band += est[top:bottom]
        # Keep the grid estimate by the same blend on the grid: one full-size resize less.
        small = self._small + alpha_small * (fit.resid_small.astype(np.float32))
        return out, small

    def _pooled_change(self, delta: np.ndarray) -> np.ndarray:
        """The largest ``|delta|`` in each grid cell, band by band of cell rows.

        A one-pixel sliver of change (a slow mover's trailing edge) still marks its cell.
        The dilation window is anchored at its top-left corner, where each cell starts.
        """
        pooled = np.empty(self._small_wh[::-1], np.float32)
        rows = self._cell_rows[:, 0]
        for first, last in self._cell_bands:
            top = int(rows[first])
            bottom = min(delta.shape[0], int(rows[last - 1]) + self._block)
            band = cv2.dilate(np.abs(delta[top:bottom]), self._kernel, anchor=(0, 0))
            pooled[first:last] = band[self._cell_rows[first:last] - top, self._cell_cols]
        return pooled

    def _alpha_rows(self, alpha_small: np.ndarray, top: int, bottom: int) -> np.ndarray:
        """Rows ``top:bottom`` of the weights bilinearly upsampled to full resolution.

        One band: ``cv2.resize``. Bands: the same mapping (pixel centres, edges
        replicated) as an affine warp of just those rows, equal to the resize's rows.
        """
        h, w = self._estimate.shape
        if (top, bottom) == (0, h):
            return cv2.resize(alpha_small, (w, h), interpolation=cv2.INTER_LINEAR)
        sh, sw = alpha_small.shape
        to_grid = np.array([[sw / w, 0.0, 0.5 * sw / w - 0.5],
                            [0.0, sh / h, (top + 0.5) * sh / h - 0.5]])
        return cv2.warpAffine(alpha_small, to_grid, (w, bottom - top),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REPLICATE)

    def _blend_weights(self, pooled: np.ndarray, fit: _Fit) -> np.ndarray:
        """Per-cell share of the new prediction: static weight, up to 1 where things changed."""
        change = _ramp(pooled, _CHANGE_FLOOR * fit.span, _CHANGE_CAP * fit.span)
        if fit.image_change is not None:
            np.maximum(change, fit.image_change, out=change)
        # One cell of margin, so the bilinear upsampling of the weights still gives full
        # weight to every pixel of a changed cell.
        change = cv2.dilate(change, np.ones((3, 3), np.uint8))
        return self._alpha_static + (1.0 - self._alpha_static) * change

    def _hold_range(self, estimate: np.ndarray, small: np.ndarray) -> None:
        """Rescale both estimates in place so their robust range is the last restart's.

        A fit to a noisy prediction has a slope below the true scale (regression
        dilution); blended in frame after frame that shrinks the estimate towards a flat
        map (seen on the sample clip, whose depth range all but vanished). Relative depth
        has no scale of its own, so fixing the range loses nothing.
        """
        lo, hi = _range_ends(small)
        if hi > lo:
            k = self._range / float(hi - lo)
            c = self._middle - k * float(lo + hi) / 2.0
            estimate *= np.float32(k)
            estimate += np.float32(c)
            small *= np.float32(k)
            small += np.float32(c)

    def _restart(self, depth: np.ndarray, gray: np.ndarray | None,
                 owned: bool = False) -> np.ndarray:
        """Start a fresh estimate from ``depth`` (first frame, size change, scene cut)."""
        h, w = depth.shape
        self._block = max(1, math.ceil(max(h, w) / _WORK_SIDE))
        self._small_wh = (max(1, round(w / self._block)), max(1, round(h / self._block)))
        self._kernel = np.ones((self._block, self._block), np.uint8)
        # First full-resolution row and column of each grid cell.
        self._cell_rows = (np.arange(self._small_wh[1]) * h // self._small_wh[1])[:, None]
        self._cell_cols = (np.arange(self._small_wh[0]) * w // self._small_wh[0])[None, :]
        # Bands of whole cell rows, about _BAND_PIXELS each (one band for most maps).
        per_band = max(1, _BAND_PIXELS // (self._block * w)) if h * w > _BAND_PIXELS else h
        cells = self._small_wh[1]
        self._cell_bands = [(i, min(cells, i + per_band)) for i in range(0, cells, per_band)]
        starts = [int(self._cell_rows[first, 0]) for first, _ in self._cell_bands]
        self._row_bands = list(zip([0, *starts[1:]], [*starts[1:], h]))
        self._estimate = depth if owned else depth.copy()
        self._estimate.flags.writeable = False
        self._small = cv2.resize(self._estimate, self._small_wh, interpolation=cv2.INTER_AREA)
        lo, hi = _range_ends(self._small)
        self._range = float(hi - lo) if hi > lo else 1.0
        self._middle = float(lo + hi) / 2.0
        if gray is not None and gray.shape != self._small.shape:
            gray = None
        self._gray = gray
        self._scene_cut = True
        return self._estimate

    def _small_gray(self, frame: np.ndarray, shape_hw: tuple[int, int]) -> np.ndarray:
        """The picture in grey on the working grid of a depth map of ``shape_hw``."""
        h, w = shape_hw
        block = max(1, math.ceil(max(h, w) / _WORK_SIDE))
        size_wh = (max(1, round(w / block)), max(1, round(h / block)))
        image = np.asarray(frame)
        if image.dtype != np.uint8:
            image = np.clip(image, 0, 255).astype(np.uint8)
        # Shrink first (area average also removes sensor noise), then convert: cheaper.
        step = max(1, min(image.shape[0] // size_wh[1], image.shape[1] // size_wh[0]) // 2)
        if step > 1:
            image = image[::step, ::step]
        small = cv2.resize(image, size_wh, interpolation=cv2.INTER_AREA)
        if small.ndim == 3:
            small = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        return small.astype(np.float32)


class _Fit(NamedTuple):
    """The alignment of one prediction to the estimate, on the working grid."""

    scale: float
    shift: float
    span: float  # robust range of the estimate: the unit of every depth threshold
    resid_small: np.ndarray  # aligned prediction minus estimate
    image_change: np.ndarray | None  # 0..1 per cell, ``None`` without pictures


def _checked_depth(depth: np.ndarray, frame: np.ndarray | None) -> np.ndarray:
    """``depth`` as an array, after checking it and ``frame`` (see ``update``)."""
    depth = np.asarray(depth)
    if depth.ndim != 2 or depth.size == 0:
        raise ConfigError(f"depth must be a non-empty [H, W] array, got shape {depth.shape}")
    if frame is not None and (np.ndim(frame) not in (2, 3) or np.size(frame) == 0):
        raise ConfigError(f"frame must be an image, got shape {np.shape(frame)}")
    return depth


def _picture_change(gray: np.ndarray, last: np.ndarray) -> np.ndarray | None:
    """0..1 picture change per cell between two grey grids; ``None`` for a scene cut."""
    # A global brightness shift (auto exposure) is not motion, so take the median
    # difference out first.
    diff = gray - last
    diff = np.abs(diff - _median(diff))
    if np.mean(diff > _CUT_IMAGE) > _CUT_FRACTION:
        return None
    return _ramp(diff, _IMAGE_FLOOR, _IMAGE_CAP)


def _ramp(change: np.ndarray, floor: float, cap: float) -> np.ndarray:
    """0 up to a threshold of ``_CHANGE_K`` typical changes (within floor..cap), 1 from twice it."""
    t0 = min(max(_CHANGE_K * _median(change), floor), cap)
    return np.clip(change / np.float32(t0) - 1.0, 0.0, 1.0)


def _robust_span(small: np.ndarray) -> float:
    """The 2nd to 98th percentile range of ``small``, never zero."""
    lo, hi = _range_ends(small)
    span = float(hi - lo)
    if not span > 0.0:
        span = 1e-6 * max(1.0, abs(float(hi)))
    return span


def _is_depth_cut(resid: np.ndarray, new: np.ndarray, scale: float, span: float) -> bool:
    """True if even the best fit leaves most of the grid off, or flattens the new depth."""
    new_lo, new_hi = _range_ends(new)
    return bool(
        np.mean(np.abs(resid) > _CUT_DEPTH * span) > _CUT_FRACTION
        or scale * float(new_hi - new_lo) < _CUT_SPREAD * span
    )


def _robust_fit(
    new: np.ndarray, est: np.ndarray, image_change: np.ndarray | None, span: float
) -> tuple[float, float]:
    """``(s, b)`` with ``s * new + b ~= est`` on the working grid, robust to movers.

    Starts from the candidate plain fit that explains the most pixels, then refines it
    by iteratively reweighted least squares (:func:`stream.geometry.align.fit_scale_shift`).
    Pixels whose picture changed count less throughout.
    """
    base = None if image_change is None else 1.0 - 0.99 * image_change
    scale, shift = _best_candidate(new, est, base, _INLIER * span)
    for _ in range(_FIT_PASSES):
        resid = scale * new + shift - est
        # The median residual is the noise level while most pixels are static; the cap
        # keeps the weights sharp when they are not.
        sigma = min(max(1.4826 * _median(np.abs(resid)), 1e-3 * span), 0.5 * _INLIER * span)
        weights = 1.0 / (1.0 + (resid / (2.5 * sigma)) ** 2)
        if base is not None:
            weights *= base
        scale, shift = fit_scale_shift(new, est, weights=weights)
    return scale, shift


def _best_candidate(
    new: np.ndarray, est: np.ndarray, base: np.ndarray | None, tol: float
) -> tuple[float, float]:
    """The plain least-squares fit, over the whole grid or some tiles, that explains most."""
    h, w = new.shape
    th, tw = h // _TILES, w // _TILES
    if th == 0 or tw == 0:
        return fit_scale_shift(new, est, weights=base)
    # Centred, so the normal equations below do not cancel catastrophically.
    p0, t0 = float(new.mean()), float(est.mean())
    p = new.astype(np.float64) - p0
    t = est.astype(np.float64) - t0
    wt = np.ones_like(p) if base is None else base.astype(np.float64)
    # Weighted sums per tile, then per pair of tiles and overall: the normal equations of
    # every candidate at once.
    terms = np.stack([wt, wt * p, wt * t, wt * p * p, wt * p * t])
    tiles = terms[:, : th * _TILES, : tw * _TILES].reshape(5, _TILES, th, _TILES, tw)
    tiles = tiles.sum(axis=2).sum(axis=3).reshape(5, -1)
    sums = np.concatenate(
        [terms.sum(axis=(1, 2))[:, None], tiles, tiles[:, _PAIRS[0]] + tiles[:, _PAIRS[1]]],
        axis=1,
    )
    sw, sp, st, spp, spt = sums
    with np.errstate(divide="ignore", invalid="ignore"):
        scales = (sw * spt - sp * st) / (sw * spp - sp * sp)
        shifts = (st - scales * sp) / sw
    ok = np.isfinite(scales) & np.isfinite(shifts) & (scales > 0)
    if not ok.any():
        return fit_scale_shift(new, est, weights=base)
    scales, shifts = scales[ok].astype(np.float32), shifts[ok].astype(np.float32)
    # Score on every other pixel: plenty to rank a few dozen candidates.
    ps = p[::2, ::2].ravel().astype(np.float32)
    ts = t[::2, ::2].ravel().astype(np.float32)
    ws = wt[::2, ::2].ravel().astype(np.float32)
    resid = np.outer(scales, ps)
    resid += shifts[:, None]
    resid -= ts
    np.abs(resid, out=resid)
    np.less_equal(resid, np.float32(tol), out=resid)  # 1.0 inside, 0.0 outside
    best = int(np.argmax(resid @ ws))
    scale = float(scales[best])
    return scale, float(shifts[best]) + t0 - scale * p0


def _range_ends(values: np.ndarray) -> tuple[float, float]:
    """The 2nd and 98th percentiles (as ``np.percentile``'s default, linear) by one partition."""
    flat = values.ravel()
    last = flat.size - 1
    lo_at, hi_at = 0.02 * last, 0.98 * last
    lo_i, hi_i = int(lo_at), int(hi_at)
    kth = sorted({lo_i, min(lo_i + 1, last), hi_i, min(hi_i + 1, last)})
    part = np.partition(flat, kth)
    lo = float(part[lo_i]) + (lo_at - lo_i) * float(part[min(lo_i + 1, last)] - part[lo_i])
    hi = float(part[hi_i]) + (hi_at - hi_i) * float(part[min(hi_i + 1, last)] - part[hi_i])
    return lo, hi


def _median(values: np.ndarray) -> float:
    """Median (upper middle for an even count): one ``np.partition``, cheaper than ``median``."""
    flat = values.ravel()
    mid = flat.size // 2
    return float(np.partition(flat, mid)[mid])


def _finite(depth: np.ndarray) -> np.ndarray:
    """A copy of ``depth`` with NaN set to the finite median and infinities to the extremes."""
    finite = depth[np.isfinite(depth)]
    if finite.size == 0:
        return np.zeros_like(depth)
    return np.nan_to_num(
        depth, nan=float(np.median(finite)), posinf=float(finite.max()), neginf=float(finite.min())
    )
