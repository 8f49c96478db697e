"""Snapshots and recordings from the live window: one frame's four files, or a video.

Touches files (every one written through :mod:`stream.core.files` or
:class:`~stream.sinks.video.VideoFileSink`, so each appears whole or not at all); starts
no threads: the window thread calls it.
"""

from __future__ import annotations

import dataclasses
import io
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from stream.core.files import write_bytes_atomic
from stream.core.records import DepthFrame, VideoInfo
from stream.core.settings import EncoderSettings, Layout, VideoCodec
from stream.depth.colormap import minmax
from stream.depth.render import Renderer
from stream.sinks.base import SinkContext, depth_to_u16, metres_to_mm_u16, write_image
from stream.sinks.video import VideoFileSink

__all__ = ["snapshot_stem", "write_snapshot", "Recording", "Recorder"]


def snapshot_stem(frame: DepthFrame) -> str:
    """``snapshot_<seconds>s``: the frame's timestamp in ms, e.g. ``snapshot_12.345s``."""
    return f"snapshot_{frame.timestamp:.3f}s"


def write_snapshot(folder: str | os.PathLike, frame: DepthFrame,
                   renderer: Renderer | None = None) -> list[Path]:
    """Write one frame as four files named after its timestamp (:func:`snapshot_stem`).

    * ``<stem>_colour.png``: the source picture;
    * ``<stem>_depth.png``: the depth in the renderer's colours and colour range;
    * ``<stem>_depth16.png``: 16-bit grey: the depth's own min..max as 0..65535, or for
      a metric model millimetres (as raw export writes them);
    * ``<stem>_depth.npy``: the depth, float32, as the network and smoother made it
      (metres for a metric model).

    Args:
        folder: an existing folder.
        frame: the frame shown.
        renderer: colormap and inversion for the colour depth (its layout is ignored).

    Returns:
        The four paths, in the order above.

    Raises:
        SinkError: a file cannot be written.
    """
    stem = Path(folder) / snapshot_stem(frame)
    depth_only = dataclasses.replace(renderer or Renderer(), layout=Layout.DEPTH)
    lo, hi = minmax(frame.depth)
    buffer = io.BytesIO()
    np.save(buffer, frame.depth.astype(np.float32, copy=False))
    return [
        write_image(f"{stem}_colour.png", frame.image),
        write_image(f"{stem}_depth.png", depth_only.render(frame)),
        write_image(f"{stem}_depth16.png", metres_to_mm_u16(frame.depth) if frame.metric
                    else depth_to_u16(frame.depth, lo, hi)),
        write_bytes_atomic(f"{stem}_depth.npy", buffer.getvalue()),
    ]


@dataclass(frozen=True)
class Recording:
    """A finished recording: where, how many frames, how long, how large."""

    path: Path
    frames: int
    duration_s: float
    size_bytes: int

    def __str__(self) -> str:
        return (f"{self.path}: {self.frames} frames, {self.duration_s:.1f} s, "
                f"{self.size_bytes / 1e6:.1f} MB")


class Recorder:
    """Recordings of what the window shows, started and stopped by its ``o`` key.

    Each recording is a new file ``depth_YYYYmmdd_HHMMSS.mp4`` (``.mkv`` for FFV1; a
    ``-2``, ``-3``... suffix when that name is taken) in ``folder``, in the layout and
    colours of the moment it starts, with the run's encoder settings. Frames keep their
    own spacing in time, starting at 0; the file is finished (playable) at each
    :meth:`stop`. Used on one thread (the window's), which opens and closes each file.

    Args:
        folder: an existing folder.
        info: the source's stream description (size and rate).
        encoder: codec, CRF and preset.
    """

    def __init__(self, folder: str | os.PathLike, info: VideoInfo,
                 encoder: EncoderSettings | None = None) -> None:
        self.folder = Path(folder)
        self.encoder = encoder or EncoderSettings()
        # Timestamps are rebased to the first recorded frame, on a fine clock.
        self.info = dataclasses.replace(info, time_base=None, has_audio=False, frames=None,
                                        duration_s=None)
        self._sink: VideoFileSink | None = None
        self._start_s = 0.0

    @property
    def active(self) -> bool:
        """A recording is under way."""
        return self._sink is not None

    @property
    def path(self) -> Path | None:
        """The file being recorded, or ``None``."""
        return None if self._sink is None else self._sink.path

    def start(self, renderer: Renderer, now: datetime | None = None) -> Path:
        """Start a new recording with ``renderer``'s layout and colours; return its path.

        Raises:
            SinkError: the file cannot be created.
            ConfigError: the encoder settings do not fit the file.
        """
        self.stop()
        suffix = ".mkv" if self.encoder.codec is VideoCodec.FFV1 else ".mp4"
        name = f"depth_{(now or datetime.now()):%Y%m%d_%H%M%S}"
        path = self.folder / f"{name}{suffix}"
        count = 1
        while path.exists():
            count += 1
            path = self.folder / f"{name}-{count}{suffix}"
        sink = VideoFileSink(path, renderer, encoder=self.encoder)
        sink.open(SinkContext(self.info))
        self._sink, self._start_s = sink, -1.0
        return path

    def write(self, frame: DepthFrame) -> None:
        """Add ``frame`` when recording (the first one sets time 0)."""
        if self._sink is None:
            return
        if self._start_s < 0:
            self._start_s = frame.timestamp
        self._sink.write(dataclasses.replace(frame, pts=None,
                                             timestamp=frame.timestamp - self._start_s))

    def stop(self) -> Recording | None:
        """Finish the recording under way (the file is then playable); ``None`` if none.

        Raises:
            SinkError: the file cannot be finished.
        """
        sink, self._sink = self._sink, None
        if sink is None:
            return None
        sink.close()
        return Recording(sink.path, sink.frames_written, sink.duration_s, sink.size_bytes)
