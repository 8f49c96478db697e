"""Benchmark: `convert` and `image` in fp32 and int8, in-process and as whole processes.

On the bundled ``samples/clip.mp4`` (640x480, 30000/1001 fps, made by
``samples/make_samples.py``) cut to ``--frames`` frames, in one run, it times:

  (a) the seed article's loop: read a frame with OpenCV, the official-style transform,
      eager torch network, bicubic resize, min-max, ``cv2.applyColorMap`` Inferno,
      ``cv2.VideoWriter``; in-process (model built beforehand) and as a whole process
      (``python -c``: import torch, build the network, load the weights, run);
  (b) ``depthstream convert`` with default settings (OpenVINO, smoothing, H.264)
      for each precision: in-process (``stream.convert`` with a built estimator) and as a
      whole process (``python cli.py convert --precision P``), with the time from the
      process start to its first written frame;
  (c) the backend alone (``Backend.imap``, requests in flight) and one request at a time
      (``infer``, as ``live`` runs it), per precision, on frames decoded and
      preprocessed beforehand; the backend alone runs ``--ratio-rounds`` rounds that
      alternate the precisions (medians, and the median of the per-round ratios);
  (d) ``depthstream image`` on one 640x480 picture as a whole process, per precision,
      against a plain script that imports torch, builds the network, loads the weights
      and runs it once; and how long an argument error takes to exit 2;
  (e) the rest of a frame's work, stage by stage (decode, preprocess, output resize,
      smoother, colour, encode).

The model caches are warm for every timed run: the run starts by making the fp32 and
int8 models for the checkpoint (int8 quantization takes about a minute, once). Speed
does not depend on the weights' values, so without ``--weights`` it uses the tests'
synthetic checkpoint, saved once to ``<cache>/bench/``; int8's self-check on those
weights fails (they are not a trained network), so ``auto`` would choose fp32 for them,
and ``--precision int8`` is asked for by name.

    python benchmarks/bench_convert.py [--frames 240] [--repeats 1] [--ratio-rounds 5]
                                       [--weights PATH]
    python benchmarks/bench_convert.py --model dav2-small [--input-size 266] [--frames 60]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common
import cv2
import numpy as np

CLIP = common.ROOT / "samples" / "clip.mp4"
PICTURE_SIZE_WH = (640, 480)
PRECISIONS = ("fp32", "int8")

# The seed article's loop, as a script: one process does everything, as a user's would.
SEED_SCRIPT = """
import sys, time
sys.path.insert(0, {bench!r})
import bench_convert
n = bench_convert.seed_loop({clip!r}, {out!r}, {weights!r})
"""

# A plain one-picture script: import torch, build the network, load weights, run once.
PLAIN_IMAGE_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
import cv2, numpy as np, torch
from stream.models.midas import MidasSmall
model = MidasSmall().eval()
model.load_state_dict(torch.load({weights!r}, map_location="cpu", weights_only=True))
bgr = cv2.imread({picture!r})
img = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) / 255.0
h, w = img.shape[:2]
img = cv2.resize(img, (256, 192), interpolation=cv2.INTER_CUBIC)
img = ((img - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).transpose(2, 0, 1)
with torch.no_grad():
    pred = model(torch.from_numpy(img).float()[None])[0].numpy()
pred = cv2.resize(pred, (w, h), interpolation=cv2.INTER_CUBIC)
gray = (255 * (pred - pred.min()) / (pred.max() - pred.min() + 1e-8)).astype(np.uint8)
cv2.imwrite({out!r}, cv2.applyColorMap(gray, cv2.COLORMAP_INFERNO))
"""

# `convert` as a user runs it, noting when the first frame is written.
CLI_SCRIPT = """
import sys, time
sys.path.insert(0, {root!r})
import stream.cli as cli
first = []
call = cli._ProgressBar.__call__
def noted(self, done, total):
    if not first:
        first.append(time.time())
        with open({first_path!r}, "w") as f:
            f.write(repr(first[0]))
    return call(self, done, total)
cli._ProgressBar.__call__ = noted
sys.exit(cli.main(sys.argv[1:]))
"""


def weights_file(weights: str | None) -> tuple[Path, str]:
    """The MiDaS checkpoint to time: ``weights``, or the synthetic one saved once."""
    return common.saved_checkpoint(weights, "synthetic_seed0_midas_v21_small_256.pt",
                                   lambda: common.synthetic_state_dict(0),
                                   "tests/support/weights.py, seed 0")


def trimmed_clip(frames: int, folder: Path) -> Path:
    """The sample clip's video cut to ``frames`` frames (stream copy): every run sees the same."""
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


def seed_loop(clip: Path | str, out: Path | str, weights: Path | str) -> int:
    """(a) The seed article's loop, one frame at a time on the calling thread."""
    import torch

    from stream.engines.base import default_threads
    from stream.models.midas import MidasSmall

    torch.set_num_threads(default_threads())
    model = MidasSmall().eval()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
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


