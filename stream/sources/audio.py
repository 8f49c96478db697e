"""Audio: a source file's sound carried into an output video, interleaved with its frames.

Reads the input file and writes into the output container it is given (PyAV); starts
no threads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av

__all__ = ["AudioTrack"]


class AudioTrack:
    """The first audio stream of a file, muxed into ``output`` up to a given time.

    Packets are copied untouched when the output container takes the codec, else
    decoded and re-encoded to ``codec``. ``pump(t)`` adds every packet that starts
    before ``t`` seconds, so audio interleaves with the video and memory stays bounded.
    Damaged packets are skipped and counted: the sound of a damaged file has gaps, the
    video is still written. A packet is copied only once it decoded here: a copied
    packet is one that players decode too.

    Args:
        path: the input file.
        output: the output container (PyAV), not yet started.
        codec: the audio encoder when the container does not take the input's codec.
        warnings: where :meth:`finish` reports skipped packets (one line).
    """

    def __init__(self, path: Path, output: Any, codec: str,
                 warnings: list[str] | None = None) -> None:
        self.path = Path(path)
        self.warnings = warnings if warnings is not None else []
        self.skipped = 0
        self._first_error = ""
        self._input = av.open(str(path))
        self._closed = False
        try:
            source = self._input.streams.audio[0]
            self._time_base = source.time_base
            self.copy = source.codec_context.name in output.supported_codecs
            if self.copy:
                self._stream = output.add_stream_from_template(source)
            else:
                rate = 48000 if codec == "libopus" else (source.codec_context.sample_rate or 48000)
                self._stream = output.add_stream(codec, rate=rate)
                self._stream.layout = "mono" if source.codec_context.channels == 1 else "stereo"
            self._packets = self._input.demux(source)
        except BaseException:
            self.close()
            raise
        self._pending: Any = None
        self._resampler: Any = None
        self._ended = False

    def start(self) -> None:
        """Set up re-encoding once the encoder is open (its frame size is known then)."""
        if not self.copy:
            ctx = self._stream.codec_context
            self._resampler = av.AudioResampler(format=ctx.format, layout=ctx.layout,
                                                rate=ctx.sample_rate,
                                                frame_size=ctx.frame_size or None)

    def pump(self, until_s: float) -> None:
        """Mux every packet that starts before ``until_s`` seconds."""
        while not self._ended:
            packet = self._pending if self._pending is not None else self._next()
            if packet is None:
                self._ended = True
                return
            start = packet.pts if packet.pts is not None else packet.dts
            if start is not None and float(start * self._time_base) >= until_s:
                self._pending = packet
                return
            self._pending = None
            self._mux(packet)

    def finish(self, until_s: float) -> None:
        """Mux the audio up to ``until_s`` (the end of the video) and flush the encoder.

        Damaged packets skipped on the way are counted in one line of :attr:`warnings`.
        """
        self.pump(until_s)
        if not self.copy:
            try:
                self._encode(None)
            except av.FFmpegError as exc:
                self._skip(exc)
        if self.skipped:
            self.warnings.append(f"{self.path}: {self.skipped} damaged audio packet(s) "
                                 f"skipped ({self._first_error})")

    def close(self) -> None:
        """Close the input file (safe to call twice)."""
        if not self._closed:
            self._closed = True
            self._input.close()

    def _next(self) -> Any:
        try:
            return next(self._packets)
        except StopIteration:
            return None
        except av.FFmpegError as exc:  # a truncated input: the audio ends here too
            self._skip(exc)
            return None

    def _mux(self, packet: Any) -> None:
        # A damaged packet (one that does not decode, or whose header the output's
        # bitstream filter refuses) is skipped: a few ms of silence, not a failed file.
        try:
            if self.copy:
                # Skip the empty flush packet the demuxer yields last (size 0, no dts).
                if packet.size == 0 or packet.dts is None:
                    return
                packet.decode()  # the check (cheap for sound): raises when it is damaged
                packet.stream = self._stream
                self._stream.container.mux(packet)
                return
            for frame in packet.decode():
                self._encode(frame)
        except av.FFmpegError as exc:
            self._skip(exc)

    def _skip(self, exc: BaseException) -> None:
        self.skipped += 1
        self._first_error = self._first_error or " ".join(str(
            getattr(exc, "strerror", None) or exc).split())

    def _encode(self, frame: Any) -> None:
        frames = self._resampler.resample(frame)
        if frame is None:
            frames = [*frames, None]
        for f in frames:
            if f is not None:
                f.pts = None  # let the encoder number samples continuously
            for packet in self._stream.encode(f):
                self._stream.container.mux(packet)
