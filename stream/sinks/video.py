"""Video sink: rendered depth frames encoded to MP4, MKV or WebM, with sound.

H.264, H.265 (HEVC), VP9 or lossless FFV1, at the quality and speed of
:class:`~stream.core.settings.EncoderSettings`. Touches files (PyAV); starts no threads. The
video is written to a temporary next to the output (:class:`stream.core.files.PartFile`) and
renamed into place when closed, so an output path holds either nothing or a playable
file: a run that fails leaves nothing there (:meth:`VideoFileSink.abort`), a stopped run
(Ctrl+C) a playable file of what it wrote. Without ``overwrite`` a file that appeared at
the path meanwhile is never replaced. A full disk ends the video where it is (disk
space kept aside for that, :class:`stream.core.files.ReservedFile`): the frames written
are kept beside the output (``out.partial.mp4``), or one line says they could not be.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from stream.core.errors import SinkError
from stream.core.files import PartFile, ReservedFile, check_output_path, disk_full
from stream.core.records import DepthFrame
from stream.core.settings import EncoderSettings, VideoCodec
from stream.depth.render import Renderer
from stream.sinks.base import Sink, SinkContext
from stream.sources.audio import AudioTrack
from stream.sources.capture import av_reason

__all__ = ["VIDEO_FORMATS", "check_video_output", "Encoding", "encoding_for", "VideoFileSink"]


@dataclass(frozen=True)
class _VideoFormat:
    container: str
    audio_codec: str


VIDEO_FORMATS: dict[str, _VideoFormat] = {
    ".mp4": _VideoFormat("mp4", "aac"),
    ".mkv": _VideoFormat("matroska", "aac"),
    ".webm": _VideoFormat("webm", "libopus"),
}
"""Output video types by extension: container and audio codec (the video codec's choices
are :data:`stream.core.settings.CONTAINER_CODECS`)."""

# VP9 has no named presets: x264's names map to libvpx's deadline and cpu-used. The
# "realtime" deadline is many times faster than the default "good".
_VP9_SPEED = {
    "ultrafast": ("realtime", 8), "superfast": ("realtime", 7), "veryfast": ("realtime", 6),
    "faster": ("realtime", 5), "fast": ("good", 5), "medium": ("good", 3),
    "slow": ("good", 2), "slower": ("good", 1), "veryslow": ("good", 0),
}


@dataclass(frozen=True)
class Encoding:
    """What FFmpeg is asked for: encoder name, its options, pixel format, codec tag."""

    codec_name: str
    options: dict[str, str]
    pix_fmt: str
    codec_tag: str | None = None


def encoding_for(encoder: EncoderSettings, suffix: str, threads: int = 1) -> Encoding:
    """The FFmpeg encoder and options for ``encoder`` in a ``suffix`` file.

    Raises:
        ConfigError: the container cannot hold the codec, or the CRF is out of range.
    """
    enc = encoder.for_container(suffix)
    crf, preset = str(enc.crf), str(enc.preset)
    if enc.codec is VideoCodec.H264:
        return Encoding("libx264", {"preset": preset, "crf": crf}, "yuv420p")
    if enc.codec is VideoCodec.HEVC:
        # x265 prints its settings on stderr unless told not to; its thread pool follows
        # ``threads`` (the codec context's thread count does not reach it).
        params = f"log-level=error:pools={threads}:frame-threads={threads}"
        tag = "hvc1" if suffix.lower() == ".mp4" else None  # hvc1: what players expect in MP4
        return Encoding("libx265", {"preset": preset, "crf": crf, "x265-params": params},
                        "yuv420p", tag)
    if enc.codec is VideoCodec.VP9:
        deadline, cpu_used = _VP9_SPEED[preset]
        return Encoding("libvpx-vp9", {"deadline": deadline, "cpu-used": str(cpu_used),
                                       "row-mt": "1", "crf": crf, "b": "0"}, "yuv420p")
    # FFV1 version 3 with per-slice checksums, in RGB: every rendered pixel is kept.
    return Encoding("ffv1", {"level": "3", "slicecrc": "1"}, "bgr0")

_LIVE_TIME_BASE = Fraction(1, 90000)
# Frames are rendered and converted to I420 in bands of about this many pixels.
_BAND_PIXELS = 1 << 21
# H.264 of pictures larger than 4K UHD is written without B-frames (bounded memory).
_BFRAMES_MAX_PIXELS = 3840 * 2160
# Disk space kept aside to end a video on a full disk: the index grows with the packets
# written (MP4 about 20 bytes per video frame and 8 per sound packet; 64 is generous),
# and a frame that finds the disk full may still need up to about its raw size.
_RESERVE_BASE = 1 << 20
_RESERVE_PER_FRAME = 64
_RESERVE_STEP = 1 << 18
# Matroska holds a cluster in memory and writes it whole (up to 5 MiB by default): smaller
# ones keep every write within the space kept aside.
_MUXER_OPTIONS = {"matroska": {"cluster_size_limit": str(1 << 19)},
                  "webm": {"cluster_size_limit": str(1 << 19)}}


def check_video_output(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Check a video output path: a known extension, an existing folder, not there yet.

    Raises:
        SinkError: unknown extension, missing folder, or an existing file without
            ``overwrite``.
    """
    path = Path(path)
    if path.suffix.lower() not in VIDEO_FORMATS:
        raise SinkError(f"cannot write video as {path.suffix or 'a file without extension'}: "
                        f"{path} (use {', '.join(VIDEO_FORMATS)})")
    return check_output_path(path, overwrite=overwrite)