def decoded_frames(clip: Path) -> list[np.ndarray]:
    """Every frame of ``clip`` as RGB uint8 (decoded beforehand, untimed)."""
    import av

    with av.open(str(clip)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def timed(fn, *args) -> tuple[float, int]:
    """``(seconds, frames)`` for one call of ``fn``."""
    start = time.perf_counter()
    frames = fn(*args)
    return time.perf_counter() - start, frames


def prepare(weights: Path) -> dict[str, object]:
    """Make the fp32 and int8 models (untimed); return the estimators per precision."""
    from stream.engines.estimator import create_estimator

    return {p: create_estimator(str(weights), precision=p) for p in PRECISIONS}


def stage_times(frames: list[np.ndarray], estimator, clip: Path) -> dict[str, float]:
    """(e) Median ms per frame of each stage besides the network, on the clip's frames."""
    import av

    from stream.depth.colormap import DisplayRange, colorize
    from stream.depth.smoothing import TemporalSmoother
    from stream.models.transforms import preprocess_array, resize_depth

    out: dict[str, list[float]] = {k: [] for k in
                                   ("decode", "preprocess", "resize", "smoother", "colour")}
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        start = time.perf_counter()
        for frame in container.decode(stream):
            frame.to_ndarray(format="bgr24")
            out["decode"].append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
    nets = []
    for rgb in frames[:60]:
        t0 = time.perf_counter()
        x = preprocess_array(rgb)
        out["preprocess"].append((time.perf_counter() - t0) * 1000)
        nets.append(estimator.backend.infer(x))
    smoother, colours = TemporalSmoother(0.8), DisplayRange()
    for rgb, net in zip(frames[:60], nets):
        t0 = time.perf_counter()
        depth = resize_depth(net, rgb.shape[:2])
        t1 = time.perf_counter()
        smoothed = smoother.update(depth, rgb[:, :, ::-1])
        t2 = time.perf_counter()
        lo, hi = colours.update(smoothed)
        colorize(smoothed, lo, hi)
        t3 = time.perf_counter()
        out["resize"].append((t1 - t0) * 1000)
        out["smoother"].append((t2 - t1) * 1000)
        out["colour"].append((t3 - t2) * 1000)
    return {k: statistics.median(v[5:] or v) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:  # noqa: C901 - one linear report
    """Run the benchmark and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", help="checkpoint (default: the tests' synthetic one)")
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--ratio-rounds", type=int, default=5,
                        help="interleaved fp32/int8 backend rounds for the throughput ratio")
    parser.add_argument("--model", default="midas-small",
                        help="another model (dav2-small, ...) runs model_convert.py's "
                             "comparison with the official-style loop instead")
    parser.add_argument("--input-size", type=int, default=266,
                        help="with --model: the input side of both (default: 266)")
    args = parser.parse_args(argv)
    if args.ratio_rounds < 1:
        parser.error("--ratio-rounds must be at least 1")
    if args.model != "midas-small":
        import model_convert

        with tempfile.TemporaryDirectory() as tmp:
            clip = trimmed_clip(args.frames, Path(tmp))
            return model_convert.run(args.model, args.input_size, clip, args.frames,
                                     args.weights, Path(tmp))

    from stream import StreamSettings, convert

    weights, origin = weights_file(args.weights)
    estimators = prepare(weights)
    env = dict(os.environ)
    env.pop("DEPTHSTREAM_WEIGHTS", None)
    rows: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        rows.setdefault(name, []).append(value)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        clip = trimmed_clip(args.frames, folder)
        frames = decoded_frames(clip)
        from stream.models.transforms import preprocess_array

        inputs = [preprocess_array(rgb) for rgb in frames]
        picture = folder / "picture.png"
        cv2.imwrite(str(picture), cv2.cvtColor(frames[len(frames) // 2], cv2.COLOR_RGB2BGR))
        for p in PRECISIONS:  # warm-up: compile every shape and hint once
            backend = estimators[p].backend
            for _ in backend.imap(enumerate(inputs[:8])):
                pass
            backend.infer(inputs[0])
        for _ in range(args.repeats):
            secs, n = timed(seed_loop, clip, folder / "seed.mp4", weights)
            add("a_in", n / secs)
            secs = common.run_process([sys.executable, "-c", SEED_SCRIPT.format(
                bench=str(Path(__file__).parent), clip=str(clip), out=str(folder / "s.mp4"),
                weights=str(weights))], env, folder)
            add("a_proc", len(frames) / secs)
            for p in PRECISIONS:
                out = folder / f"convert_{p}.mp4"
                out.unlink(missing_ok=True)
                secs, n = timed(lambda e=estimators[p], o=out: convert(
                    clip, o, StreamSettings(), estimator=e).frames_written)
                add(f"b_in_{p}", n / secs)
                out.unlink(missing_ok=True)
                first_path = folder / "first.txt"
                first_path.unlink(missing_ok=True)
                script = folder / "cli_run.py"
                script.write_text(CLI_SCRIPT.format(root=str(common.ROOT),
                                                    first_path=str(first_path)))
                start = time.time()
                secs = common.run_process([sys.executable, str(script), "convert", str(clip), "-o",
                                    str(out), "--weights", str(weights), "--precision", p],
                                   env, folder)
                add(f"b_proc_{p}", len(frames) / secs)
                add(f"ttff_{p}", float(first_path.read_text()) - start)
                latencies = []
                for x in inputs[:60]:
                    t0 = time.perf_counter()
                    estimators[p].backend.infer(x)
                    latencies.append((time.perf_counter() - t0) * 1000)
                add(f"c_ms_{p}", statistics.median(latencies))
                img_out = folder / f"image_{p}.png"
                add(f"d_image_{p}", common.run_process(
                    [sys.executable, str(common.ROOT / "cli.py"), "image", str(picture), "-o",
                     str(img_out), "--overwrite", "--weights", str(weights), "--precision", p],
                    env, folder))
            add("d_plain", common.run_process([sys.executable, "-c", PLAIN_IMAGE_SCRIPT.format(
                root=str(common.ROOT), weights=str(weights), picture=str(picture),
                out=str(folder / "plain.png"))], env, folder))
            start = time.perf_counter()
            subprocess.run([sys.executable, str(common.ROOT / "cli.py"), "convert", "x.mp4",
                            "--precision", "int4"], env=env, cwd=folder, capture_output=True)
            add("d_argerr", time.perf_counter() - start)
        # The backend alone in interleaved rounds: load that comes and goes then hits
        # both precisions alike (their ratio is taken round by round).
        for _ in range(args.ratio_rounds):
            for p in PRECISIONS:
                secs, n = timed(lambda b=estimators[p].backend: sum(
                    1 for _ in b.imap(enumerate(inputs))))
                add(f"c_imap_{p}", n / secs)
        stages = stage_times(frames, estimators["fp32"], clip)
        with tempfile.TemporaryDirectory() as tmp2:
            stats_path = Path(tmp2) / "stats.json"
            convert(clip, Path(tmp2) / "o.mp4", StreamSettings(stats_path=stats_path),
                    estimator=estimators["fp32"])
            run_stats = json.loads(stats_path.read_text())
    for e in estimators.values():
        e.close()

    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"machine: {common.machine()}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (other jobs share the cores)")
    print(f"weights: {origin}")
    print(f"clip: {len(frames)} frames 640x480; median of {args.repeats} run(s)")
    print()
    print("| run | fp32 | int8 |")
    print("| --- | ---: | ---: |")
    print(f"| (a) seed loop, in-process / whole process (fps) | {med['a_in']:.2f} | "
          f"{med['a_proc']:.2f} |")
    for label, key, fmt in (
        ("(b) `convert`, in-process (fps)", "b_in", "{:.2f}"),
        ("(b) `convert`, whole process (fps)", "b_proc", "{:.2f}"),
        ("(b) whole process: start to first frame (s)", "ttff", "{:.2f}"),
        ("(c) backend alone, requests in flight (fps)", "c_imap", "{:.2f}"),
        ("(c) one inference, `live`'s latency mode (ms)", "c_ms", "{:.1f}"),
        ("(d) `image`, one picture, whole process (s)", "d_image", "{:.2f}"),
    ):
        print(f"| {label} | {fmt.format(med[f'{key}_fp32'])} | "
              f"{fmt.format(med[f'{key}_int8'])} |")
    print(f"| (d) plain script, one picture (s) | {med['d_plain']:.2f} | |")
    print(f"| (d) argument error, exit 2 (s) | {med['d_argerr']:.2f} | |")
    print()
    for p in PRECISIONS:
        print(f"{p}: convert whole process / seed loop whole process = "
              f"{med[f'b_proc_{p}'] / med['a_proc']:.2f}; in-process / seed in-process = "
              f"{med[f'b_in_{p}'] / med['a_in']:.2f}; convert / backend alone = "
              f"{med[f'b_in_{p}'] / med[f'c_imap_{p}']:.2f}; image / plain script = "
              f"{med[f'd_image_{p}'] / med['d_plain']:.2f}")
    ratios = [i / f for i, f in zip(rows["c_imap_int8"], rows["c_imap_fp32"])]
    print(f"int8 / fp32 backend throughput = {statistics.median(ratios):.2f} (median of "
          f"{len(ratios)} interleaved rounds, {min(ratios):.2f}-{max(ratios):.2f}), "
          f"latency = {med['c_ms_fp32'] / med['c_ms_int8']:.2f}x faster")
    print()
    print("Rest of a frame (fp32 run, ms per 640x480 frame, medians; stats from one convert):")
    print("| stage | ms |")
    print("| --- | ---: |")
    for name, value in stages.items():
        print(f"| {name} | {value:.2f} |")
    for key in ("capture_ms_mean", "inference_ms_mean", "smoothing_ms_mean", "render_ms_mean"):
        print(f"| convert --stats {key} | {run_stats[key]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
