"""Accuracy: relative-depth error of the network against Middlebury ground truth.

The standard evaluation of relative (affine-invariant) inverse depth, as in the MiDaS
paper: fit a least-squares scale and shift of the predicted inverse depth to the ground
truth inverse depth over the valid pixels, turn both into depth, and report

* AbsRel = mean(|d_pred - d_gt| / d_gt), lower is better, 0 is perfect;
* delta1 = fraction of pixels with max(d_pred / d_gt, d_gt / d_pred) < 1.25, 1 is perfect.

Ground truth is the Middlebury 2014 "motorcycle" pair that scikit-image ships
(``skimage.data.stereo_motorcycle()``, downsampled 4x, 741x500): a disparity map ``d``
whose invalid pixels are ``inf``. Depth is ``f * B / (d + doffs)``, so inverse depth is
``(d + doffs) / (f * B)``; the ``doffs`` term (31 px here against disparities of 7-60 px)
matters for AbsRel, which is not invariant to a shift of the ground truth.

A metric model (``dav2-metric-*``) is scored twice: aligned as above (its metres turned
into inverse depth first), and as it is, in metres with no fit at all, which is what a
robot would get; the latter row's ``scale`` is the median of ground truth / prediction
(1 is a perfect scale).

Usage:
    python benchmarks/accuracy.py [--weights PATH] [--backend auto] [--threads N]
    python benchmarks/accuracy.py --weights PATH --precision int8   # fp32 and int8 rows
    python benchmarks/accuracy.py --model dav2-small --weights PATH [--input-size 364]
    python benchmarks/accuracy.py --synthetic   # runs end to end; numbers are meaningless
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import common
import numpy as np

from stream.geometry.align import fit_scale_shift

__all__ = [
    "MOTORCYCLE_BASELINE_M",
    "MOTORCYCLE_DOFFS_PX",
    "MOTORCYCLE_FOCAL_PX",
    "abs_rel",
    "align_inverse_depth",
    "delta1",
    "disparity_to_inverse_depth",
    "evaluate",
    "evaluate_metric",
    "inverse_to_depth",
    "main",
    "valid_mask",
]

# calibration of the 4x downsampled pair, from skimage.data.stereo_motorcycle's docstring
MOTORCYCLE_FOCAL_PX = 994.978
MOTORCYCLE_BASELINE_M = 0.193001
MOTORCYCLE_DOFFS_PX = 31.086

DELTA_THRESHOLD = 1.25


def valid_mask(gt_inv: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Pixels with finite, positive ground truth, and inside ``mask`` when given."""
    gt = np.asarray(gt_inv, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        keep = np.isfinite(gt) & (gt > 0)
    if mask is not None:
        keep &= np.asarray(mask, dtype=bool)
    return keep


def disparity_to_inverse_depth(
    disparity_px: np.ndarray,
    focal_px: float = MOTORCYCLE_FOCAL_PX,
    baseline_m: float = MOTORCYCLE_BASELINE_M,
    doffs_px: float = MOTORCYCLE_DOFFS_PX,
) -> np.ndarray:
    """Inverse depth in 1/m, ``(d + doffs) / (f * B)``; invalid disparities become ``nan``.

    Args:
        disparity_px: stereo disparity in pixels; ``inf``, ``nan`` or ``<= 0`` are invalid.
        focal_px: focal length in pixels.
        baseline_m: stereo baseline in metres.
        doffs_px: x-difference of the two principal points in pixels (Middlebury ``doffs``).

    Returns:
        float64 inverse depth of the same shape.
    """
    d = np.asarray(disparity_px, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(d) & (d > 0)
    return np.where(ok, (np.where(ok, d, 0.0) + doffs_px) / (focal_px * baseline_m), np.nan)


def align_inverse_depth(
    pred_inv: np.ndarray, gt_inv: np.ndarray, mask: np.ndarray | None = None
) -> tuple[np.ndarray, float, float]:
    """Least-squares scale and shift of ``pred_inv`` onto ``gt_inv`` over the valid pixels.

    Returns:
        ``(aligned, scale, shift)``: ``aligned = scale * pred_inv + shift`` (float64,
        every pixel) and the fitted numbers.
    """
    keep = valid_mask(gt_inv, mask)
    pred = np.asarray(pred_inv, dtype=np.float64)
    scale, shift = fit_scale_shift(pred, np.asarray(gt_inv, dtype=np.float64), keep)
    return scale * pred + shift, scale, shift


def inverse_to_depth(inv: np.ndarray, floor: float) -> np.ndarray:
    """``1 / max(inv, floor)``: the floor keeps depth finite and positive where ``inv <= 0``."""
    return 1.0 / np.maximum(np.asarray(inv, dtype=np.float64), floor)


def abs_rel(pred_depth: np.ndarray, gt_depth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean absolute relative error ``mean(|pred - gt| / gt)`` over ``mask`` (all if ``None``)."""
    pred, gt = np.asarray(pred_depth, np.float64), np.asarray(gt_depth, np.float64)
    if mask is not None:
        pred, gt = pred[mask], gt[mask]
    return float(np.mean(np.abs(pred - gt) / gt))


def delta1(
    pred_depth: np.ndarray,
    gt_depth: np.ndarray,
    mask: np.ndarray | None = None,
    threshold: float = DELTA_THRESHOLD,
) -> float:
    """Fraction of pixels with ``max(pred / gt, gt / pred) < threshold`` (strictly)."""
    pred, gt = np.asarray(pred_depth, np.float64), np.asarray(gt_depth, np.float64)
    if mask is not None:
        pred, gt = pred[mask], gt[mask]
    return float(np.mean(np.maximum(pred / gt, gt / pred) < threshold))


def evaluate(
    pred_inv: np.ndarray,
    gt_inv: np.ndarray,
    mask: np.ndarray | None = None,
    depth_cap: float | None = None,
) -> dict:
    """Align a relative inverse-depth prediction to ground truth and score it.

    Args:
        pred_inv: predicted relative inverse depth (larger = nearer), ``[H, W]``.
        gt_inv: ground-truth inverse depth (or disparity, which is inverse depth up to
            scale; a missing disparity offset changes the scores), same shape. Pixels
            that are not finite and positive are ignored.
        mask: optional boolean mask of further pixels to use.
        depth_cap: the largest predicted depth; aligned inverse depth is clamped to
            ``1 / depth_cap`` before inversion. Default: 10 times the farthest ground truth.

    Returns:
        ``{"abs_rel", "delta1", "scale", "shift", "pixels"}``.

    Raises:
        ValueError: shapes differ or no pixel is valid.
    """
    pred_inv, gt_inv = np.asarray(pred_inv), np.asarray(gt_inv)
    if pred_inv.shape != gt_inv.shape:
        raise ValueError(f"prediction {pred_inv.shape} and ground truth {gt_inv.shape} differ")
    keep = valid_mask(gt_inv, mask) & np.isfinite(pred_inv)
    if not keep.any():
        raise ValueError("no valid ground-truth pixel to evaluate")
    aligned, scale, shift = align_inverse_depth(pred_inv, gt_inv, keep)
    gt = np.asarray(gt_inv, np.float64)[keep]
    if depth_cap is None:
        depth_cap = 10.0 / gt.min()
    pred_depth = inverse_to_depth(aligned[keep], 1.0 / depth_cap)
    gt_depth = 1.0 / gt
    return {
        "abs_rel": abs_rel(pred_depth, gt_depth),
        "delta1": delta1(pred_depth, gt_depth),
        "scale": scale,
        "shift": shift,
        "pixels": int(keep.sum()),
    }


def evaluate_metric(
    pred_depth_m: np.ndarray,
    gt_inv: np.ndarray,
    mask: np.ndarray | None = None,
) -> dict:
    """Score depth in metres as it is, against ground-truth inverse depth, with no fit.

    Args:
        pred_depth_m: predicted depth in metres (larger = farther), ``[H, W]``.
        gt_inv: ground-truth inverse depth in 1/m, same shape; pixels that are not finite
            and positive are ignored, as are predictions that are not finite and positive.
        mask: optional boolean mask of further pixels to use.

    Returns:
        ``{"abs_rel", "delta1", "scale", "shift", "pixels"}``: ``scale`` is the median of
        ground truth / prediction (1 for a right scale), ``shift`` is 0.

    Raises:
        ValueError: shapes differ or no pixel is valid.
    """
    pred, gt_inv = np.asarray(pred_depth_m, np.float64), np.asarray(gt_inv)
    if pred.shape != gt_inv.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt_inv.shape} differ")
    with np.errstate(invalid="ignore"):
        keep = valid_mask(gt_inv, mask) & np.isfinite(pred) & (pred > 0)
    if not keep.any():
        raise ValueError("no valid ground-truth pixel to evaluate")
    pred, gt = pred[keep], 1.0 / np.asarray(gt_inv, np.float64)[keep]
    return {
        "abs_rel": abs_rel(pred, gt),
        "delta1": delta1(pred, gt),
        "scale": float(np.median(gt / pred)),
        "shift": 0.0,
        "pixels": int(keep.sum()),
    }


def score(title: str, depth: np.ndarray, metric: bool, gt_inv: np.ndarray) -> list:
    """The table rows of one prediction: aligned, and for metres also as it is."""
    if not metric:
        return [(title, evaluate(depth, gt_inv))]
    with np.errstate(divide="ignore", invalid="ignore"):
        inverse = np.where(depth > 0, 1.0 / depth, np.nan)
    return [(f"{title}, aligned", evaluate(inverse, gt_inv)),
            (f"{title}, metres as given", evaluate_metric(depth, gt_inv))]


def main(argv: list[str] | None = None) -> int:
    """Run the network on the motorcycle picture and print AbsRel and delta1."""
    from stream.models.registry import DEFAULT_MODEL, MODELS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--weights", type=Path, default=None,
                       help="the model's checkpoint (default: $DEPTHSTREAM_WEIGHTS, cache, "
                            "download)")
    which.add_argument("--synthetic", action="store_true",
                       help="the tests' synthetic weights: proves the script runs, scores "
                            "nothing")
    parser.add_argument("--model", choices=sorted(MODELS), default=DEFAULT_MODEL,
                        help=f"the network (default: {DEFAULT_MODEL})")
    parser.add_argument("--input-size", type=int, default=None,
                        help="the network's input side (default: the model's picture size)")
    parser.add_argument("--backend", default="auto", help="auto, openvino or torch")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    parser.add_argument("--precision", choices=("fp32", "int8"), default="fp32",
                        help="int8: score the int8 model too (made once with NNCF, OpenVINO), "
                             "both printed")
    args = parser.parse_args(argv)

    import skimage.data

    from stream.core.errors import ConfigError, WeightsError
    from stream.engines.estimator import DepthEstimator
    from stream.engines.factory import create_backend
    from stream.models.registry import get_spec
    from stream.models.weights import check_file, resolve_path

    spec = get_spec(args.model)
    precisions = ["fp32", "int8"] if args.precision == "int8" else ["fp32"]
    try:
        if args.synthetic:
            path, origin = _synthetic_weights(spec.name)
        else:
            path = check_file(resolve_path(args.weights, spec.checkpoint), spec.checkpoint)
            origin = str(args.weights) if args.weights else f"default ({path})"
        spec.input.check_side(args.input_size)  # before any model loads
        backends = {p: create_backend(args.backend if p == "fp32" else "openvino", weights=path,
                                      threads=args.threads, precision=p, progress=True,
                                      model=spec)
                    for p in precisions}
    except (WeightsError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    estimators = {p: DepthEstimator(b, args.input_size) for p, b in backends.items()}

    left_rgb, _, disparity_px = skimage.data.stereo_motorcycle()
    gt_inv = disparity_to_inverse_depth(disparity_px)
    rows, times = [], {}
    try:
        for p, estimator in estimators.items():
            estimator.predict(left_rgb)  # warm-up
            depth, times[p] = estimator.predict(left_rgb)
            rows += score(f"{spec.title} {p}", depth, spec.metric, gt_inv)
    finally:
        for estimator in estimators.values():
            estimator.close()
    # a flat picture, for scale: what alignment alone achieves with no depth cue
    rows.append(("constant (baseline)", evaluate(np.zeros_like(depth), gt_inv)))
    backend = backends["fp32"]
    h, w = left_rgb.shape[:2]
    if args.synthetic:
        print("*** SYNTHETIC WEIGHTS: the scores below are MEANINGLESS for accuracy; "
              "this run only proves the script works end to end. ***")
    print(f"machine:  {common.machine()}")
    print(f"model:    {spec.name} ({spec.title}), input side {estimators['fp32'].side}")
    print(f"weights:  {origin}")
    print(f"backend:  {backend.name} on {backend.device}, inference {times['fp32']:.1f} ms"
          + (f"; int8 {times['int8']:.1f} ms" if "int8" in times else ""))
    print(f"data:     Middlebury 2014 motorcycle (skimage), {w}x{h}, "
          f"{rows[0][1]['pixels']} valid of {h * w} pixels")
    print()
    width = max(len(name) for name, _ in rows) + 2
    print(f"{'prediction':<{width}}{'AbsRel':>8}{'delta1':>8}{'scale':>12}{'shift':>12}")
    for name, r in rows:
        print(f"{name:<{width}}{r['abs_rel']:>8.4f}{r['delta1']:>8.4f}"
              f"{r['scale']:>12.4g}{r['shift']:>12.4g}")
    return 0


def _synthetic_weights(model: str) -> tuple[Path, str]:
    """The tests' synthetic checkpoint of ``model``'s family, saved once."""
    if model == "midas-small":
        from bench_convert import weights_file
    else:
        from model_convert import weights_file
    return weights_file(None)


if __name__ == "__main__":
    sys.exit(main())
