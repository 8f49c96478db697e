"""Segments: a long video cut at keyframes, each piece converted alone, joined losslessly.

Reads videos (PyAV) and writes joined outputs (through :mod:`stream.core.files`, atomically);
starts no threads. :func:`plan_video` finds a video's keyframes (demuxing, no decoding)
and cuts it into :class:`Segment` s of about the asked length. A worker converts one
segment with :class:`SegmentSource` (decoding starts a warm-up stretch earlier, so the
smoother and the colour range have settled when the segment's first frame comes) and
:class:`SegmentSinks` (warm-up frames are not written). Every segment is encoded with the
same settings, so :func:`join_videos` can concatenate their packets into one file without
re-encoding, with the sound copied once from the source, and :func:`join_raw` gathers the
raw depth files. Joins place every segment by the pts its plan gave its first frame, in
the source's time base: a container that stores a segment's start in coarser units (MP4's
edit list, in milliseconds) does not move the frames after a cut.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from stream.core.errors import SinkError, SourceError, StreamError
from stream.core.files import PartFile, atomic_dir, write_text_atomic
from stream.core.records import DepthFrame
from stream.sinks.base import RawDepthSink, Sink, SinkContext
from stream.sinks.video import VIDEO_FORMATS
from stream.sources.audio import AudioTrack
from stream.sources.capture import FileSource, av_reason

__all__ = ["Segment", "VideoPlan", "plan_video", "SegmentSource", "SegmentSinks",
           "join_videos", "join_raw", "check_frames"]

# A last piece shorter than this share of the segment length joins the one before it.
_MIN_TAIL = 0.25


@dataclass(frozen=True)
class Segment:
    """A stretch of a video between two keyframes, and where its warm-up starts.

    Attributes:
        number: 0-based position in the video.
        seek_pts: the keyframe decoding starts at (``None``: the file's start).
        warm_pts: the first frame run through the network (the warm-up's start).
        start_pts: the first frame written (a keyframe).
        end_pts: the next segment's ``start_pts``; ``None`` for the last segment.
        first_index: the frame index (in the whole video) of ``warm_pts``.
        start_index: the frame index of ``start_pts``.
        frames: frames written (from ``start_pts`` up to ``end_pts``).
    """

    number: int
    seek_pts: int | None
    warm_pts: int
    start_pts: int
    end_pts: int | None
    first_index: int
    start_index: int
    frames: int

    @property
    def warmup_frames(self) -> int:
        """Frames run through the network before ``start_pts``, not written."""
        return self.start_index - self.first_index


@dataclass(frozen=True)
class VideoPlan:
    """What :func:`plan_video` found: frame count, length, and the segments (or none).

    Attributes:
        frames: frames in the video (``None``: unknown, not scanned).
        duration_s: seconds from the first frame to the last one's end, if known.
        has_audio: the file has a sound track.
        time_base: the video stream's time base.
        rate: its average frame rate.
        segments: the pieces to convert in parallel; empty: convert the file whole.
    """

    frames: int | None
    duration_s: float | None
    has_audio: bool
    time_base: Fraction | None = None
    rate: Fraction | None = None
    segments: tuple[Segment, ...] = ()


def _scan(stream: Any, container: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """Sorted pts of every frame and of the keyframes; ``None`` if some frame has no pts."""
    pts, keys = [], []
    for packet in container.demux(stream):
        if packet.size == 0 or getattr(packet, "is_discard", False):
            continue  # the demuxer's final empty packet, or one an edit list drops
        if packet.pts is None:
            return None
        pts.append(packet.pts)
        if packet.is_keyframe:
            keys.append(packet.pts)
    return np.sort(np.asarray(pts, np.int64)), np.sort(np.asarray(keys, np.int64))


def _boundaries(pts: np.ndarray, keys: np.ndarray, step: int) -> list[int]:
    """Segment starts: the first frame, then the first keyframe ``step`` ticks on, ..."""
    starts = [int(pts[0])]
    tail = max(1, int(step * _MIN_TAIL))
    for key in keys:
        if key >= starts[-1] + step and pts[-1] - key >= tail:
            starts.append(int(key))
    return starts


def plan_video(path: str | os.PathLike, segment_s: float, warmup_s: float) -> VideoPlan:
    """Cut a video into segments of about ``segment_s`` seconds at keyframes.

    Args:
        path: the video.
        segment_s: target length; 0 (or a video not longer than this) converts the file
            whole, and then the packets are not scanned.
        warmup_s: how long before each segment decoding starts.

    Raises:
        SourceError: the file does not open as a video.
    """
    try:
        container = av.open(os.fspath(path))
    except (av.FFmpegError, OSError) as exc:
        raise SourceError(f"cannot read {path} as a video: {av_reason(exc)}") from exc
    with container:
        if not container.streams.video:
            raise SourceError(f"{path} has no video stream")
        stream = container.streams.video[0]
        has_audio = bool(container.streams.audio)
        duration = (float(stream.duration * stream.time_base) if stream.duration
                    and stream.time_base else (container.duration or 0) / av.time_base or None)
        time_base = stream.time_base
        rate = stream.average_rate or stream.guessed_rate
        rate = Fraction(rate) if rate else None
        whole = VideoPlan(stream.frames or None, duration, has_audio, time_base, rate)
        if segment_s <= 0 or (duration is not None and duration <= segment_s):
            return whole
        try:
            scanned = _scan(stream, container)
        except av.FFmpegError:
            return whole  # a damaged file: converted whole, as convert would
    if scanned is None or scanned[0].size == 0 or not time_base:
        return whole
    pts, keys = scanned
    frames = int(pts.size)
    last_step = int(pts[-1] - pts[-2]) if frames > 1 else 1
    duration = float((int(pts[-1]) + last_step - int(pts[0])) * time_base)
    starts = _boundaries(pts, keys, max(1, math.ceil(segment_s / time_base)))
    if len(starts) < 2:
        return VideoPlan(frames, duration, has_audio, time_base, rate)
    warm = max(0, math.ceil(warmup_s / time_base))
    segments = []
    for number, start in enumerate(starts):
        end = starts[number + 1] if number + 1 < len(starts) else None
        start_index = int(np.searchsorted(pts, start))
        end_index = int(np.searchsorted(pts, end)) if end is not None else frames
        if number == 0:
            seek, first_index = None, start_index
        else:
            # The last frame at least ``warmup_s`` before the start: a full warm-up.
            first_index = max(0, int(np.searchsorted(pts, start - warm, side="right")) - 1)
            earlier = keys[keys <= pts[first_index]]
            seek = int(earlier[-1]) if earlier.size else int(keys[0])
        segments.append(Segment(number, seek, int(pts[first_index]), start, end, first_index,
                                start_index, end_index - start_index))
    return VideoPlan(frames, duration, has_audio, time_base, rate, tuple(segments))


class SegmentSource(FileSource):
    """A :class:`FileSource` for one segment: its warm-up and frames, indexed as in the file.

    Decoding starts at ``segment.seek_pts``; frames before ``warm_pts`` are decoded but not
    yielded, and decoding stops at ``end_pts``. Each frame keeps its pts and gets its index
    in the whole video, so raw depth files are named as a one-machine run names them.

    Raises:
        SourceError: the file cannot be opened.
    """

    def __init__(self, path: str | os.PathLike, segment: Segment) -> None:
        super().__init__(path)
        self.segment = segment
        total = segment.frames + segment.warmup_frames
        self.info = dataclasses.replace(self.info, frames=total, has_audio=False)

    def frames(self, stop: Any = None) -> Any:
        """Yield the warm-up frames, then the segment's, then close the file."""
        segment = self.segment
        if segment.seek_pts is not None:
            self.seek(segment.seek_pts)
        inner = super().frames(stop)
        index = segment.first_index
        try:
            for frame in inner:
                if frame.pts is None or frame.pts < segment.warm_pts:
                    continue
                if segment.end_pts is not None and frame.pts >= segment.end_pts:
                    break
                yield dataclasses.replace(frame, index=index)
                index += 1
        finally:
            inner.close()
            self.close()


class SegmentSinks(Sink):
    """Sinks for one segment: frames before ``start_index`` (the warm-up) are not written.

    Args:
        sinks: the segment's video and raw depth sinks.
        start_index: the first frame to write.
        on_frame: called with the count of frames written after each one.
    """

    def __init__(self, sinks: Sequence[Sink], start_index: int,
                 on_frame: Callable[[int], Any] | None = None) -> None:
        self.sinks = list(sinks)
        self.start_index = start_index
        self.on_frame = on_frame
        self.written = 0

    @property
    def done(self) -> bool:  # noqa: D102
        return any(sink.done for sink in self.sinks)

    @property
    def needs_network_depth(self) -> bool:  # noqa: D102
        return any(sink.needs_network_depth for sink in self.sinks)

    def open(self, context: SinkContext) -> None:  # noqa: D102
        for sink in self.sinks:
            sink.open(context)

    def write(self, frame: DepthFrame) -> None:  # noqa: D102
        if frame.index < self.start_index:
            return
        for sink in self.sinks:
            sink.write(frame)
        self.written += 1
        if self.on_frame is not None:
            self.on_frame(self.written)

    def close(self) -> None:
        """Close every sink; the first error is raised after all are closed."""
        error: BaseException | None = None
        for sink in self.sinks:
            try:
                sink.close()
            except BaseException as exc:  # noqa: BLE001 - the others must close too
                error = error or exc
        if error is not None:
            raise error


def _rescale(value: int, source: Fraction, target: Fraction) -> int:
    """``value`` ticks of ``source`` in ticks of ``target``, rounded as FFmpeg rounds."""
    exact = Fraction(value) * source / target
    rounded = math.floor(abs(exact) + Fraction(1, 2))
    return rounded if exact >= 0 else -rounded


def _video_stream(path: Path) -> tuple[Any, Any]:
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise SinkError(f"cannot read segment {path}: {av_reason(exc)}") from exc
    if not container.streams.video:
        container.close()
        raise SinkError(f"segment {path} has no video")
    return container, container.streams.video[0]


class _Joiner:
    """Copies the packets of segment files into one output, after checking they fit."""

    def __init__(self, output: Any, first: Any, time_base: Fraction | None,
                 rate: Fraction | None) -> None:
        self.output = output
        self.stream = output.add_stream_from_template(first)
        # The source's time base and rate, as a one-machine convert sets them (Matroska
        # writes the rate as each frame's default duration).
        if time_base:
            self.stream.time_base = time_base
        if rate:
            self.stream.codec_context.framerate = rate
        self.time_base = time_base
        self.extradata = bytes(first.codec_context.extradata or b"")
        self.last_dts_s: float | None = None
        self.last_s = self.step_s = 0.0
        self.frames = 0

    def copy(self, path: Path, stream: Any, audio: AudioTrack | None,
             delay: int | None, start: int | None = None) -> None:
        """Mux every packet of ``stream`` (decode order), pumping the sound along.

        ``delay``: give every packet a dts of the n-th smallest pts less ``delay`` (for
        containers that store no dts); ``None`` keeps the stored ones. ``start``: the
        planned pts (source time base) of the segment's first frame; the packets are moved
        by the same ticks so that it is, whatever rounding the segment's container did.
        """
        if bytes(stream.codec_context.extradata or b"") != self.extradata:
            raise SinkError(f"segment {path} was encoded with other settings than the first")
        packets = [p for p in stream.container.demux(stream)
                   if p.size and p.pts is not None]  # not the demuxer's final empty packet
        if delay is not None:
            for ordered, packet in zip(sorted(p.pts for p in packets), packets):
                packet.dts = ordered - delay
        if start is not None and packets and self.time_base:
            shift = _rescale(start, self.time_base, packets[0].time_base) - \
                min(p.pts for p in packets)
            for packet in packets:
                packet.pts += shift
                if packet.dts is not None:
                    packet.dts += shift
        for packet in packets:
            # Decode order: every segment's encoder delays its dts by the same reordering
            # depth (one configuration), so the dts keep rising across a join.
            dts_s = float(packet.dts * packet.time_base)
            if self.last_dts_s is not None and dts_s <= self.last_dts_s:
                raise SinkError(f"segment {path} overlaps the one before it")
            self.last_dts_s = dts_s
            if audio is not None:
                audio.pump(dts_s)
            pts_s = float(packet.pts * packet.time_base)
            if pts_s > self.last_s:
                self.step_s = pts_s - self.last_s if self.frames else 0.0
                self.last_s = pts_s
            packet.stream = self.stream
            self.output.mux(packet)
            self.frames += 1


def _dts_delay(parts: Sequence[Path]) -> int | None:
    """The dts shift for segments whose container stored no dts (Matroska), else ``None``.

    Packet n (decode order) of a segment gets its n-th smallest pts less one shift, the
    same for every segment: then no dts is later than its pts, and they keep rising across
    the joins (each segment's pts come after the one before's).
    """
    missing, delay = False, 0
    for path in parts:
        container, stream = _video_stream(path)
        with container:
            packets = [(p.pts, p.dts) for p in container.demux(stream)
                       if p.size and p.pts is not None]
        missing = missing or any(dts is None for _, dts in packets)
        ordered = sorted(pts for pts, _ in packets)
        delay = max([delay, *(o - pts for o, (pts, _) in zip(ordered, packets))])
    return delay if missing else None


def join_videos(parts: Sequence[Path], output: Path, audio_from: Path | None = None,
                time_base: Fraction | None = None, rate: Fraction | None = None,
                starts: Sequence[int] = ()) -> int:
    """Concatenate segment videos into ``output`` by copying packets; return the frames.

    The segments must hold one video stream each, encoded with the same settings (each
    starts with a keyframe), with increasing timestamps. ``starts`` (with ``time_base``):
    the planned pts of each segment's first frame, which its packets are moved to. The
    sound of ``audio_from`` is added once, interleaved with the video (copied, or
    re-encoded where the container cannot hold its codec, as
    :class:`stream.sinks.video.VideoFileSink` does). Written to a temporary next to
    ``output``, renamed into place when whole (replacing a file there).

    Raises:
        SinkError: a segment is missing, does not fit the others, or writing fails.
    """
    fmt = VIDEO_FORMATS[output.suffix.lower()]
    part = PartFile(output)
    opened: list[Any] = []
    audio: AudioTrack | None = None
    try:
        out = av.open(str(part.path), "w", format=fmt.container)
        opened.append(out)
        delay = _dts_delay(parts)
        first_container, first = _video_stream(parts[0])
        opened.append(first_container)
        joiner = _Joiner(out, first, time_base, rate)
        first_time_base = first.time_base
        if audio_from is not None:
            audio = AudioTrack(audio_from, out, fmt.audio_codec)
        out.start_encoding()
        if audio is not None:
            audio.start()
        for number, path in enumerate(parts):
            container, stream = (first_container, first) if number == 0 else _video_stream(path)
            opened.append(container)
            if stream.time_base != first_time_base:
                raise SinkError(f"segment {path} has another time base than the first")
            joiner.copy(path, stream, audio, delay,
                        starts[number] if number < len(starts) else None)
            container.close()
        if audio is not None:
            audio.finish(joiner.last_s + joiner.step_s)
        out.close()
        part.commit()
        return joiner.frames
    except (av.FFmpegError, OSError) as exc:
        part.discard()
        raise SinkError(f"cannot join segments into {output}: {av_reason(exc)}") from exc
    except BaseException:
        part.discard()
        raise
    finally:
        if audio is not None:
            audio.close()
        for container in reversed(opened):
            try:
                container.close()
            except (av.FFmpegError, OSError):
                pass  # already closed, or the temporary is gone anyway


def join_raw(parts: Sequence[Path], target: Path) -> int:
    """Gather the raw depth folders of segments into ``target``; return the frames.

    The files are moved (same storage), the ``timestamps.csv`` rows concatenated under
    one header. ``target`` appears whole (built in a temporary folder and renamed); an
    existing ``target`` is replaced.

    Raises:
        SinkError: a segment's folder or its CSV is missing.
    """
    csv_name = RawDepthSink.CSV_NAME
    if target.exists():
        shutil.rmtree(target)
    rows = 0
    with atomic_dir(target) as tmp:
        lines: list[str] = []
        for folder in parts:
            csv = folder / csv_name
            try:
                text = csv.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise SinkError(f"raw depth of a segment is missing: {csv}") from exc
            lines = lines or text[:1]
            lines.extend(text[1:])
            rows += len(text) - 1
            for entry in os.scandir(folder):
                if entry.name != csv_name:
                    os.replace(entry.path, tmp / entry.name)
        write_text_atomic(tmp / csv_name, "\n".join(lines) + "\n")
    return rows


def check_frames(what: str, written: int, expected: int) -> None:
    """Raise if a segment wrote another number of frames than planned.

    Raises:
        StreamError: ``written != expected`` (a file that decodes differently from a seek).
    """
    if written != expected:
        raise StreamError(f"{what}: wrote {written} frames, expected {expected}")

