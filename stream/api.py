"""API: depth for Python programs, one picture (``estimate``) or a stream (``DepthStream``).

For robotics and other control loops that want depth without learning the pipeline's
threads. With a relative model (the default ``midas-small``, ``dav2-small``) depth is
*relative inverse depth*: float32, larger = nearer, in an unknown scale and shift, not
metres (:func:`stream.geometry.metric.fit_metric` gets metres from two known distances);
with a metric model (``dav2-metric-indoor``, ``dav2-metric-outdoor``) it is metres.

Example:
    >>> from stream import DepthStream, estimate
    >>> depth = estimate("samples/coffee.jpg")  # doctest: +SKIP
    >>> with DepthStream(0) as cam:  # doctest: +SKIP
    ...     frame = cam.latest(timeout=1.0)
"""

from __future__ import annotations

import dataclasses
import os
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stream.core.errors import ConfigError, PipelineError, StreamError
from stream.core.records import DepthFrame, Frame, VideoInfo
from stream.core.settings import RobotSettings, StreamSettings, smooth_strength
from stream.core.stats import RunStats
from stream.engines.estimator import DepthEstimator, SharedEstimator, create_estimator
from stream.models.registry import get_spec
from stream.models.transforms import to_rgb
from stream.runtime.builder import (
    build_sinks,
    closing_on_error,
    make_estimator,
    open_source,
    robot_camera,
    stamp_start_unix_s,
)
from stream.runtime.pipeline import Pipeline
from stream.runtime.queues import DropPolicy, QueueSink
from stream.sources.capture import Source, read_image

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["estimate", "clear_cache", "DepthStream"]

# One estimator per (weights, backend, precision, model, input size): loading the
# checkpoint and building the network takes far longer than one inference. Each is a
# SharedEstimator (it owns its lock), as a backend's inference request may not be safe to
# share between threads.
_cache: dict[tuple[Any, ...], SharedEstimator] = {}
_cache_lock = threading.Lock()


def _weights_key(weights: str | os.PathLike | None) -> str | None:
    if weights is not None:
        return str(Path(weights).expanduser().resolve())
    # Default resolution depends on $DEPTHSTREAM_WEIGHTS; key on it so a change is seen.
    from stream.models.weights import ENV_WEIGHTS

    env = os.environ.get(ENV_WEIGHTS)
    return f"env:{Path(env).expanduser().resolve()}" if env else None


def _estimator(weights: str | os.PathLike | None, backend: str, precision: str = "auto",
               model: str | None = None, input_size: int | None = None) -> SharedEstimator:
    spec = get_spec(model)
    key = (_weights_key(weights), backend, precision, spec.name, input_size)
    with _cache_lock:
        # Built under the lock: two threads asking at once load the weights once.
        if key not in _cache:
            _cache[key] = SharedEstimator(create_estimator(
                weights, backend, precision=precision, model=spec, input_size=input_size))
        return _cache[key]


def clear_cache() -> None:
    """Forget the networks :func:`estimate` keeps loaded (frees their memory)."""
    with _cache_lock:
        entries = list(_cache.values())
        _cache.clear()
    for estimator in entries:
        estimator.close()  # after a call in progress ends


