"""Test helpers for video: clip generators (PyAV), a truncator, a local MJPEG server, a cheap model.

Shared by every test that needs a video, a stream or a fast stand-in for the network::

    from helpers_video import make_clip, truncate, MjpegServer, cheap_estimator

Nothing here is a fixture: tests call these with their own ``tmp_path``.
"""

from __future__ import annotations

import http.server
import socketserver
import threading
import time
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from stream.backends import Backend
from stream.inference import DepthEstimator

__all__ = [
    "NTSC",
    "pattern",
    "make_clip",
    "make_audio_only",
    "truncate",
    "read_video",
    "audio_duration_s",
    "MjpegServer",
    "CheapBackend",
    "cheap_estimator",
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


class MjpegServer:
    """An MJPEG-over-HTTP camera on 127.0.0.1 (ephemeral port), paced at ``fps``.

    Serves ``multipart/x-mixed-replace`` JPEG parts, as IP cameras do, looping over the
    given frames. Each client gets its own paced stream; a slow client is throttled by
    TCP, as with a real camera. Bounded: it stops on ``stop()`` or after ``max_s``.

    Args:
        frames_or_clip: BGR frames, or a video file whose frames are served.
        fps: frames per second to send.
        max_s: longest time one client is served.

    Example:
        >>> with MjpegServer([img], fps=30).start() as server:  # doctest: +SKIP
        ...     cv2.VideoCapture(server.url)
    """

    def __init__(self, frames_or_clip: Sequence[np.ndarray] | str | Path, fps: float = 30.0,
                 max_s: float = 120.0) -> None:
        if isinstance(frames_or_clip, (str, Path)):
            frames = read_video(frames_or_clip)["images"]
        else:
            frames = list(frames_or_clip)
        if not frames:
            raise ValueError("MjpegServer needs at least one frame")
        self.jpegs = [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
                      for f in frames]
        self.fps = fps
        self.max_s = max_s
        self.sent = 0
        self._stop = threading.Event()
        self._server: socketserver.ThreadingTCPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>/stream.mjpg``."""
        assert self._server is not None, "start() the server first"
        return f"http://127.0.0.1:{self._server.server_address[1]}/stream.mjpg"

    def start(self) -> MjpegServer:
        """Listen and serve in a daemon thread; return ``self``."""
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                start = time.monotonic()
                n = 0
                while not owner._stop.is_set() and time.monotonic() - start < owner.max_s:
                    jpeg = owner.jpegs[n % len(owner.jpegs)]
                    try:
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                         + f"Content-Length: {len(jpeg)}\r\n\r\n".encode()
                                         + jpeg + b"\r\n")
                        self.wfile.flush()
                    except OSError:
                        return  # the client went away
                    n += 1
                    owner.sent += 1
                    # An absolute schedule: the rate holds however long a write took.
                    delay = start + n / owner.fps - time.monotonic()
                    if delay > 0:
                        owner._stop.wait(delay)

            def log_message(self, *args: object) -> None:
                pass

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="mjpeg-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (clients see the stream end)."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> MjpegServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class CheapBackend(Backend):
    """TEST DOUBLE, not the network: a blur of the input's channel mean, plus a fixed delay.

    For tests about the pipeline (memory, latency, drops, threads) rather than the
    model: it runs in about a millisecond (plus ``delay_s``, slept, so it costs no CPU)
    and its output still depends on the picture. ``fail_at`` raises on that call, to
    test how a failing inference thread stops the others.
    """

    name = "cheap-test-double"

    def __init__(self, delay_s: float = 0.0, fail_at: int | None = None) -> None:
        self.delay_s = delay_s
        self.fail_at = fail_at
        self.calls = 0

    def infer(self, x: np.ndarray) -> np.ndarray:  # noqa: D102
        self.calls += 1
        if self.fail_at is not None and self.calls > self.fail_at:
            raise RuntimeError(f"cheap backend failed on call {self.calls} (as asked)")
        if self.delay_s:
            time.sleep(self.delay_s)
        mean = x[0].mean(axis=0).astype(np.float32)
        return cv2.GaussianBlur(mean, (9, 9), 0) + np.float32(3.0)


def cheap_estimator(delay_s: float = 0.0, fail_at: int | None = None) -> DepthEstimator:
    """A :class:`DepthEstimator` on :class:`CheapBackend` (a test double)."""
    return DepthEstimator(CheapBackend(delay_s, fail_at))
