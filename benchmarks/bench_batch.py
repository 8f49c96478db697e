"""Benchmark: `depthstream batch` on a local Ray instance against `convert`.

On frames of the bundled ``samples/clip.mp4`` (640x480, 30000/1001 fps; played forwards
and backwards to ``--frames`` and re-encoded with a keyframe every second), in one run:

  (a) ``convert`` in-process (network built beforehand): the one-machine reference;
  (b) Ray's local instance: time to start it; a worker pool: time until its first
      (tiny) file is done, network loading included;
  (c) a library of ``--files`` videos (``--frames`` in all), converted whole, with one
      worker on every CPU and with one worker per CPU: wall time and frames per second,
      and each worker's own rate (frames / its busy time);
  (d) one long video (``--frames``): whole, then in segments of ``--segment-seconds`` on
      one worker (the difference is what the segments cost: warm-up, task start, join),
      then on one worker per CPU; and how close the joined pictures are to (a).

Speed does not depend on the weights' values, so without ``--weights`` it uses the
tests' synthetic checkpoint (saved to a temporary folder); the model is fp32 (``auto``
would pick the same for those weights). The local Ray instance listens on 127.0.0.1
only and is stopped at the end.

    python benchmarks/bench_batch.py [--frames 450] [--files 3] [--segment-seconds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import common
import numpy as np

CLIP = common.ROOT / "samples" / "clip.mp4"


def make_input(path: Path, frames: int, gop: int = 30) -> Path:
    """``frames`` frames of the sample clip (forwards, then backwards, ...), one GOP a second."""
    with av.open(str(CLIP)) as source:
        pictures = [f.to_ndarray(format="bgr24") for f in source.decode(video=0)]
    cycle = pictures + pictures[-2:0:-1]
    rate = Fraction(30000, 1001)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = 640, 480, "yuv420p"
        video.options = {"preset": "veryfast", "g": str(gop), "keyint_min": str(gop),
                         "sc_threshold": "0"}
        video.codec_context.time_base = 1 / rate
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(cycle[index % len(cycle)], format="bgr24")
            frame.pts, frame.time_base = index, 1 / rate
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
    return path


def frames_of(path: Path) -> list[np.ndarray]:
    """Every frame of a video, BGR."""
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]


def batch_run(inputs: list[Path], out: Path, settings: object, **options: object) -> dict:
    """One ``run_batch``: wall time, frames, per-worker rate, the report."""
    from stream.batch import BatchSettings, run_batch
    from stream.batch.progress import BatchProgress

    batch = BatchSettings(out_dir=out, overwrite=True, **options)
    start = time.perf_counter()
    report = run_batch(inputs, settings, batch, BatchProgress(enabled=False))
    wall = time.perf_counter() - start
    busy = sum(f.seconds for f in report.files)
    assert report.failed == 0, [f.reason for f in report.files]
    return {"wall_s": wall, "frames": report.frames, "fps": report.frames / wall,
            "worker_fps": report.frames / busy if busy else 0.0, "busy_s": busy,
            "workers": report.workers,
            "cpus_per_worker": report.cpus_per_worker, "segments": report.files[0].segments,
            "join_s": sum(f.join_s for f in report.files), "report": report}


def main() -> None:
    """Run (a) to (d) and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=450)
    parser.add_argument("--files", type=int, default=3)
    parser.add_argument("--segment-seconds", type=float, default=5.0)
    parser.add_argument("--weights", help="a checkpoint (default: the synthetic one)")
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args()

    import ray
    import torch

    from stream.batch import engine
    from stream.core.settings import StreamSettings
    from stream.engines.estimator import create_estimator
    from stream.runtime.builder import convert

    work = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    os.environ.setdefault("DEPTHSTREAM_CACHE", str(work / "cache"))
    state, origin = common.state_dict(args.weights)
    weights = work / "midas_v21_small_256.pt"
    torch.save(state, weights)
    settings = StreamSettings(weights=str(weights), precision="fp32")
    long_clip = make_input(work / "in" / "long.mp4", args.frames)
    per_file = args.frames // args.files
    library = [make_input(work / "lib" / f"clip{n}.mp4", per_file) for n in range(args.files)]
    tiny = make_input(work / "tiny" / "tiny.mp4", 2)
    print(common.machine(), f"Ray {ray.__version__}", sep=", ")
    print(f"load average at the start: {os.getloadavg()[0]:.1f} (other programs share the CPUs)")
    print(f"weights: {origin}; {args.frames} frames 640x480; {args.files} files; "
          f"segments of {args.segment_seconds:g} s")

    estimator = create_estimator(str(weights), precision="fp32", progress=False)
    reference = work / "convert.mp4"
    start = time.perf_counter()
    stats = convert(long_clip, reference, settings, estimator=estimator)
    convert_s = time.perf_counter() - start
    estimator.close()
    results: dict[str, object] = {"convert": {"wall_s": convert_s,
                                              "fps": stats.frames_written / convert_s}}

    start = time.perf_counter()
    engine.start_local()
    results["ray_start_s"] = time.perf_counter() - start
    cpus = int(ray.cluster_resources().get("CPU", 1))
    pools = {"1 worker x all CPUs": {"workers": 1, "cpus_per_worker": cpus},
             f"{cpus} workers x 1 CPU": {"workers": cpus, "cpus_per_worker": 1}}
    try:
        for name, pool in pools.items():
            results[f"pool start, {name}"] = batch_run([tiny], work / "out_tiny", settings,
                                                       segment_s=0, **pool)["wall_s"]
            results[f"library, {name}"] = batch_run(library, work / "out_lib", settings,
                                                    segment_s=0, **pool)
        whole = batch_run([long_clip], work / "out_whole", settings, segment_s=0,
                          **pools["1 worker x all CPUs"])
        segmented = {name: batch_run([long_clip], work / f"out_seg{n}", settings,
                                     segment_s=args.segment_seconds, **pool)
                     for n, (name, pool) in enumerate(pools.items())}
    finally:
        ray.shutdown()
    one = segmented["1 worker x all CPUs"]
    extra = one["segments"] - 1
    results["long, whole, 1 worker"] = whole
    for name, run in segmented.items():
        results[f"long, segments, {name}"] = run
    results["segment overhead_s"] = (one["wall_s"] - whole["wall_s"]) / extra if extra else 0.0
    ref = frames_of(reference)
    got = frames_of(work / "out_seg1" / "long.mp4")
    diffs = [float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())
             for a, b in zip(ref, got)]
    starts = [s.start_index for s in _segments(long_clip, args.segment_seconds)][1:]
    results["joined vs convert"] = {"frames": [len(ref), len(got)], "mean": float(np.mean(diffs)),
                                    "max": max(diffs), "at_joins": [diffs[i] for i in starts]}
    results["load average at the end"] = os.getloadavg()[0]
    _print(results)
    if args.json:
        Path(args.json).write_text(json.dumps(_plain(results), indent=2) + "\n")


def _segments(path: Path, segment_s: float) -> tuple:
    from stream.batch.options import DEFAULT_WARMUP_S
    from stream.batch.segments import plan_video

    return plan_video(path, segment_s, DEFAULT_WARMUP_S).segments


def _plain(value: object) -> object:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if k != "report"}
    return value


def _print(results: dict) -> None:
    print(f"\n{'run':48} {'wall s':>8} {'frames/s':>9} {'per worker':>11}")
    for name, value in results.items():
        if isinstance(value, dict) and "wall_s" in value:
            worker = f"{value['worker_fps']:.2f}" if "worker_fps" in value else "-"
            print(f"{name:48} {value['wall_s']:8.1f} {value['fps']:9.2f} {worker:>11}"
                  + (f"  ({value['segments']} segments, join {value['join_s']:.2f} s)"
                     if value.get("segments", 1) > 1 else ""))
        elif isinstance(value, float):
            print(f"{name:48} {value:8.2f}")
    q = results["joined vs convert"]
    print(f"joined vs convert: frames {q['frames']}, mean difference {q['mean']:.2f} levels, "
          f"max {q['max']:.2f}, at the joins {', '.join(f'{d:.2f}' for d in q['at_joins'])}")


if __name__ == "__main__":
    main()
