"""Builder: settings in, a ready :class:`~stream.runtime.pipeline.Pipeline` out.

The one place that turns :class:`~stream.core.settings.StreamSettings` into a source and sinks,
for every front end (the CLI, the Python API, the web server, batch workers). Cheap
checks come first (input, outputs, not writing onto an input), the weights last, so a
bad path fails before the model loads; whatever was opened is closed again when a later
step fails. Starts no threads of its own (the pipeline does); touches files only
through the sinks and :mod:`stream.core.files`.

Example:
    >>> stats = convert("in.mp4", "out.mp4", StreamSettings(layout="side"))  # doctest: +SKIP
    >>> print(stats.frames_written, stats.latency_ms_p95)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from stream.core.errors import ConfigError, StreamError
from stream.core.files import check_not_input, check_output_path, write_json_atomic
from stream.core.settings import StampOrigin, StreamSettings
from stream.core.stats import RunStats
from stream.core.units import DepthKind
from stream.depth.render import Renderer
from stream.engines.estimator import DepthEstimator
from stream.geometry.camera import StreamCamera, stream_camera
from stream.models.registry import get_spec
from stream.runtime.depth_stage import depth_kind, make_colour_range
from stream.runtime.pipeline import Pipeline, Progress
from stream.sinks.base import RawDepthSink, Sink
from stream.sources.capture import FileSource, LiveSource, Source

__all__ = [
    "closing_on_error",
    "open_source",
    "make_estimator",
    "build_sinks",
    "robot_camera",
    "stamp_start_unix_s",
    "build_convert",
    "build_live",
    "run",
    "convert",
]


@contextlib.contextmanager
def closing_on_error(*resources: Any) -> Iterator[list[Any]]:
    """Close ``resources`` (and whatever the block appends to the yielded list) if it raises.

    Example:
        >>> with closing_on_error(source) as opened:  # doctest: +SKIP
        ...     opened.append(VideoFileSink("out.mp4"))
    """
    opened = list(resources)
    try:
        yield opened
    except BaseException:
        for resource in reversed(opened):
            with contextlib.suppress(Exception):
                resource.close()
        raise


def open_source(source: int | str | os.PathLike, live: bool | None = None,
                realtime: bool | None = None) -> Source:
    """Camera index, stream URL or video file path -> an opened :class:`Source`.

    Args:
        source: ``0`` (or ``"0"`` when no such file exists), ``rtsp://...``/``http://...``,
            or a file path.
        live: treat a file as a live source (latest frame wins); cameras and URLs are live.
        realtime: release a file's frames at their own pace; default: the same as ``live``.

    Raises:
        ConfigError: ``source`` is not a camera index, URL or path.
        SourceError: it cannot be opened.
    """
    if isinstance(source, bool) or not isinstance(source, (int, str, os.PathLike)):
        raise ConfigError(f"source must be a camera index, a URL or a file path, got "
                          f"{type(source).__name__}")
    text = os.fspath(source) if not isinstance(source, int) else ""
    if isinstance(source, int) or (text.isdigit() and not Path(text).exists()):
        return LiveSource.from_camera(int(source))
    if "://" in text:
        return LiveSource.from_url(text)
    live = bool(live)
    return FileSource(text, realtime=live if realtime is None else realtime, live=live)


def make_estimator(settings: StreamSettings, live: bool = False, *,
                   threads: int | None = None, progress: bool = True) -> DepthEstimator:
    """The network ``settings.model`` asks for (the weights are loaded and checked here).

    Its input side is ``--input-size``, else the model's default for live input or for
    video files (:meth:`stream.models.spec.ModelSpec.default_side`).

    Args:
        settings: the run's settings (model, weights, engine, precision, input size).
        live: tune the engine for one frame at a time.
        threads: CPU threads for the network (a batch worker's share); default all.
        progress: show downloads and one-time work on stderr.

    Raises:
        WeightsError: no usable checkpoint.
        ConfigError: the backend or device is not available here.
    """
    from stream.engines.estimator import create_estimator

    model = settings.model
    spec = get_spec(model.network)
    make_colour_range(settings, spec.output)  # --range-m fits the model
    side = model.input_size or spec.default_side(live=live, video=not live)
    return create_estimator(model.weights, model.backend.value, model.device.value, live=live,
                            progress=progress, precision=model.precision.value,
                            model=spec, input_size=side, threads=threads)


def build_sinks(settings: StreamSettings, *, video: str | os.PathLike | None = None,
                window: bool = False, audio_from: str | os.PathLike | None = None,
                inputs: Iterable[str | os.PathLike] = (),
                extra: Iterable[Sink] = (),
                start_unix_s: float | None = None,
                warnings: list[str] | None = None) -> list[Sink]:
    """The sinks ``settings`` and the outputs ask for, checked before any is written.

    Args:
        settings: layout, colours, raw export, overwrite.
        video: a video file to write (``.mp4``, ``.mkv``, ``.webm``).
        window: show a preview window.
        audio_from: the file whose sound goes into ``video``.
        inputs: the run's input files: no output may be one of them.
        extra: sinks made elsewhere (a test's queue...), kept first.
        start_unix_s: the input file's start time, for ``--stamp-origin unix``.
        warnings: the run's warning list (the source's), for what a sink skips.

    Raises:
        SinkError: an output cannot be written, exists, or is an input; the Foxglove
            server cannot listen.
    """
    robot = settings.robot
    outputs = [p for p in (video, settings.raw_dir, settings.stats_path, robot.rosbag_dir,
                           robot.mcap_path) if p is not None]
    check_not_input(outputs, inputs)
    if settings.stats_path is not None:
        check_output_path(settings.stats_path, settings.overwrite)
    renderer = Renderer.from_settings(settings.render)
    with closing_on_error(*extra) as sinks:
        if settings.zmq.address is not None:  # binds now: a busy port is a usage error
            from stream.sinks.publisher import ZmqPublisher

            zmq = settings.zmq
            sinks.append(ZmqPublisher(zmq.address, dtype=zmq.dtype or "float16", jpeg=zmq.jpeg))
        if window:
            from stream.window.control import LiveControl
            from stream.window.sink import WindowSink

            control = LiveControl(settings.smooth, adjustable=settings.smooth > 0)
            sinks.append(WindowSink(renderer, control=control, encoder=settings.encoder,
                                    snapshot_dir=settings.snapshot_dir))
        if video is not None:
            from stream.sinks.video import VideoFileSink

            sinks.append(VideoFileSink(video, renderer, audio_from=audio_from,
                                       overwrite=settings.overwrite, encoder=settings.encoder,
                                       warnings=warnings))
        if settings.raw_dir is not None:
            sinks.append(RawDepthSink(settings.raw_dir, settings.raw_format,
                                      settings.overwrite, unsmoothed=settings.raw_unsmoothed))
        sinks.extend(_robot_sinks(settings, start_unix_s))
    return sinks


def _robot_sinks(settings: StreamSettings, start_unix_s: float | None) -> list[Sink]:
    """The ROS 2 bag, MCAP and Foxglove server sinks ``settings.robot`` asks for."""
    from stream.robotics.stamps import Stamper

    robot = settings.robot
    stamper = Stamper(robot.stamp_origin, start_unix_s)
    with closing_on_error() as sinks:
        if robot.rosbag_dir is not None:
            from stream.robotics.rosbag import RosbagSink

            sinks.append(RosbagSink.from_settings(settings, stamper))
        if robot.mcap_path is not None or robot.foxglove is not None:
            from stream.robotics.foxglove import FoxgloveServerSink, McapSink

            if robot.mcap_path is not None:
                sinks.append(McapSink.from_settings(settings, stamper))
            if robot.foxglove is not None:
                kind = get_spec(settings.model.network).output  # announced before frames
                sinks.append(FoxgloveServerSink.from_settings(settings, stamper, kind))
    return sinks


def robot_camera(settings: StreamSettings, source: Source) -> StreamCamera:
    """The camera model of ``settings.robot`` for ``source``'s picture size.

    Raises:
        ConfigError: the intrinsics' principal point or a known point is outside the
            picture.
    """
    return stream_camera(settings.robot, *source.info.size_wh, warnings=source.warnings)


def stamp_start_unix_s(settings: StreamSettings, source: Source) -> float | None:
    """A file's start time when ``--stamp-origin unix`` asks for it (else None).

    A file without a recorded start time gets a line in ``source.warnings``.
    """
    path = getattr(source, "path", None)
    if (settings.robot.stamp_origin is not StampOrigin.UNIX or not settings.robot.outputs
            or path is None or source.info.live):
        return None
    from stream.robotics.stamps import file_start_unix_s

    start = file_start_unix_s(path)
    if start is None:
        source.warnings.append("the input has no recorded start time (creation_time): "
                               "--stamp-origin unix stamps count from the video's start")
    return start


def build_convert(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike | None,
    settings: StreamSettings | None = None,
    estimator: DepthEstimator | None = None,
    progress: Progress | None = None,
    stop_event: threading.Event | None = None,
    extra_sinks: Iterable[Sink] = (),
    *,
    max_size_wh: tuple[int, int] | None = None,
) -> Pipeline:
    """A ready (not started) pipeline from a video file to a video file and/or raw depth.

    Args:
        input_path: the video to convert.
        output_path: ``.mp4``/``.mkv``/``.webm``, or ``None`` for raw depth only.
        settings: layout, colours, raw output, model choice.
        estimator: a built estimator; ``None`` builds one from ``settings`` (and closes
            it when the run ends).
        progress: ``progress(done, total)`` after each written frame.
        stop_event: a cancellation event to share.
        extra_sinks: more sinks (a :class:`stream.sinks.publisher.ZmqPublisher`...); they count
            as output.
        max_size_wh: the largest frame the input may have, ``(width, height)``: checked
            on every decoded frame (a server's limit); ``None``: any.

    Raises:
        SourceError: the input is missing or not a video (or a frame is over
            ``max_size_wh``: :class:`stream.sources.capture.FrameTooLarge`, also while
            running).
        SinkError: an output cannot be written (missing folder, exists, is the input).
        ConfigError: nothing to write.
        WeightsError: no usable checkpoint.
    """
    settings = settings or StreamSettings()
    extra = list(extra_sinks)
    if (output_path is None and settings.raw_dir is None and not extra
            and not settings.robot.outputs and settings.zmq.address is None):
        raise ConfigError("nothing to write: give an output video, a raw depth folder, "
                          "--rosbag, --mcap, --foxglove or --zmq")
    with closing_on_error(*extra):
        source = FileSource(input_path, max_size_wh=max_size_wh)
    with closing_on_error(source):
        camera = robot_camera(settings, source)
        sinks = build_sinks(settings, video=output_path, audio_from=source.path,
                            inputs=[source.path], extra=extra,
                            start_unix_s=stamp_start_unix_s(settings, source),
                            warnings=source.warnings)
        with closing_on_error(*sinks):
            owns = estimator is None
            estimator = estimator or make_estimator(settings)
    return Pipeline(source, estimator, sinks, settings, stop_event, progress=progress,
                    close_estimator=owns, camera=camera)


def _window_stages(sinks: Iterable[Sink], settings: StreamSettings,
                   kind: DepthKind) -> dict[str, Any]:
    """The smoother and colour range a window's keys reach (none without a window)."""
    from stream.window.control import ControlledRange, ControlledSmoother, LiveControl

    for sink in sinks:
        control = getattr(sink, "control", None)
        if isinstance(control, LiveControl):
            align = kind is DepthKind.RELATIVE
            smoother = ControlledSmoother(control, align) if control.adjustable else None
            colour_range = ControlledRange(control, make_colour_range(settings, kind))
            return {"smoother": smoother, "colour_range": colour_range}
    return {}


def build_live(
    source: Source,
    settings: StreamSettings | None = None,
    *,
    video: str | os.PathLike | None = None,
    window: bool = False,
    estimator: DepthEstimator | None = None,
    extra_sinks: Iterable[Sink] = (),
    stop_event: threading.Event | None = None,
) -> Pipeline:
    """A ready pipeline from an opened live source to a window and/or files.

    ``source`` is closed if anything here fails. A file played live (with ``realtime``)
    also gives its sound to ``video``.

    Raises:
        SinkError: an output cannot be written or there is no display for a window.
        WeightsError: no usable checkpoint.
    """
    settings = settings or StreamSettings()
    path = getattr(source, "path", None)
    audio = path if getattr(source, "realtime", False) else None
    with closing_on_error(source, *extra_sinks):
        camera = robot_camera(settings, source)
        sinks = build_sinks(settings, video=video, window=window, audio_from=audio,
                            inputs=[path] if path is not None else [], extra=extra_sinks,
                            warnings=source.warnings)
        with closing_on_error(*sinks):
            owns = estimator is None
            estimator = estimator or make_estimator(settings, live=True)
    return Pipeline(source, estimator, sinks, settings, stop_event, close_estimator=owns,
                    camera=camera, **_window_stages(sinks, settings, depth_kind(estimator)))


def run(pipeline: Pipeline, stop_timeout_s: float = 60.0) -> RunStats:
    """Start ``pipeline`` and wait for it; on Ctrl+C stop it, let sinks finish, re-raise.

    Writes ``settings.stats_path`` (JSON) when the run ends, also after a stop or error.

    Raises:
        KeyboardInterrupt: after the pipeline stopped and its files were closed.
        StreamError: what :meth:`Pipeline.join` raises.
    """
    pipeline.start()
    try:
        return pipeline.join()
    except KeyboardInterrupt:
        pipeline.stop()
        with contextlib.suppress(StreamError):
            pipeline.join(stop_timeout_s)  # the interrupt is what the caller asked about
        raise
    finally:
        path = pipeline.settings.stats_path
        stats = pipeline.stats() if path is not None else None
        if stats is not None and stats.elapsed_s > 0:
            describe = getattr(pipeline.estimator, "describe", None)
            model = describe() if describe is not None else None  # precision, int8 check
            write_json_atomic(path, {**stats.to_dict(), "model": model})


def convert(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike | None,
    settings: StreamSettings | None = None,
    **options: Any,
) -> RunStats:
    """Convert a video file to a depth video (and/or raw depth); return the run's stats.

    Every frame is converted, in order, at the input's frame rate and timestamps, with
    the input's audio. ``options`` are :func:`build_convert`'s (``estimator``,
    ``progress``, ``stop_event``, ``extra_sinks``), as are the errors; a truncated input
    converts what decodes and lists a warning in the stats.
    """
    return run(build_convert(input_path, output_path, settings, **options))
