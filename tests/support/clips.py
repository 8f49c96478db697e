"""Test clips: make, read and truncate small videos with PyAV (writes the files it is given).

Every test that needs a video makes its own in its ``tmp_path``::

    from support.clips import make_clip, read_video

    clip = make_clip(tmp_path / "in.mp4", frames=12)
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

__all__ = [
    "NTSC",
    "pattern",
    "make_clip",
    "make_mixed_size_clip",
    "make_audio_only",
    "truncate",
    "read_video",
    "audio_duration_s",
]

NTSC = Fraction(30000, 1001)
"""The frame rate that must survive a conversion exactly."""

_VFR_STEPS = (1500, 3000, 6000)  # 1/60, 1/30 and 1/15 s in a 1/90000 time base


def pattern(index: int, size_wh: tuple[int, int]) -> np.ndarray:
    """Frame ``index`` of the test clips: BGR uint8, different for every index.

    A horizontal ramp that shifts with the index, a bright bar that moves down and a
    blue level that counts, so neighbouring frames differ clearly (after H.264 too).
    """
    width, height = size_wh
    image = np.zeros((height, width, 3), np.uint8)
    image[:, :, 2] = ((np.arange(width) * 255 // max(width - 1, 1) + 9 * index) % 256)[None, :]
    image[:, :, 0] = (index * 37) % 256
    bar = (index * 3) % max(height - height // 6, 1)
    image[bar:bar + max(height // 6, 1), :, 1] = 255
    return image


def make_clip(
    path: str | Path,
    frames: int,
    size_wh: tuple[int, int] = (64, 48),
    rate: Fraction = NTSC,
    audio: bool = True,
    vfr: bool = False,
    faststart: bool = False,
    codec: str = "libx264",
) -> Path:
    """Write a test video of ``frames`` :func:`pattern` frames.

    Args:
        path: output file; the container follows the extension (``.mp4``, ``.mkv``...).
        frames: number of frames.
        size_wh: frame size (even sides for H.264).
        rate: constant frame rate as an exact fraction (time base ``1/rate``).
        audio: add a mono 48 kHz AAC sine track as long as the video.
        vfr: variable frame rate: frame durations cycle unevenly through 1/60, 1/30 and
            1/15 s in a 1/90000 time base (``rate`` is then only the nominal rate).
        faststart: put the MP4 index first, so a truncated copy still opens.
        codec: video encoder.

    Returns:
        ``path``.
    """
    path = Path(path)
    width, height = size_wh
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        video = container.add_stream(codec, rate=rate)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": "ultrafast"} if codec == "libx264" else {}
        time_base = Fraction(1, 90000) if vfr else 1 / Fraction(rate)
        video.codec_context.time_base = time_base
        sound = None
        if audio:
            sound = container.add_stream("aac", rate=48000)
            sound.layout = "mono"
        pts = 0
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(pattern(index, size_wh), format="bgr24")
            frame.pts, frame.time_base = pts, time_base
            pts += _VFR_STEPS[(index * index + index // 3) % 3] if vfr else 1
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if sound is not None:
            _write_tone(container, sound, float(pts * time_base))
    return path


def mux_frames(container: av.container.OutputContainer, stream: av.VideoStream,
               images: Iterable[np.ndarray]) -> None:
    """Encode BGR ``images`` into ``stream`` with pts 0, 1, 2... and flush the encoder."""
    for index, image in enumerate(images):
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts = index
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def make_mixed_size_clip(path: str | Path,
                         parts: Iterable[tuple[int, tuple[int, int]]]) -> Path:
    """An MJPEG video (``.avi``, ``.mkv``) whose frame size changes: ``(frames, size_wh)`` parts.

    As concatenated clips and some cameras give: one stream, its header saying the first
    part's size, each picture coded at its own size. Frames are :func:`pattern` frames
    numbered on across the parts, 30 fps, pts 0, 1, 2...
    """
    path = Path(path)
    parts = list(parts)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mjpeg", rate=30)
        stream.width, stream.height = parts[0][1]
        stream.pix_fmt = "yuvj420p"
        stream.codec_context.time_base = Fraction(1, 30)
        index = 0
        for count, (width, height) in parts:
            encoder = av.CodecContext.create("mjpeg", "w")
            encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuvj420p"
            encoder.time_base = Fraction(1, 30)
            for _ in range(count):
                frame = av.VideoFrame.from_ndarray(pattern(index, (width, height)),
                                                   format="bgr24").reformat(format="yuvj420p")
                frame.pts = index
                for packet in encoder.encode(frame):
                    packet.stream, packet.pts, packet.dts = stream, index, index
                    container.mux(packet)
                index += 1
    return path


def make_audio_only(path: str | Path, seconds: float = 1.0) -> Path:
    """An ``.m4a``/``.mp4`` with an AAC tone and no video stream."""
    path = Path(path)
    with av.open(str(path), "w", format="mp4") as container:
        sound = container.add_stream("aac", rate=48000)
        sound.layout = "mono"
        _write_tone(container, sound, seconds)
    return path


def _write_tone(container: av.container.OutputContainer, stream: av.AudioStream,
                seconds: float) -> None:
    total, done = int(round(seconds * 48000)), 0
    while done < total:
        count = min(1024, total - done)
        t = np.arange(done, done + count) / 48000.0
        samples = (0.2 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 48000, done
        for packet in stream.encode(frame):
            container.mux(packet)
        done += count
    for packet in stream.encode():
        container.mux(packet)


def truncate(path: str | Path, keep: float = 0.6, out: str | Path | None = None) -> Path:
    """Cut a file to its first ``keep`` fraction of bytes (in place, or into ``out``).

    An MP4 made with ``faststart=True`` still opens and decodes its first frames; one
    without loses its index (``moov``) and does not open at all.
    """
    path = Path(path)
    data = path.read_bytes()
    target = Path(out) if out is not None else path
    target.write_bytes(data[: int(len(data) * keep)])
    return target


def read_video(path: str | Path) -> dict:
    """What a player sees in a video file: frames (BGR), pts, seconds, rate, streams."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        images, pts = [], []
        for frame in container.decode(stream):
            images.append(frame.to_ndarray(format="bgr24"))
            pts.append(frame.pts)
        return {
            "images": images,
            "pts": pts,
            "seconds": [float(p * stream.time_base) for p in pts],
            "rate": stream.average_rate,
            "time_base": stream.time_base,
            "size_wh": (stream.codec_context.width, stream.codec_context.height),
            "codec": stream.codec_context.name,
            "audio": [(s.codec_context.name, s.codec_context.sample_rate)
                      for s in container.streams.audio],
        }


def audio_duration_s(path: str | Path) -> float:
    """Seconds of audio in a file: from its first packet's start to its last packet's end."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        first = last = None
        for packet in container.demux(stream):
            if packet.pts is None:
                continue
            end = packet.pts + (packet.duration or 0)
            first = packet.pts if first is None else min(first, packet.pts)
            last = end if last is None else max(last, end)
        if first is None:
            return 0.0
        return float((last - first) * stream.time_base)
