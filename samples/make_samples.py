"""Make the shipped samples: four photographs as JPEG and a 12 s pan-and-zoom clip of them.

Sources are the public-domain / CC0 pictures that scikit-image ships (a dev-only
dependency: the samples are generated once and committed). The clip is a slow Ken Burns
pan and zoom across the pictures with short crossfades, H.264 640x480 at 30000/1001 fps,
with a quiet AAC chord of the same length. Deterministic: re-running it with the same
library versions writes the same pictures and frames.

Usage:
    python samples/make_samples.py [--out DIR]
"""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import skimage.data

__all__ = ["PICTURES", "main", "make_audio", "make_frames"]

# name -> (start, end) of the pan: (centre x, centre y, zoom) as fractions of the picture;
# zoom 1 is the largest 4:3 crop that fits, larger zooms in.
PICTURES = {
    "astronaut": ((0.50, 0.55, 1.00), (0.42, 0.35, 1.45)),
    "coffee": ((0.40, 0.50, 1.05), (0.55, 0.45, 1.30)),
    "chelsea": ((0.60, 0.50, 1.00), (0.45, 0.45, 1.35)),
    "rocket": ((0.50, 0.65, 1.30), (0.55, 0.35, 1.05)),
}
SIZE_WH = (640, 480)
RATE = Fraction(30000, 1001)
SHOT_FRAMES = 102  # 3.4 s on each picture ...
FADE_FRAMES = 16  # ... overlapping its neighbour by about 0.5 s: 4 * 102 - 3 * 16 = 360 frames
AUDIO_RATE = 48000
JPEG_QUALITY = 90


def _smoothstep(t: float) -> float:
    return t * t * (3.0 - 2.0 * t)


def _ken_burns(rgb: np.ndarray, start: tuple, end: tuple, t: float) -> np.ndarray:
    """One frame of the pan at time ``t`` in [0, 1], warped with sub-pixel accuracy."""
    h, w = rgb.shape[:2]
    out_w, out_h = SIZE_WH
    cx, cy, zoom = (a + (b - a) * _smoothstep(t) for a, b in zip(start, end))
    crop_w = min(w, h * out_w / out_h) / zoom
    crop_h = crop_w * out_h / out_w
    # keep the crop inside the picture, so no black borders appear
    x0 = float(np.clip(cx * w - crop_w / 2, 0, w - crop_w))
    y0 = float(np.clip(cy * h - crop_h / 2, 0, h - crop_h))
    scale = out_w / crop_w
    # an integer crop would jitter by a pixel from frame to frame; an affine warp does not
    m = np.array([[scale, 0.0, -x0 * scale], [0.0, scale, -y0 * scale]])
    return cv2.warpAffine(rgb, m, SIZE_WH, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


def make_frames(pictures: dict[str, np.ndarray]) -> list[np.ndarray]:
    """All RGB uint8 frames of the clip: each picture panned, neighbours crossfaded."""
    step = SHOT_FRAMES - FADE_FRAMES
    total = step * (len(pictures) - 1) + SHOT_FRAMES
    acc = np.zeros((total, SIZE_WH[1], SIZE_WH[0], 3), np.float32)
    for k, (name, rgb) in enumerate(pictures.items()):
        start, end = PICTURES[name]
        for i in range(SHOT_FRAMES):
            weight = 1.0
            if k > 0 and i < FADE_FRAMES:
                weight = (i + 0.5) / FADE_FRAMES
            if k < len(pictures) - 1 and i >= SHOT_FRAMES - FADE_FRAMES:
                weight = (SHOT_FRAMES - i - 0.5) / FADE_FRAMES
            frame = _ken_burns(rgb, start, end, i / (SHOT_FRAMES - 1))
            acc[k * step + i] += weight * frame.astype(np.float32)
    return [np.clip(f + 0.5, 0, 255).astype(np.uint8) for f in acc]


def make_audio(n_samples: int) -> np.ndarray:
    """A quiet A-major chord with a slow swell and fades, float32 ``[1, n]`` mono."""
    t = np.arange(n_samples) / AUDIO_RATE
    tone = sum(np.sin(2 * np.pi * f * t) / (k + 1) for k, f in enumerate((220.0, 277.18, 329.63)))
    swell = 0.75 + 0.25 * np.sin(2 * np.pi * t / 6.0)
    fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.5)
    return (0.12 * tone * swell * fade).astype(np.float32)[None, :]


def write_clip(path: Path, frames: list[np.ndarray]) -> None:
    """Encode frames (libx264, yuv420p) and the chord (AAC) into an MP4 of one length."""
    with av.open(str(path), "w", options={"movflags": "+faststart"}) as out:
        video = out.add_stream("libx264", rate=RATE, options={"crf": "23", "preset": "slow"})
        video.width, video.height = SIZE_WH
        video.pix_fmt = "yuv420p"
        audio = out.add_stream("aac", rate=AUDIO_RATE, layout="mono")
        audio.bit_rate = 64_000
        for rgb in frames:
            out.mux(video.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(video.encode())
        samples = make_audio(round(len(frames) / RATE * AUDIO_RATE))
        chunk = 1024  # one AAC frame each
        for start in range(0, samples.shape[1], chunk):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(samples[:, start:start + chunk]), format="fltp", layout="mono"
            )
            frame.sample_rate = AUDIO_RATE
            frame.pts = start
            out.mux(audio.encode(frame))
        out.mux(audio.encode())


def main(argv: list[str] | None = None) -> int:
    """Write the pictures and the clip into ``--out`` (default: this folder)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    pictures = {name: getattr(skimage.data, name)() for name in PICTURES}
    for name, rgb in pictures.items():
        path = args.out / f"{name}.jpg"
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(path), bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        print(f"{path}  {rgb.shape[1]}x{rgb.shape[0]}  {path.stat().st_size} bytes")
    frames = make_frames(pictures)
    clip = args.out / "clip.mp4"
    write_clip(clip, frames)
    print(f"{clip}  {len(frames)} frames at {RATE} fps  {clip.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