class VideoFileSink(Sink):
    """Encode rendered frames with PyAV: H.264, HEVC, VP9 or FFV1 in MP4, MKV or WebM.

    The output keeps the input's exact frame rate (``30000/1001`` stays so) and every
    frame's timestamp (variable frame rate stays in sync): frames are encoded in the
    source's time base with the source's pts. With ``audio_from``, that file's first
    audio stream is copied packet by packet when the container takes its codec, else
    re-encoded (AAC, Opus for WebM), interleaved with the video up to the last frame.
    Written to a temporary next to ``path`` and renamed when closed; no frame -> no file.

    A frame of another size than the stream's first (a stream whose size changes) is
    scaled to fit the first one's size, keeping its shape (black bars), and one warning
    line says so when the video is finished.

    Args:
        path: output file, ``.mp4``, ``.mkv`` or ``.webm``.
        renderer: layout and colours.
        audio_from: the input video whose audio to carry over (``None``: no audio).
        overwrite: replace an existing file.
        threads: encoder threads (few, so the encoder leaves the cores to the network).
        encoder: codec, CRF and preset (default: the container's codec and its defaults,
            :data:`stream.core.settings.CODEC_DEFAULTS`).
        warnings: where to report what went wrong without failing the file (damaged
            audio packets skipped); the run's list, so it lands in the run's stats.

    Raises:
        SinkError: bad extension, missing folder, or existing file (at construction);
            a full disk (the line says where the frames written were kept);
            :class:`~stream.core.files.OutputTaken` when another file took the path.
        ConfigError: the container cannot hold the codec, or the CRF is out of its range
            (at construction).
    """

    def __init__(self, path: str | os.PathLike, renderer: Renderer | None = None,
                 audio_from: str | os.PathLike | None = None, overwrite: bool = False,
                 threads: int = 1, encoder: EncoderSettings | None = None,
                 warnings: list[str] | None = None) -> None:
        self.path = check_video_output(path, overwrite=overwrite)
        self.overwrite = overwrite
        self.warnings = warnings if warnings is not None else []
        self.encoding = encoding_for(encoder or EncoderSettings(), self.path.suffix, threads)
        self.renderer = renderer or Renderer()
        self.audio_from = Path(audio_from) if audio_from is not None else None
        self.threads = threads
        self.frames_written = 0
        self.size_bytes = 0
        self._output: Any = None
        self._part: PartFile | None = None
        self._file: ReservedFile | None = None
        self._audio: AudioTrack | None = None
        self._closed = False
        self._first_pts: int | None = None
        self._last_pts: int | None = None
        self._packets = 0  # video packets in the file: the frames a full disk keeps
        self._reserve = 0
        self._other_sizes: _OtherSizes | None = None

    def open(self, context: SinkContext) -> None:
        """Create the temporary file and its streams (on the render thread)."""
        info = context.info
        fmt = VIDEO_FORMATS[self.path.suffix.lower()]
        width, height = _even(self.renderer.size_wh(info.size_wh))
        self._part = PartFile(self.path, replace=self.overwrite)
        self._reserve = _room_needed((width, height), 0) + _RESERVE_STEP
        try:
            self._file = ReservedFile(self._part.path, self.path, self._reserve)
        except SinkError:
            self._part.discard()
            raise
        try:
            self._output = av.open(self._file, "w", format=fmt.container,
                                   options=_MUXER_OPTIONS.get(fmt.container, {}))
            # Encode in the source's own time base with its pts: the rate and every
            # timestamp survive exactly (no rounding to 1/rate ticks).
            self._time_base = info.time_base or _LIVE_TIME_BASE
            self._rate = info.rate or Fraction(30)
            encoding = self.encoding
            stream = self._output.add_stream(encoding.codec_name, rate=self._rate)
            stream.width, stream.height, stream.pix_fmt = width, height, encoding.pix_fmt
            stream.codec_context.time_base = self._time_base
            stream.time_base = self._time_base
            stream.codec_context.thread_count = self.threads
            if encoding.codec_tag is not None:
                stream.codec_tag = encoding.codec_tag
            options = dict(encoding.options)
            if encoding.codec_name == "libx264" and width * height > _BFRAMES_MAX_PIXELS:
                # x264 keeps several full-size frames (with their half-pixel planes) per
                # B-frame it may place: past 4K that alone runs to gigabytes.
                options["bf"] = "0"
            stream.options = options
            self._stream = stream
            if self.audio_from is not None and info.has_audio:
                self._audio = AudioTrack(self.audio_from, self._output, fmt.audio_codec,
                                         warnings=self.warnings)
            self._output.start_encoding()
            if self._audio is not None:
                self._audio.start()
        except (av.FFmpegError, OSError) as exc:
            self._discard()
            raise SinkError(f"cannot write video {self.path}: {av_reason(exc)}") from exc
        self._size_wh = (width, height)
        self._other_sizes = _OtherSizes(info.size_wh, self._size_wh, self.renderer)
        self._first_pts: int | None = None
        self._last_pts: int | None = None
        self._last_step = max(1, round(1 / (self._rate * self._time_base)))

    def write(self, frame: DepthFrame) -> None:
        """Render, encode and mux one frame (and the audio up to its time).

        Raises:
            SinkError: the frame cannot be written; on a full disk the video is ended
                there and the line says where its frames were kept.
        """
        pts = frame.pts if frame.pts is not None else round(frame.timestamp / self._time_base)
        if self._last_pts is not None:
            if pts <= self._last_pts:  # equal monotonic stamps after rounding: keep order
                pts = self._last_pts + 1
            self._last_step = pts - self._last_pts
        else:
            self._first_pts = pts
        self._last_pts = pts
        av_frame = self._av_frame(frame)
        av_frame.pts, av_frame.time_base = pts, self._time_base
        try:
            if self._audio is not None:
                self._audio.pump(float(pts * self._time_base))
            for packet in self._stream.encode(av_frame):
                self._output.mux(packet)
                self._packets += 1
        except (av.FFmpegError, OSError) as exc:
            raise SinkError(f"cannot write frame {frame.index} to {self.path}: "
                            f"{av_reason(exc)}") from exc
        self.frames_written += 1
        if not self._keep_room() or self._file.disk_full:
            raise SinkError(f"cannot write frame {frame.index} to {self.path}: the disk is "
                            f"full; {self._keep_partial()}")

    def _av_frame(self, frame: DepthFrame) -> Any:
        """The encoder's frame for ``frame`` (scaled to fit when its size is another)."""
        if frame.size_wh != self._other_sizes.input_wh:
            return self._other_sizes.av_frame(frame, self._stream.pix_fmt)
        if self._stream.pix_fmt == "yuv420p":
            # The encoder reads the array itself (no copy into a frame of its own).
            return av.VideoFrame.from_numpy_buffer(self.yuv420(frame), format="yuv420p")
        image = _pad_to(self.renderer.render(frame), self._size_wh)
        return av.VideoFrame.from_ndarray(image, format="bgr24")

    def _keep_room(self) -> bool:
        """Grow the disk space kept aside with the file's index; False: the disk is full."""
        needed = _room_needed(self._size_wh, self._packets)
        if needed <= self._reserve:
            return True
        self._reserve = needed + _RESERVE_STEP
        return self._file.grow_reserve(self._reserve)

    def yuv420(self, frame: DepthFrame) -> np.ndarray:
        """The rendered frame as I420 (``[H * 3 / 2, W]``, planes Y, U, V), band by band.

        OpenCV converts to limited-range BT.601 I420 as swscale does (within 1 level) in
        a fraction of swscale's time, which the network needs. Bands of an even number
        of rows convert exactly as the whole picture would; a large frame's rendering
        never exists at full size in BGR.
        """
        return _yuv420(self.renderer, frame, self._size_wh)

    def close(self) -> None:
        """Flush the encoder, add the rest of the audio, write the trailer, rename.

        Safe to call twice; the trailer is written once. With no frame written the
        temporary file is removed and no output appears.

        Raises:
            SinkError: the video cannot be finished (nothing at the path), the disk
                filled while it was (the frames written are kept beside the path), or
                :class:`~stream.core.files.OutputTaken`.
        """
        if self._closed:
            return
        self._closed = True
        if self._output is None:
            return
        if self.frames_written == 0:
            self._discard()
            return
        if self._other_sizes.warning(self.path):
            self.warnings.append(self._other_sizes.warning(self.path))
        try:
            for packet in self._stream.encode():
                if self._file.disk_full:
                    break  # what room is left goes to the index
                self._output.mux(packet)
                self._packets += 1
            if self._audio is not None and not self._file.disk_full:
                end = (self._last_pts + self._last_step) * self._time_base
                self._audio.finish(float(end))
        except (av.FFmpegError, OSError) as exc:
            if not disk_full(exc):
                self._discard()
                raise SinkError(f"cannot finish video {self.path}: {av_reason(exc)}") from exc
        if self._file.disk_full:
            raise SinkError(f"cannot finish video {self.path}: the disk is full; "
                            f"{self._keep_partial()}")
        try:
            self._output.close()
            self._output = None
            self._file.close()
            self.size_bytes = self._part.commit().stat().st_size
        except (av.FFmpegError, OSError) as exc:
            if isinstance(exc, SinkError):
                raise  # OutputTaken: the file was kept beside the path
            self._discard()
            raise SinkError(f"cannot finish video {self.path}: {av_reason(exc)}") from exc
        finally:
            if self._audio is not None:
                self._audio.close()

    def abort(self, error: BaseException | None = None) -> str | None:
        """The run failed: end without putting anything at the path (safe to call twice).

        After a full disk (``error`` says so) the frames written are kept beside the
        path, as a playable file where the disk allows.

        Returns:
            A line saying where the frames were kept, or that they could not be; ``None``
            when nothing was kept.
        """
        if self._closed:
            return None
        if self._output is not None and disk_full(error):
            return self._keep_partial()
        self._closed = True
        self._discard()
        return None

    def _keep_partial(self) -> str:
        """End the video where it is (index, no encoder flush) and keep it beside the path."""
        self._closed = True
        kept = self._packets
        if kept == 0:
            self._discard()
            return "no frame had reached the file"
        try:
            self._output.close()  # the index, in the room kept aside for it
            self._output = None
            self._file.close()
            where = self._part.keep_beside("partial")
        except (av.FFmpegError, OSError):
            self._discard()
            return f"the {kept} frames written could not be kept (no room for the index)"
        finally:
            if self._audio is not None:
                self._audio.close()
        return f"the {kept} frames written were kept in {where}"

    @property
    def duration_s(self) -> float:
        """Seconds of video written: first frame to the end of the last one."""
        if self._first_pts is None or self._last_pts is None:
            return 0.0
        return float((self._last_pts + self._last_step - self._first_pts) * self._time_base)

    @property
    def bitrate_kbps(self) -> float | None:
        """The finished file's average bit rate (kbit/s, sound included), else ``None``."""
        if not self.size_bytes or self.duration_s <= 0:
            return None
        return self.size_bytes * 8 / 1000 / self.duration_s

    def _discard(self) -> None:
        """Close without a trailer and remove the temporary file."""
        if self._audio is not None:
            self._audio.close()
        if self._output is not None:
            try:
                self._output.close()
            except (av.FFmpegError, OSError):
                pass  # the file is removed anyway
            self._output = None
        if self._file is not None:
            self._file.close()
        if self._part is not None:
            self._part.discard()


