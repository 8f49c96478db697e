"""Benchmark part: ``convert`` of a model other than MiDaS against the official-style loop.

Called by ``bench_convert.py --model NAME`` (Depth Anything V2 Small, relative or metric).
In one run, on the sample clip cut to ``--frames`` frames, at one input size:

  (a) the loop a user of the official code would write: OpenCV reads a frame, the
      reference's preprocessing (RGB / 255 in float64, keep-aspect resize so both sides
      are at least the input size, multiples of 14, bicubic, ImageNet mean/std), the
      network in eager torch, ``F.interpolate(bilinear, align_corners=True)`` to the
      frame, min-max, ``cv2.applyColorMap`` Inferno, ``cv2.VideoWriter``; as a whole
      process (``python -c``: import torch, build, load the weights, run);
  (b) ``depthstream convert --model NAME --input-size N`` as a whole process, per
      precision (fp32, int8), with warm model caches (made before, untimed).

It prints seconds, frames per second and the ratio (b) / (a) in speed. Without
``--weights`` it uses the tests' synthetic Depth Anything checkpoint (speed does not
depend on the weights' values), saved once under the cache.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import common
import cv2
import numpy as np

__all__ = ["official_loop", "run"]

LOOP_SCRIPT = """
import sys
sys.path.insert(0, {bench!r})
import model_convert
model_convert.official_loop({clip!r}, {out!r}, {weights!r}, {model!r}, {side!r})
"""


def weights_file(weights: str | None) -> tuple[Path, str]:
    """The Depth Anything checkpoint to time: ``weights``, or the synthetic one saved once."""
    from tests.support.dav2_weights import synthetic_torch_state_dict

    return common.saved_checkpoint(weights, "synthetic_seed7_dav2_vits.pth",
                                   lambda: synthetic_torch_state_dict(7),
                                   "tests/support/dav2_weights.py, seed 7")


def official_loop(clip: str, out: str, weights: str, model: str, side: int) -> int:
    """(a) The official code's per-frame loop, as a user would write it around it."""
    import torch
    import torch.nn.functional as F

    from stream.engines.base import default_threads
    from stream.models.registry import get_spec

    torch.set_num_threads(default_threads())
    net = get_spec(model).build()  # the reference network (golden-tested)
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    cap = cv2.VideoCapture(clip)
    fps = cap.get(cv2.CAP_PROP_FPS)
    writer, n = None, 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        h, w = frame.shape[:2]
        img = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) / 255.0
        scale = max(side / h, side / w)
        nh, nw = (_multiple_of_14(scale * v, side) for v in (h, w))
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_CUBIC)
        img = ((img - mean) / std).transpose(2, 0, 1).astype(np.float32)
        with torch.no_grad():
            depth = net(torch.from_numpy(img)[None])
            depth = F.interpolate(depth[:, None], (h, w), mode="bilinear",
                                  align_corners=True)[0, 0].numpy()
        gray = (255 * (depth - depth.min()) / (depth.max() - depth.min() + 1e-8))
        colour = cv2.applyColorMap(gray.astype(np.uint8), cv2.COLORMAP_INFERNO)
        if writer is None:
            writer = cv2.VideoWriter(out, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        writer.write(colour)
        n += 1
    cap.release()
    if writer is not None:
        writer.release()
    return n


def _multiple_of_14(x: float, side: int) -> int:
    """The reference's rounding: nearest multiple of 14, up when that falls below ``side``."""
    y = int(np.round(x / 14) * 14)
    return int(np.ceil(x / 14) * 14) if y < side else y


def run(model: str, side: int, clip: Path, frames: int, weights: str | None,
        folder: Path) -> int:
    """Time (a) and (b) for ``model`` at input ``side`` and print the table."""
    from stream.engines.factory import create_backend

    path, origin = weights_file(weights)
    precisions = ("fp32", "int8")
    for precision in precisions:  # warm model caches: conversion and int8 made untimed
        create_backend("openvino", weights=path, precision=precision, model=model,
                       progress=True).close()
    env = {**os.environ, "PYTHONPATH": str(common.ROOT)}
    loop = LOOP_SCRIPT.format(bench=str(Path(__file__).parent), clip=str(clip),
                              out=str(folder / "loop.mp4"), weights=str(path), model=model,
                              side=side)
    rows = [("official loop, torch (whole process)",
             common.run_process([sys.executable, "-c", loop], env, common.ROOT))]
    for precision in precisions:
        out = folder / f"convert_{precision}.mp4"
        rows.append((f"depthstream convert, {precision} (whole process)", common.run_process(
            [sys.executable, str(common.ROOT / "cli.py"), "convert", str(clip), "-o", str(out),
             "--model", model, "--input-size", str(side), "--weights", str(path),
             "--precision", precision, "--overwrite", "--no-progress"], env, common.ROOT)))
    print(f"machine: {common.machine()}")
    print(f"model {model}, input side {side}, weights: {origin}")
    print(f"{frames} frames of samples/clip.mp4 (640x480)")
    base = rows[0][1]
    for name, seconds in rows:
        print(f"  {name:48} {seconds:7.1f} s  {frames / seconds:5.2f} fps  "
              f"{base / seconds:4.2f}x the official loop")
    return 0
