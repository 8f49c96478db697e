"""Records: the frozen values handed from one thread (stage) to the next.

``Frame`` (capture -> inference), ``DepthFrame`` (inference -> render, and what the
Python API yields), ``VideoInfo`` (what a source knows about its stream). Each checks its
fields in ``__post_init__`` so a wrong hand-off fails where it is made, not three threads
later.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Protocol

import numpy as np

from stream.core.units import DepthKind

__all__ = ["CameraModel", "DepthKind", "Frame", "DepthFrame", "VideoInfo"]


class CameraModel(Protocol):
    """What a frame needs of its camera (:class:`stream.geometry.camera.PinholeCamera`).

    Declared here so the records depend on no geometry module: geometry works on arrays.
    """

    @property
    def size_wh(self) -> tuple[int, int]:
        """``(width, height)`` in pixels."""

    def points(self, depth: np.ndarray, image: np.ndarray, step: int = 4,
               near: float = 0.0, metres: bool = False) -> Any:
        """Back-project ``depth`` (coloured by ``image``) to a point cloud."""


def _check_bgr(image: np.ndarray, what: str) -> None:
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
            and image.shape[2] == 3):
        raise ValueError(f"{what}.image must be BGR uint8 [H, W, 3], got "
                         f"{getattr(image, 'dtype', type(image))} {getattr(image, 'shape', '')}")


@dataclass(frozen=True)
class VideoInfo:
    """What a source knows about its video stream.

    Attributes:
        width: frame width in pixels.
        height: frame height in pixels.
        rate: average frame rate as an exact fraction (``30000/1001``), ``None`` if unknown.
        frames: number of frames if the container says, else ``None``.
        duration_s: duration in seconds if known.
        time_base: the video stream's time base (files), ``None`` for live sources.
        live: True for cameras and URLs (latest-frame-wins), False for files (no drops).
        has_audio: the source has an audio stream (files only).
    """

    width: int
    height: int
    rate: Fraction | None = None
    frames: int | None = None
    duration_s: float | None = None
    time_base: Fraction | None = None
    live: bool = False
    has_audio: bool = False

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"VideoInfo size must be positive, got {self.width}x{self.height}")
        if self.rate is not None and self.rate <= 0:
            raise ValueError(f"VideoInfo.rate must be positive, got {self.rate}")

    @property
    def size_wh(self) -> tuple[int, int]:
        """``(width, height)``, the order OpenCV wants."""
        return self.width, self.height


@dataclass(frozen=True)
class Frame:
    """One decoded picture from a source.

    Attributes:
        index: 0-based position in the source (live: count of frames read, gaps = drops).
        timestamp: seconds; from pts and time base for files, monotonic clock for live.
        image: BGR uint8 ``[H, W, 3]``.
        pts: presentation timestamp in the stream's time base (files), else ``None``.
        captured: ``time.monotonic()`` when the frame left the decoder (for latency).
    """

    index: int
    timestamp: float
    image: np.ndarray
    pts: int | None = None
    captured: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if self.index < 0:
            raise ValueError(f"Frame.index must be >= 0, got {self.index}")
        _check_bgr(self.image, "Frame")


@dataclass(frozen=True)
class DepthFrame:
    """A frame with its depth.

    Attributes:
        index: the source frame's index.
        timestamp: the source frame's timestamp in seconds.
        image: the source frame, BGR uint8 ``[H, W, 3]``.
        depth: float32 ``[H, W]``: relative inverse depth (larger = nearer, not metres)
            or, when :attr:`kind` is metric, metres (larger = farther).
        inference_ms: time the network took for this frame.
        lo: display range low end used to colour this frame (far for relative depth,
            near for metres).
        hi: display range high end (near for relative depth, far for metres).
        smoothed: ``depth`` is the temporally smoothed, aligned estimate (else raw network).
        pts: the source frame's pts (files), else ``None``.
        captured: ``time.monotonic()`` when the source frame was decoded.
        raw_depth: the network's own depth (frame size, its own scale) when ``depth`` is
            smoothed; ``None`` when ``depth`` already is the network's, and in pipelines
            none of whose sinks reads it (:attr:`stream.sinks.base.Sink.needs_network_depth`).
        camera: the pinhole model of the input (:class:`stream.geometry.camera.PinholeCamera`),
            with the metric fit of this frame when known distances were given; ``None``
            for frames made by hand.
        kind: what ``depth`` holds (the network's output kind).
    """

    index: int
    timestamp: float
    image: np.ndarray
    depth: np.ndarray
    inference_ms: float
    lo: float = 0.0
    hi: float = 1.0
    smoothed: bool = False
    pts: int | None = None
    captured: float = field(default_factory=time.monotonic)
    raw_depth: np.ndarray | None = None
    camera: CameraModel | None = None
    kind: DepthKind = DepthKind.RELATIVE

    def __post_init__(self) -> None:
        _check_bgr(self.image, "DepthFrame")
        if not isinstance(self.kind, DepthKind):
            raise ValueError(f"DepthFrame.kind must be a DepthKind, got {self.kind!r}")
        if self.camera is not None and self.camera.size_wh != self.size_wh:
            raise ValueError(f"DepthFrame.camera is {self.camera.size_wh}, the frame "
                             f"{self.size_wh}")
        if self.raw_depth is not None and (self.raw_depth.dtype != np.float32
                                           or self.raw_depth.shape != self.image.shape[:2]):
            raise ValueError("DepthFrame.raw_depth must be float32 like depth")
        if not (isinstance(self.depth, np.ndarray) and self.depth.dtype == np.float32
                and self.depth.shape == self.image.shape[:2]):
            raise ValueError(
                f"DepthFrame.depth must be float32 {self.image.shape[:2]}, got "
                f"{getattr(self.depth, 'dtype', type(self.depth))} "
                f"{getattr(self.depth, 'shape', '')}"
            )

    @property
    def size_wh(self) -> tuple[int, int]:
        """``(width, height)``."""
        return self.image.shape[1], self.image.shape[0]

    @property
    def metric(self) -> bool:
        """Whether :attr:`depth` is in metres (a metric model)."""
        return self.kind is DepthKind.METRIC

    @property
    def depth_m(self) -> np.ndarray:
        """Depth in metres, float32 ``[H, W]`` (larger = farther).

        A metric model's depth as it is; for a relative model, the metres of the known
        distances' fit (``--known-distance``, :attr:`camera`'s metric) when there is one.

        Raises:
            ValueError: relative depth with no metric fit: it has no unit to convert.
        """
        if self.metric:
            return self.depth
        fit = getattr(self.camera, "metric", None)
        if fit is None:
            raise ValueError("this frame's depth is relative inverse depth, not metres: use a "
                             "metric model (--model dav2-metric-indoor or dav2-metric-outdoor) "
                             "or give --known-distance points")
        return fit.to_metres(self.depth)

    @property
    def network_depth(self) -> np.ndarray:
        """The network's own depth (``raw_depth`` when smoothed, else ``depth``)."""
        return self.depth if self.raw_depth is None else self.raw_depth

    def points(self, step: int = 4) -> Any:
        """Every ``step``-th pixel back-projected through :attr:`camera`, with its colour.

        In metres for a metric model, or when known distances were given
        (``cloud.metric``), else in relative units; see
        :meth:`stream.geometry.camera.PinholeCamera.points`.

        Raises:
            ValueError: the frame has no camera, or ``step`` is not a whole number >= 1.
        """
        if self.camera is None:
            raise ValueError("this DepthFrame has no camera model (frames from a pipeline "
                             "have one; see stream.geometry.camera.PinholeCamera)")
        return self.camera.points(self.depth, self.image, step, near=self.hi,
                                  metres=self.metric)