def estimate(
    image: np.ndarray | str | os.PathLike,
    weights: str | os.PathLike | None = None,
    backend: str = "auto",
    precision: str = "auto",
    model: str | None = None,
    input_size: int | None = None,
) -> np.ndarray:
    """Depth of one picture, at the picture's size.

    The network is loaded on the first call and kept for later calls with the same
    ``weights``, ``backend``, ``precision``, ``model`` and ``input_size``
    (:func:`clear_cache` frees it). Safe to call from several threads; calls on the same
    network run one at a time.

    Args:
        image: an RGB uint8 array ``[H, W, 3]`` (RGBA and gray ``[H, W]`` too; uint16 is
            scaled to 8 bits), or the path of a picture file (read with EXIF orientation).
            OpenCV frames are BGR: pass ``frame[:, :, ::-1]`` or use :class:`DepthStream`.
        weights: the model's checkpoint (``midas_v21_small_256.pt`` for the default); default
            ``$DEPTHSTREAM_WEIGHTS``, the cache, or a download.
        backend: ``"auto"``, ``"openvino"`` or ``"torch"``.
        precision: ``"auto"`` (int8 where its self-check against fp32 passed, else
            fp32), ``"fp32"`` or ``"int8"`` (OpenVINO; made once per checkpoint).
        model: the network: ``"midas-small"`` (default), ``"dav2-small"``,
            ``"dav2-metric-indoor"`` or ``"dav2-metric-outdoor"``.
        input_size: the network's input side instead of the model's default.

    Returns:
        float32 ``[H, W]``: relative inverse depth (larger = nearer) for relative
        models; depth in metres (larger = farther) for the metric ones.

    Raises:
        SourceError: ``image`` is a path that cannot be read as a picture.
        ConfigError: ``image`` is not a picture array, or the backend is unknown.
        WeightsError: no usable checkpoint.

    Example:
        >>> depth = estimate(rgb)  # doctest: +SKIP
        >>> nearest = np.unravel_index(depth.argmax(), depth.shape)  # doctest: +SKIP
    """
    if isinstance(image, (str, os.PathLike)):
        rgb = to_rgb(read_image(image), "bgr")
    elif isinstance(image, np.ndarray):
        if image.ndim not in (2, 3) or min(image.shape[:2]) == 0:
            raise ConfigError(f"expected an [H, W, 3] or [H, W] picture, got shape {image.shape}")
        rgb = to_rgb(image, "rgb")
    else:
        raise ConfigError(f"image must be a numpy array or a path, got {type(image).__name__}")
    estimator = _estimator(weights, backend, getattr(precision, "value", precision), model,
                           input_size)
    depth, _ = estimator.predict(rgb)
    return depth


# --------------------------------------------------------------------------- streams


class _Recorded(Source):
    """A live source whose every frame is kept (blocking queues): ``live=False`` on a URL."""

    def __init__(self, inner: Source) -> None:
        super().__init__()
        self.inner = inner
        self.info = dataclasses.replace(inner.info, live=False)
        self.warnings = inner.warnings

    def frames(self, stop: threading.Event | None = None) -> Iterator[Frame]:  # noqa: D102
        return self.inner.frames(stop)

    def close(self) -> None:  # noqa: D102
        self.inner.close()


def _open_source(source: int | str | os.PathLike, live: bool | None) -> Source:
    """Camera index, URL or file path -> an opened :class:`Source` (``live`` as asked)."""
    opened = open_source(source, live=bool(live))
    # A file played live is paced at its frame rate, latest frame wins, as a camera; a
    # camera or URL with live=False keeps every frame.
    return _Recorded(opened) if live is False and opened.info.live else opened


