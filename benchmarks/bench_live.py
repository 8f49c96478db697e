"""Benchmark: live latency from a local 30 fps MJPEG camera, against one inference.

Serves the bundled clip as an MJPEG-over-HTTP camera on 127.0.0.1 (the tests' fake
camera), runs the live pipeline on it with the default backend for ``--seconds`` (no
window), and prints frames read / inferred / dropped, the mean inference time and the
capture-to-render latency p50/p95, with the ratio p50 / inference (goal: at most 2).
Without ``--weights`` it uses the tests' synthetic checkpoint (speed does not depend on
the weights' values), saved once as a file so that the cached models are used
(``--precision int8`` quantizes once, about a minute, then reads the cache).

    python benchmarks/bench_live.py [--seconds 20] [--precision int8] [--weights PATH]
    python benchmarks/bench_live.py --model dav2-small [--input-size 196]
"""

from __future__ import annotations

import argparse
import os
import sys

import common
import model_convert
import numpy as np
from bench_convert import weights_file

from stream import Pipeline, StreamSettings, create_estimator
from stream.models.registry import get_spec
from stream.sources.capture import LiveSource
from tests.support.mjpeg import MjpegServer


def main(argv: list[str] | None = None) -> int:
    """Run the live benchmark and print its numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--precision", default="fp32", choices=("auto", "fp32", "int8"))
    parser.add_argument("--weights", help="checkpoint (default: the tests' synthetic one)")
    parser.add_argument("--model", default="midas-small", help="the network (default: midas)")
    parser.add_argument("--input-size", type=int, default=None,
                        help="the input side (default: the model's live default)")
    args = parser.parse_args(argv)
    spec = get_spec(args.model)
    if spec.name == "midas-small":
        weights, origin = weights_file(args.weights)
    else:
        weights, origin = model_convert.weights_file(args.weights)
    side = args.input_size or spec.default_side(live=True)
    estimator = create_estimator(str(weights), args.backend, live=True,
                                 precision=args.precision, model=spec, input_size=side)
    rgb = np.zeros((480, 640, 3), np.uint8)
    estimator.predict(rgb)  # compile, untimed
    clip = common.ROOT / "samples" / "clip.mp4"
    with MjpegServer(clip, fps=30, max_s=args.seconds + 30).start() as camera:
        source = LiveSource.from_url(camera.url)
        settings = StreamSettings(duration_s=args.seconds)
        stats = Pipeline(source, estimator, [], settings).start().join(args.seconds + 60)
    estimator.close()
    print(f"machine: {common.machine()}")
    print(f"model {spec.name}, input side {side}, weights: {origin}, backend "
          f"{estimator.backend.name}, precision {estimator.backend.precision}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} "
          "(other jobs share the cores)")
    print(f"{args.seconds:.0f} s of a 640x480 MJPEG camera at 30 fps on 127.0.0.1")
    print(f"frames read {stats.frames_read}, inferred {stats.frames_inferred}, "
          f"dropped {stats.frames_dropped}, shown {stats.frames_written} ({stats.fps:.1f} fps)")
    print(f"inference {stats.inference_ms_mean:.0f} ms; latency capture->render "
          f"p50 {stats.latency_ms_p50:.0f} ms, p95 {stats.latency_ms_p95:.0f} ms")
    print(f"p50 / inference = {stats.latency_ms_p50 / stats.inference_ms_mean:.2f} (goal <= 2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
