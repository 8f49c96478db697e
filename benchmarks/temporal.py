"""Temporal stability benchmark: flicker, moving-object error and colour-range jumps.

Simulates what the network does on a live stream. The ground truth is the inverse depth
of a static scene (a receding floor and two boxes) with a square moving back and forth
across it; each frame's "prediction" is ``s_t * truth + b_t + noise`` with ``s_t`` drawn
in 0.8..1.25, ``b_t`` within 10% of the mean and spatially smooth noise. It compares the
raw predictions, a plain exponential moving average and :class:`TemporalSmoother` (with
and without the picture), and reports:

- flicker: mean absolute change between consecutive frames on static pixels, after one
  affine fit of the whole output sequence to the truth (truth units);
- moving-object error: mean absolute error on the object's pixels after a per-frame
  affine fit to the truth (ghosting and lag show here);
- colour-range jumps: the largest frame-to-frame change of the display range, as a
  fraction of the range (raw/EMA with per-frame min-max, ours with ``DisplayRange``).

Goals: flicker at most 1/3 of raw, moving-object error at most 1.25x raw, range jumps at
most 2%. Also times the smoother on 640x480 frames and sweeps a few strengths.

Usage:
    python benchmarks/temporal.py [--frames 150] [--size 240x320] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass

import common
import cv2
import numpy as np

from stream.depth.colormap import DisplayRange, minmax
from stream.depth.smoothing import DEFAULT_STRENGTH, TemporalSmoother
from stream.geometry.align import fit_scale_shift

__all__ = ["GOALS", "Scene", "make_scene", "run", "goals_met", "time_smoother", "main"]

#: Goals of issue 4: (flicker / raw) max, (object error / raw) max, range jump max.
GOALS = {"flicker_ratio": 1.0 / 3.0, "object_error_ratio": 1.25, "range_jump": 0.02}


@dataclass(frozen=True)
class Scene:
    """A simulated stream.

    Attributes:
        truth: float32 ``[T, H, W]`` true inverse depth.
        moving: bool ``[T, H, W]``, the moving object's pixels.
        pred: float32 ``[T, H, W]`` simulated network output.
        bgr: uint8 ``[T, H, W, 3]`` the pictures.
    """

    truth: np.ndarray
    moving: np.ndarray
    pred: np.ndarray
    bgr: np.ndarray


def _smooth_noise(rng: np.random.Generator, size_hw: tuple[int, int], cell: int) -> np.ndarray:
    """Unit-std Gaussian noise, smooth over about ``cell`` pixels."""
    h, w = size_hw
    coarse = rng.standard_normal((max(2, h // cell), max(2, w // cell))).astype(np.float32)
    field = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    return (field - field.mean()) / max(float(field.std()), 1e-6)


def make_scene(
    frames: int = 150,
    size_hw: tuple[int, int] = (240, 320),
    seed: int = 0,
    noise: float = 0.03,
    speed: float = 0.015,
) -> Scene:
    """Build the simulated stream.

    Args:
        frames: number of frames.
        size_hw: ``(height, width)``.
        seed: random seed.
        noise: std of the smooth noise, as a fraction of the truth's range.
        speed: the object's speed, as a fraction of the width per frame (it bounces).

    Returns:
        The :class:`Scene`.
    """
    rng = np.random.default_rng(seed)
    h, w = size_hw
    rows = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    static = np.repeat(0.2 + 0.4 * rows, w, axis=1)  # floor: far at the top, near below
    texture = 128 + 50 * _smooth_noise(rng, size_hw, max(2, h // 24))
    pic = np.repeat(texture[..., None], 3, axis=2) * np.float32([0.9, 1.0, 0.8])
    for (r0, r1, c0, c1), inv, colour in (
        ((0.45, 0.8, 0.1, 0.3), 0.85, (40, 140, 200)),
        ((0.3, 0.6, 0.65, 0.85), 0.75, (200, 90, 60)),
    ):
        ys, xs = slice(int(r0 * h), int(r1 * h)), slice(int(c0 * w), int(c1 * w))
        static[ys, xs] = inv
        pic[ys, xs] = 0.5 * pic[ys, xs] + 0.5 * np.float32(colour)
    side = max(4, int(0.25 * h))
    top = int(0.35 * h)
    patch = 0.6 * np.float32((60, 220, 240)) + 0.4 * pic[:side, :side]
    travel = max(1, w - side - 2)

    truth = np.empty((frames, h, w), np.float32)
    moving = np.zeros((frames, h, w), bool)
    pred = np.empty((frames, h, w), np.float32)
    bgr = np.empty((frames, h, w, 3), np.uint8)
    span = 1.0 - 0.2
    for t in range(frames):
        phase = (t * speed * w) % (2 * travel)
        left = 1 + int(phase if phase < travel else 2 * travel - phase)
        truth[t] = static
        truth[t, top : top + side, left : left + side] = 1.0
        moving[t, top : top + side, left : left + side] = True
        scale = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
        shift = float(rng.uniform(-0.1, 0.1)) * float(truth[t].mean())
        pred[t] = scale * truth[t] + shift + noise * span * _smooth_noise(rng, size_hw, 16)
        frame = pic.copy()
        frame[top : top + side, left : left + side] = patch
        frame += rng.normal(0.0, 2.0, frame.shape).astype(np.float32)  # sensor noise
        bgr[t] = np.clip(frame, 0, 255).astype(np.uint8)
    return Scene(truth, moving, pred, bgr)


def _flicker(out: np.ndarray, scene: Scene) -> float:
    scale, _ = fit_scale_shift(out[:, ::2, ::2], scene.truth[:, ::2, ::2])
    static = ~(scene.moving[1:] | scene.moving[:-1])
    step = np.abs(out[1:] - out[:-1])
    return abs(scale) * float(step[static].mean())


def _object_error(out: np.ndarray, scene: Scene) -> float:
    errors = []
    for o, truth, obj in zip(out, scene.truth, scene.moving):
        scale, shift = fit_scale_shift(o[::2, ::2], truth[::2, ::2])
        errors.append(float(np.abs(scale * o[obj] + shift - truth[obj]).mean()))
    return float(np.mean(errors))


def _range_jump(ranges: list[tuple[float, float]]) -> float:
    worst = 0.0
    for (lo0, hi0), (lo1, hi1) in zip(ranges, ranges[1:]):
        worst = max(worst, max(abs(lo1 - lo0), abs(hi1 - hi0)) / max(hi0 - lo0, 1e-12))
    return worst


def _score(out: np.ndarray, scene: Scene, ranges: list[tuple[float, float]]) -> dict:
    return {
        "flicker": _flicker(out, scene),
        "object_error": _object_error(out, scene),
        "range_jump": _range_jump(ranges),
    }


def _display_ranges(out: np.ndarray) -> list[tuple[float, float]]:
    display = DisplayRange()
    return [display.update(o) for o in out]


def run(
    frames: int = 150,
    size_hw: tuple[int, int] = (240, 320),
    seed: int = 0,
    strength: float = DEFAULT_STRENGTH,
    noise: float = 0.03,
    speed: float = 0.015,
    scene: Scene | None = None,
) -> dict:
    """Run the comparison once.

    Args:
        frames: number of frames (ignored when ``scene`` is given).
        size_hw: ``(height, width)`` (ignored when ``scene`` is given).
        seed: random seed of the scene.
        strength: smoother strength; the EMA uses the same weight as a static pixel of
            the smoother (``TemporalSmoother.static_weight``, ``1 - 0.95 * strength``).
        noise: smooth noise std as a fraction of the truth range.
        speed: object speed, fraction of the width per frame.
        scene: a prebuilt scene to reuse across strengths.

    Returns:
        ``{"strength": s, "raw": {...}, "ema": {...}, "ours": {...}, "ours_frame": {...}}``;
        each row has ``flicker``, ``object_error`` and ``range_jump`` (per-frame min-max
        for raw and EMA, :class:`DisplayRange` for ours); raw also has
        ``range_jump_display`` (raw predictions through ``DisplayRange``).
    """
    if scene is None:
        scene = make_scene(frames, size_hw, seed, noise, speed)
    pred = scene.pred

    smoother = TemporalSmoother(strength)
    alpha = np.float32(smoother.static_weight)
    ema = np.empty_like(pred)
    ema[0] = pred[0]
    for t in range(1, len(pred)):
        ema[t] = ema[t - 1] + alpha * (pred[t] - ema[t - 1])

    ours = np.stack([smoother.update(p) for p in pred])
    smoother.reset()
    ours_frame = np.stack([smoother.update(p, f) for p, f in zip(pred, scene.bgr)])

    raw = _score(pred, scene, [minmax(p) for p in pred])
    raw["range_jump_display"] = _range_jump(_display_ranges(pred))
    return {
        "strength": float(strength),
        "raw": raw,
        "ema": _score(ema, scene, [minmax(e) for e in ema]),
        "ours": _score(ours, scene, _display_ranges(ours)),
        "ours_frame": _score(ours_frame, scene, _display_ranges(ours_frame)),
    }


def goals_met(result: dict, row: str = "ours") -> dict[str, bool]:
    """Which of the three goals ``result[row]`` meets (see :data:`GOALS`)."""
    raw, ours = result["raw"], result[row]
    return {
        "flicker_ratio": ours["flicker"] <= GOALS["flicker_ratio"] * raw["flicker"],
        "object_error_ratio": ours["object_error"]
        <= GOALS["object_error_ratio"] * raw["object_error"],
        "range_jump": ours["range_jump"] <= GOALS["range_jump"],
    }


def time_smoother(
    strength: float = DEFAULT_STRENGTH, frames: int = 300, with_frame: bool = False
) -> dict[str, float]:
    """Milliseconds per ``TemporalSmoother.update`` on a 640x480 stream.

    Returns:
        ``{"min": ..., "median": ..., "mean": ...}`` over ``frames`` calls; the minimum is
        the cost on an idle machine, the median what a busy one gives.
    """
    scene = make_scene(frames=20, size_hw=(480, 640), seed=1)
    smoother = TemporalSmoother(strength)
    for i in range(10):  # warm-up
        smoother.update(scene.pred[i], scene.bgr[i] if with_frame else None)
    times = []
    for i in range(frames):
        j = i % len(scene.pred)
        bgr = scene.bgr[j] if with_frame else None
        start = time.perf_counter()
        smoother.update(scene.pred[j], bgr)
        times.append(time.perf_counter() - start)
    ms = 1e3 * np.asarray(times)
    return {"min": float(ms.min()), "median": float(np.median(ms)), "mean": float(ms.mean())}


def _table(result: dict) -> str:
    raw = result["raw"]
    lines = [
        "| method | flicker | vs raw | object error | vs raw | range jump |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    names = {
        "raw": "raw (per-frame min-max)",
        "ema": "EMA (per-frame min-max)",
        "ours": "ours, depth only (DisplayRange)",
        "ours_frame": "ours, depth + picture (DisplayRange)",
    }
    for key, name in names.items():
        row = result[key]
        lines.append(
            f"| {name} | {row['flicker']:.4f} | {row['flicker'] / raw['flicker']:.2f} "
            f"| {row['object_error']:.4f} | {row['object_error'] / raw['object_error']:.2f} "
            f"| {100 * row['range_jump']:.2f}% |"
        )
    lines.append(f"| raw (DisplayRange) | | | | | {100 * raw['range_jump_display']:.2f}% |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the comparison at the default strength, a strength sweep and the timing."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--size", default="240x320", help="HxW of the simulated stream")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=3, help="seeds averaged in the sweep")
    parser.add_argument(
        "--strengths", default="0.25,0.5,0.65,0.8,0.9,1.0", help="comma-separated sweep"
    )
    args = parser.parse_args(argv)
    size_hw = tuple(int(v) for v in args.size.lower().split("x"))

    print(f"# Temporal stability ({args.frames} frames, {size_hw[0]}x{size_hw[1]})")
    print(f"{common.machine()}, cv2 threads {cv2.getNumThreads()}")
    print()
    result = run(args.frames, size_hw, args.seed, DEFAULT_STRENGTH)
    print(f"## Default strength {DEFAULT_STRENGTH} (seed {args.seed})")
    print()
    print(_table(result))
    print()
    for row in ("ours", "ours_frame"):
        print(f"goals met ({row}): {goals_met(result, row)}")
    print()

    strengths = [float(s) for s in args.strengths.split(",")]
    seeds = range(args.seed, args.seed + args.seeds)
    scenes = [make_scene(args.frames, size_hw, seed) for seed in seeds]
    print(f"## Strength sweep (ours, depth only / with picture; mean of {args.seeds} seeds)")
    print()
    print(
        "| strength | flicker vs raw | object error vs raw | EMA flicker vs raw "
        "| EMA object error vs raw | range jump | goals met |"
    )
    print("|---:|---:|---:|---:|---:|---:|---|")
    for strength in strengths:
        results = [run(strength=strength, scene=scene) for scene in scenes]

        def mean_ratio(row: str, key: str, rs: list[dict] = results) -> float:
            return float(np.mean([r[row][key] / r["raw"][key] for r in rs]))

        jump = max(max(r["ours"]["range_jump"], r["ours_frame"]["range_jump"]) for r in results)
        rows = ("ours", "ours_frame")
        met = all(all(goals_met(r, row).values()) for r in results for row in rows)
        print(
            f"| {strength:g} | {mean_ratio('ours', 'flicker'):.3f} / "
            f"{mean_ratio('ours_frame', 'flicker'):.3f} "
            f"| {mean_ratio('ours', 'object_error'):.3f} / "
            f"{mean_ratio('ours_frame', 'object_error'):.3f} "
            f"| {mean_ratio('ema', 'flicker'):.3f} | {mean_ratio('ema', 'object_error'):.3f} "
            f"| {100 * jump:.2f}% | {'yes' if met else 'no'} |"
        )
    print()

    print("## Cost per 640x480 frame (TemporalSmoother.update)")
    print()
    print("| input | min ms | median ms | mean ms |")
    print("|---|---:|---:|---:|")
    for name, with_frame in (("depth only", False), ("depth + picture", True)):
        ms = time_smoother(with_frame=with_frame)
        print(f"| {name} | {ms['min']:.2f} | {ms['median']:.2f} | {ms['mean']:.2f} |")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print()
    print(f"load average while timing: {load:.2f} (median and mean grow with other work)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
