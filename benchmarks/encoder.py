"""Encoder settings: file size, encoding time and quality of depth videos, per codec/preset/CRF.

Runs the network once over the sample clip (``samples/clip.mp4``, 640x480, 360 frames),
keeps the depth frames in memory, then writes them with :class:`stream.sinks.video.VideoFileSink`
for each setting on one encoder thread (as ``convert`` does) and reports, per setting, the
sink's CPU time per frame (colouring + colour conversion + encoding, all threads of the
process: robust on a busy machine, where wall time is not), the file size and its ratio
to the input's video stream, and the PSNR of the decoded video against the rendered
frames. The README's encoder table comes from here; ``CODEC_DEFAULTS`` is the knee of
size against time. Writes its videos to a temporary folder; starts the pipeline's threads
once.

    python benchmarks/encoder.py [--weights midas_v21_small_256.pt] [--frames 360]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import av
import common
import numpy as np

from stream.core.settings import EncoderSettings, StreamSettings
from stream.depth.render import Renderer
from stream.runtime.builder import build_convert, run
from stream.sinks.base import CallbackSink, SinkContext
from stream.sinks.video import VideoFileSink

ROOT = Path(__file__).resolve().parent.parent

SETTINGS = (
    [("h264", p, c) for p in ("ultrafast", "superfast", "veryfast", "faster", "medium")
     for c in (18, 20, 23, 26, 28)]
    + [("hevc", p, c) for p in ("ultrafast", "superfast", "fast") for c in (23, 28, 32)]
    + [("vp9", p, c) for p in ("ultrafast", "veryfast", "fast") for c in (30, 34, 40)]
    + [("ffv1", None, None)]
)


def depth_frames(clip: Path, weights: str | None, limit: int) -> tuple[list, object]:
    """The clip's DepthFrames (default settings: smoothed, inferno) and its VideoInfo."""
    if weights is None:
        import torch

        path = Path(tempfile.mkdtemp()) / "midas_v21_small_256.pt"
        torch.save(common.synthetic_state_dict(0), path)
        weights = str(path)
    frames: list = []
    pipeline = build_convert(clip, None, StreamSettings(weights=weights),
                             extra_sinks=[CallbackSink(frames.append)])
    run(pipeline)
    return frames[:limit], pipeline.source.info


def psnr(path: Path, frames: list, renderer: Renderer) -> float:
    """Mean PSNR (dB, BGR) of the decoded video against the rendered frames."""
    values = []
    with av.open(str(path)) as container:
        for frame, decoded in zip(frames, container.decode(video=0)):
            ref = renderer.render(frame).astype(np.float64)
            got = decoded.to_ndarray(format="bgr24")[: ref.shape[0], : ref.shape[1]]
            mse = float(np.mean((got - ref) ** 2))
            values.append(99.0 if mse == 0 else 10 * math.log10(255.0**2 / mse))
    return float(np.mean(values))


def main() -> None:  # noqa: D103
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", help="checkpoint (default: the tests' synthetic one)")
    parser.add_argument("--clip", default=str(ROOT / "samples" / "clip.mp4"))
    parser.add_argument("--frames", type=int, default=360)
    args = parser.parse_args()
    clip = Path(args.clip)
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        input_kbps = stream.bit_rate / 1000
    frames, info = depth_frames(clip, args.weights, args.frames)
    seconds = len(frames) / float(info.rate)
    renderer = Renderer()
    start = time.process_time()
    for frame in frames:
        renderer.render(frame)
    render_ms = (time.process_time() - start) * 1000 / len(frames)
    print(common.machine())
    print(f"{clip.name}: {len(frames)} frames, video {input_kbps:.0f} kb/s; colouring alone "
          f"{render_ms:.1f} ms/frame")
    print("| codec | preset | crf | CPU ms/frame | size kB | kb/s | x input | PSNR dB |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for codec, preset, crf in SETTINGS:
            out = Path(tmp) / ("out.mkv" if codec == "ffv1" else "out.mp4")
            sink = VideoFileSink(out, renderer, overwrite=True,
                                 encoder=EncoderSettings(codec, crf, preset))
            sink.open(SinkContext(info))
            start = time.process_time()
            for frame in frames:
                sink.write(frame)
            sink.close()
            ms = (time.process_time() - start) * 1000 / len(frames)
            kbps = sink.size_bytes * 8 / 1000 / seconds
            print(f"| {codec} | {preset or '-'} | {crf if crf is not None else '-'} | "
                  f"{ms:.1f} | {sink.size_bytes / 1000:.0f} | {kbps:.0f} | "
                  f"{kbps / input_kbps:.2f} | {psnr(out, frames, renderer):.1f} |", flush=True)


if __name__ == "__main__":
    main()