def _yuv420(renderer: Renderer, frame: DepthFrame, size_wh: tuple[int, int]) -> np.ndarray:
    """:meth:`VideoFileSink.yuv420`: ``frame`` rendered at ``size_wh`` as I420, in bands."""
    width, height = size_wh
    rendered_rows = frame.image.shape[0]
    yuv = np.empty((height * 3 // 2, width), np.uint8)
    flat = yuv.reshape(-1)
    luma, chroma = height * width, height * width // 4
    rows = max(2, (_BAND_PIXELS // width) & ~1)
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        band = renderer.render_rows(frame, top, min(bottom, rendered_rows))
        band = cv2.cvtColor(_pad_to(band, (width, bottom - top)), cv2.COLOR_BGR2YUV_I420)
        band = band.reshape(-1)
        n = (bottom - top) * width
        flat[top * width:bottom * width] = band[:n]
        start, end = top * width // 4, bottom * width // 4
        flat[luma + start:luma + end] = band[n:n + n // 4]
        flat[luma + chroma + start:luma + chroma + end] = band[n + n // 4:]
    return yuv


class _OtherSizes:
    """Frames of another size than a stream's first: scaled to fit it, counted, told once."""

    def __init__(self, input_wh: tuple[int, int], output_wh: tuple[int, int],
                 renderer: Renderer) -> None:
        self.input_wh, self.output_wh, self.renderer = input_wh, output_wh, renderer
        self.count = 0
        self.first: tuple[int, int, int] | None = None  # width, height, index

    def av_frame(self, frame: DepthFrame, pix_fmt: str) -> Any:
        """The encoder's frame: ``frame`` rendered, scaled to fit the output, centred."""
        self.count += 1
        self.first = self.first or (*frame.size_wh, frame.index)
        image = _fit(self.renderer.render(frame), self.output_wh)
        if pix_fmt != "yuv420p":
            return av.VideoFrame.from_ndarray(image, format="bgr24")
        yuv = cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420)
        return av.VideoFrame.from_numpy_buffer(yuv, format="yuv420p")

    def warning(self, path: Path) -> str | None:
        """The one warning line, when frames of another size came."""
        if self.first is None:
            return None
        (w0, h0), (width, height, index) = self.input_wh, self.first
        return (f"{path}: the input's frame size changes ({w0}x{h0}, then {width}x{height} "
                f"from frame {index}): {self.count} frames were scaled to fit {w0}x{h0}")


def _room_needed(size_wh: tuple[int, int], packets: int) -> int:
    """Disk bytes to keep aside: an index of ``packets``, and one frame that finds no room."""
    return _RESERVE_BASE + 3 * size_wh[0] * size_wh[1] + _RESERVE_PER_FRAME * packets


def _even(size_wh: tuple[int, int]) -> tuple[int, int]:
    """Round a size up to even sides (yuv420p halves both for its colour planes)."""
    width, height = size_wh
    return width + width % 2, height + height % 2


def _fit(image: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """``image`` scaled to fit ``size_wh`` with its shape kept, centred on black."""
    width, height = size_wh
    h, w = image.shape[:2]
    scale = min(width / w, height / h)
    new_w, new_h = max(1, min(width, round(w * scale))), max(1, min(height, round(h * scale)))
    if (new_w, new_h) != (w, h):
        image = cv2.resize(image, (new_w, new_h),
                           interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    out = np.zeros((height, width, 3), np.uint8)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    out[top:top + new_h, left:left + new_w] = image
    return out


def _pad_to(image: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Repeat the last row/column so ``image`` is ``size_wh`` (at most one pixel each)."""
    width, height = size_wh
    pad_h, pad_w = height - image.shape[0], width - image.shape[1]
    if pad_h == 0 and pad_w == 0:
        return image
    return cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_REPLICATE)
