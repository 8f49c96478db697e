"""Benchmark: `convert` against the seed article's sequential loop and the bare backend.

On one generated 640x480 clip (the bundled ``samples/clip.mp4``: 360 frames at 30000/1001,
made by ``samples/make_samples.py``), in one run, it times:

  (a) the seed's loop: read a frame with OpenCV, the official-style transform, eager torch
      network, bicubic resize, min-max, ``cv2.applyColorMap`` Inferno, ``cv2.VideoWriter``;
  (b) ``stream.convert`` with default settings (default backend, smoothing on,
      H.264 + audio copy);
  (c) the backend alone (``Backend.imap``) on the same frames, decoded and preprocessed
      beforehand,

and prints frames per second for each, the ratios b/a and b/c (median of ``--repeats``
runs), and the machine. Model loading is outside every timing. Speed does not depend on
the weights' values, so without ``--weights`` it uses the tests' synthetic checkpoint.

    python benchmarks/bench_convert.py [--repeats 3] [--frames 300] [--weights PATH]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import common
import cv2
import numpy as np
import torch

from stream import DepthEstimator, MidasSmall, StreamSettings, convert, create_backend
from stream.backends import default_threads
from stream.transforms import preprocess_array

CLIP = common.ROOT / "samples" / "clip.mp4"


def trimmed_clip(frames: int, folder: Path) -> Path:
    """The sample clip cut to ``frames`` frames (stream copy), so every run sees the same."""
    import av

    out = folder / "bench.mp4"
    with av.open(str(CLIP)) as src, av.open(str(out), "w") as dst:
        vin = src.streams.video[0]
        vout = dst.add_stream_from_template(vin)
        n = 0
        for packet in src.demux(vin):
            if packet.dts is None:
                continue
            if n >= frames:
                break
            packet.stream = vout
            dst.mux(packet)
            n += 1
    return out


def seed_loop(clip: Path, out: Path, state: dict) -> int:
    """(a) The seed article's loop, one frame at a time on the calling thread."""
    torch.set_num_threads(default_threads())
    model = MidasSmall().eval()
    model.load_state_dict(state)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    cap = cv2.VideoCapture(str(clip))
    fps = cap.get(cv2.CAP_PROP_FPS)
    writer = None
    n = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        img = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) / 255.0
        h, w = img.shape[:2]
        scale = min(256 / h, 256 / w)
        nh = int(np.round(scale * h / 32) * 32)
        nw = int(np.round(scale * w / 32) * 32)
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_CUBIC)
        img = ((img - mean) / std).transpose(2, 0, 1).astype(np.float32)
        with torch.no_grad():
            pred = model(torch.from_numpy(img).unsqueeze(0))
            pred = torch.nn.functional.interpolate(
                pred.unsqueeze(1), size=(h, w), mode="bicubic", align_corners=False
            ).squeeze().numpy()
        lo, hi = pred.min(), pred.max()
        gray = (255 * (pred - lo) / (hi - lo + 1e-8)).astype(np.uint8)
        colour = cv2.applyColorMap(gray, cv2.COLORMAP_INFERNO)
        if writer is None:
            writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        writer.write(colour)
        n += 1
    cap.release()
    if writer is not None:
        writer.release()
    return n


def decoded_inputs(clip: Path) -> list[np.ndarray]:
    """Every frame of ``clip`` as network input (decoded and preprocessed, untimed)."""
    import av

    with av.open(str(clip)) as container:
        return [preprocess_array(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]


def bare_backend(estimator: DepthEstimator, inputs: list[np.ndarray]) -> int:
    """(c) The backend alone, with as many requests in flight as it likes."""
    n = 0
    for _ in estimator.backend.imap(enumerate(inputs)):
        n += 1
    return n


def timed(fn, *args) -> tuple[float, int]:
    """``(seconds, frames)`` for one call of ``fn``."""
    start = time.perf_counter()
    frames = fn(*args)
    return time.perf_counter() - start, frames


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", help="checkpoint (default: the tests' synthetic one)")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", default="auto")
    args = parser.parse_args(argv)

    state, origin = common.state_dict(args.weights)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        clip = trimmed_clip(args.frames, folder)
        estimator = DepthEstimator(create_backend(args.backend, state))
        inputs = decoded_inputs(clip)
        # warm-up: first inferences compile kernels and fill caches
        bare_backend(estimator, inputs[:8])
        rows: dict[str, list[float]] = {"a": [], "b": [], "c": []}
        for _ in range(args.repeats):
            secs, n = timed(seed_loop, clip, folder / "seed.mp4", state)
            rows["a"].append(n / secs)
            out = folder / "convert.mp4"
            out.unlink(missing_ok=True)
            secs, n = timed(lambda: convert(clip, out, StreamSettings(),
                                            estimator=estimator).frames_written)
            rows["b"].append(n / secs)
            secs, n = timed(bare_backend, estimator, inputs)
            rows["c"].append(n / secs)
        estimator.close()

    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"machine: {common.machine()}")
    print(f"weights: {origin}")
    print(f"clip: {args.frames} frames 640x480, backend {estimator.backend.name}, "
          f"median of {args.repeats}")
    print()
    print("| run | fps (median) | runs |")
    print("| --- | ---: | --- |")
    names = {"a": "(a) seed loop (OpenCV, eager torch, cv2.VideoWriter)",
             "b": "(b) depthstream convert, defaults",
             "c": f"(c) {estimator.backend.name} backend alone"}
    for k in "abc":
        print(f"| {names[k]} | {med[k]:.2f} | {', '.join(f'{v:.2f}' for v in rows[k])} |")
    print()
    ratios_ba = [b / a for a, b in zip(rows["a"], rows["b"])]
    ratios_bc = [b / c for b, c in zip(rows["b"], rows["c"])]
    print(f"b/a = {statistics.median(ratios_ba):.2f} (goal >= 2.0)   "
          f"b/c = {statistics.median(ratios_bc):.2f} (goal >= 0.85)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