class DepthStream:
    """Depth for every frame of a camera, stream URL or video file, in your own loop.

    Starts its threads at once (capture, network, hand-off) and hands you
    :class:`~stream.core.records.DepthFrame` records; :meth:`close` (or leaving the
    ``with`` block) stops and joins every thread.

    Each record has ``index`` (the source frame's number; gaps on live sources are frames
    skipped because the network was busy), ``timestamp`` (seconds: from the file's pts,
    or since the first camera frame on the monotonic clock), ``captured``
    (``time.monotonic()`` when the frame was decoded: ``time.monotonic() -
    frame.captured`` is its age), ``image`` (BGR uint8), ``depth`` (float32 ``[H, W]``:
    relative inverse depth, larger = nearer, or metres for a metric model; ``kind`` says
    which, ``depth_m`` gives metres), ``inference_ms`` and ``smoothed``.

    Two ways to read:

    * iterate (``for frame in stream``): files give every frame in order (the stream
      waits for you: nothing is dropped); live sources give each new result as it
      comes, skipping frames while you are busy.
    * :meth:`latest` (live sources): the newest result, for loops that run at their own
      rate.

    Read from one thread (any one); :meth:`close` may come from another.

    Args:
        source: camera index (``0``), stream URL (``rtsp://``, ``http://``...) or video
            file path.
        weights: the model's checkpoint (``midas_v21_small_256.pt`` for the default); default
            ``$DEPTHSTREAM_WEIGHTS``, the cache, or a download.
        backend: ``"auto"``, ``"openvino"`` or ``"torch"``.
        precision: ``"auto"``, ``"fp32"`` or ``"int8"`` (as :func:`estimate`).
        model: the network (as :func:`estimate`); metric models give frames in metres.
        input_size: the network's input side instead of the model's default.
        smooth: temporal smoothing: ``True`` (default strength), ``False`` (raw network
            output per frame, each in its own scale), or a strength.
        live: latest-frame-wins (``True``) or every frame (``False``). Default: ``True``
            for cameras and URLs, ``False`` for files; a file with ``live=True`` is
            played at its frame rate, as a camera would deliver it.
        estimator: a built :class:`~stream.engines.estimator.DepthEstimator` to use instead of
            loading ``weights`` (the stream does not close it). It runs at
            ``input_size`` when given, else at its own input size, else at the model's
            side for this use, as a loaded one does
            (:meth:`~stream.engines.estimator.DepthEstimator.sized_for`).
        robot: the camera model (``frame.camera``, ``frame.points()``), known distances
            for metric points, and ROS 2 bag / Foxglove / MCAP outputs, as
            :class:`~stream.core.settings.RobotSettings`; default: a 60 degree camera.

    Raises:
        SourceError: the source cannot be opened.
        WeightsError: no usable checkpoint.
        ConfigError: a bad setting.

    Example:
        >>> with DepthStream("samples/clip.mp4", smooth=False) as stream:  # doctest: +SKIP
        ...     for frame in stream:
        ...         print(frame.index, frame.timestamp, frame.depth.max())
    """

    def __init__(
        self,
        source: int | str | os.PathLike,
        weights: str | os.PathLike | None = None,
        backend: str = "auto",
        smooth: bool | float = True,
        live: bool | None = None,
        *,
        estimator: DepthEstimator | None = None,
        robot: RobotSettings | None = None,
        precision: str = "auto",
        model: str | None = None,
        input_size: int | None = None,
    ) -> None:
        settings = StreamSettings(smooth=smooth_strength(smooth), backend=backend,
                                  weights=None if weights is None else os.fspath(weights),
                                  robot=robot, precision=precision,
                                  network=get_spec(model).name, input_size=input_size)
        opened = _open_source(source, live)  # cheap checks before the model loads
        try:
            camera = robot_camera(settings, opened)
            path = getattr(opened, "path", None)
            outputs = build_sinks(settings, inputs=[path] if path is not None else [],
                                  start_unix_s=stamp_start_unix_s(settings, opened))
            with closing_on_error(*outputs):
                owns = estimator is None
                if estimator is None:
                    estimator = make_estimator(settings, live=opened.info.live)
                elif isinstance(estimator, DepthEstimator):
                    # the size asked for, else its own, else the use's (as make_estimator)
                    estimator = (estimator.at_input_size(input_size) if input_size is not None
                                 else estimator.sized_for(live=opened.info.live,
                                                          video=not opened.info.live))
            # A consumer that takes its time holds a file back (nothing is lost) and
            # sees only the newest result of a live source.
            policy = DropPolicy.LATEST if opened.info.live else DropPolicy.BLOCK
            self._sink = QueueSink(maxsize=4, policy=policy)
            self._pipeline = Pipeline(opened, estimator, [self._sink, *outputs], settings,
                                      close_estimator=owns, camera=camera)
        except BaseException:
            opened.close()
            raise
        self._closed = False
        self._ended = False
        self._last_index = -1
        self._pipeline.start()

    # -- what it is --------------------------------------------------------------

    @property
    def info(self) -> VideoInfo:
        """The source's size, rate, frame count (files) and ``live`` flag."""
        return self._pipeline.source.info

    @property
    def live(self) -> bool:
        """Latest-frame-wins (camera, URL, file played live) rather than every frame."""
        return self._pipeline.live

    @property
    def running(self) -> bool:
        """True until the source ended (and every frame was taken) or :meth:`close`."""
        return not (self._ended or self._closed)

    @property
    def dropped(self) -> int:
        """Frames skipped so far because the network or the reader was busy (live)."""
        return self._pipeline.dropped + self._sink.dropped

    def stats(self) -> RunStats:
        """Counters and timings of the run so far (:class:`stream.core.stats.RunStats`)."""
        return self._pipeline.stats()

    # -- reading -----------------------------------------------------------------

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> DepthFrame:
        """The next frame (files: every one, in order; live: each new result).

        Raises:
            StopIteration: the source ended or the stream was closed.
            StreamError: a thread failed (a source that stopped decoding...).
        """
        while True:
            frame = self._get(timeout_s=0.1)
            if frame is not None:
                return frame
            if self._ended or self._closed:
                raise StopIteration

    def latest(self, timeout: float | None = None) -> DepthFrame | None:
        """The newest depth frame not returned yet; wait up to ``timeout`` s for one.

        Never returns a frame older than (or the same as) one already returned: frames
        that became stale while you were away are skipped. ``timeout=0`` does not
        wait; ``None`` waits until a frame comes or the stream ends.

        Returns:
            The frame, or ``None`` if none came within ``timeout``, the source ended or
            the stream was closed.

        Raises:
            ConfigError: the stream is not live (iterate a file stream instead).
            StreamError: a thread failed.
        """
        if not self.live:
            raise ConfigError("latest() is for live sources; iterate a file stream, or "
                              "open it with live=True to play it at its frame rate")
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            left = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
            frame = self._get(timeout_s=max(0.0, left))
            if frame is not None:
                return frame
            if self._ended or self._closed:
                return None
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def _get(self, timeout_s: float) -> DepthFrame | None:
        """One frame newer than the last returned, or None (nothing yet, or the end)."""
        if self._closed or self._ended:
            return None
        try:
            frame = self._sink.get(timeout=timeout_s)
        except queue.Empty:
            return None
        if frame is None:  # the pipeline ended: its error, if any, surfaces here
            self._ended = True
            self._pipeline.join(timeout=30.0)
            return None
        # The hand-off keeps order, so this holds; checked because it is the promise.
        if frame.index <= self._last_index:  # pragma: no cover
            raise PipelineError(f"frame {frame.index} came after frame {self._last_index}")
        self._last_index = frame.index
        return frame

    # -- lifecycle ---------------------------------------------------------------

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop and join every thread; release the source and the network (safe twice).

        Raises:
            StreamError: a thread failed and the error was not raised before.
            PipelineError: a thread did not stop within ``timeout_s``.
        """
        if self._closed:
            return
        self._closed = True
        self._pipeline.stop()
        if not self._ended:
            self._ended = True
            self._pipeline.join(timeout=timeout_s)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close()
        except StreamError:
            pass  # the exception leaving the with-block is the one to report

    def __repr__(self) -> str:
        state = "closed" if self._closed else "ended" if self._ended else "running"
        return (f"DepthStream({self._pipeline.source.__class__.__name__}, live={self.live}, "
                f"{state}, last index {self._last_index})")

    def __del__(self) -> None:
        # A stream dropped without close() must not leave threads reading a camera.
        try:
            if not self._closed:
                self._pipeline.stop()
        except Exception:  # noqa: BLE001 - never raise from a finaliser
            pass

