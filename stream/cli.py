"""depthstream command line: parse arguments, call the package, map the outcome to an exit code."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stream import cli_args
from stream.core.settings import RobotSettings, StreamSettings, ZmqSettings, smooth_strength

if TYPE_CHECKING:
    from stream.core.stats import RunStats
    from stream.runtime.pipeline import Pipeline
    from stream.sinks.base import Sink

__all__ = ["ExitStatus", "build_parser", "main"]


class ExitStatus(IntEnum):
    """Process exit codes (as httpie's)."""

    OK = 0
    ERROR = 1  # something failed while running
    USAGE = 2  # a user mistake: bad arguments, unreadable input, missing or wrong weights
    HANGUP = 129  # 128 + SIGHUP: the terminal closed
    INTERRUPTED = 130  # 128 + SIGINT: Ctrl+C
    TERMINATED = 143  # 128 + SIGTERM: timeout, docker stop, systemd


# The signals that stop a run as Ctrl+C does: what closing the terminal, `timeout`,
# `docker stop` and systemd send (a backgrounded run ignores Ctrl+C).
_STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP")
                      if hasattr(signal, name))
# The stop signals that arrived during the command: an interrupt that a library turned
# into an ordinary exception (a C++ layer does) still ends the run as an interrupt.
_arrived: list[int] = []


class _Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread: the run stops as on Ctrl+C.

    Attributes:
        signum: the signal; the exit status is 128 + ``signum``.
    """

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signum)
        self.signum = int(signum)


def _raise_terminated(signum: int, frame: object) -> None:
    _arrived.append(int(signum))
    for other in _STOP_SIGNALS:  # one stop is enough: the next ones would cut the finish
        signal.signal(other, signal.SIG_IGN)
    raise _Terminated(signum)


def _raise_interrupt(signum: int, frame: object) -> None:
    """Ctrl+C: Python's own KeyboardInterrupt, noted (a second one still interrupts)."""
    _arrived.append(int(signum))
    raise KeyboardInterrupt


@contextlib.contextmanager
def _sigterm_stops_the_run() -> Iterator[None]:
    """While a command runs, SIGTERM and SIGHUP stop it as Ctrl+C does: files are finished.

    A signal this process was started ignoring (``nohup``) stays ignored; Ctrl+C keeps
    Python's KeyboardInterrupt. Every stop signal that arrives is noted in ``_arrived``.
    """
    _arrived.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in _STOP_SIGNALS}
    for signum, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(signum, _raise_terminated)
    previous[signal.SIGINT] = signal.getsignal(signal.SIGINT)
    if previous[signal.SIGINT] is signal.default_int_handler:
        signal.signal(signal.SIGINT, _raise_interrupt)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _interrupted_status(exc: KeyboardInterrupt) -> int:
    """Print the one line of a stopped run and return its exit status (128 + signal)."""
    signum = getattr(exc, "signum", signal.SIGINT)
    done = getattr(exc, "done", None)
    print(f"depthstream: interrupted{f': {done}' if done else ''}", file=sys.stderr)
    return 128 + int(signum)


def _note_done(exc: BaseException, written: int, unit: str, outputs: list[str]) -> None:
    """Tell :func:`_interrupted_status` what a stopped run kept and where."""
    if not outputs:
        exc.done = f"{written} {unit} processed"  # type: ignore[attr-defined]
    elif written == 0:
        exc.done = "nothing written"  # type: ignore[attr-defined]
    else:
        exc.done = f"{written} {unit} written to {', '.join(outputs)}"  # type: ignore[attr-defined]


def _stream_settings(args: argparse.Namespace) -> StreamSettings:
    """Every run setting from the arguments, validated before anything heavy is imported."""
    return StreamSettings(
        layout=args.layout, alpha=args.alpha, cmap=args.cmap, invert=args.invert,
        range_m=args.range_m,
        smooth=smooth_strength(args.smooth, off=args.no_smooth), raw_dir=args.raw,
        raw_unsmoothed=args.raw_unsmoothed, raw_format=args.raw_format,
        overwrite=args.overwrite, backend=args.backend, device=args.device,
        weights=args.weights, precision=args.precision, network=args.model,
        input_size=args.input_size, duration_s=getattr(args, "duration", None),
        stats_path=args.stats,
        codec=args.codec, crf=args.crf, preset=args.preset,
        snapshot_dir=getattr(args, "snapshot_dir", None),
        zmq=ZmqSettings(args.zmq, args.zmq_dtype, args.zmq_jpeg),
        robot=RobotSettings(
            fov_deg=args.fov, intrinsics=args.intrinsics, known_distances=args.known_distance,
            rosbag_dir=args.rosbag, rosbag_storage=args.rosbag_storage,
            rosbag_colour=args.rosbag_colour, rosbag_compression=args.rosbag_compression,
            rosbag_depth=args.rosbag_depth, stamp_origin=args.stamp_origin,
            frame_id=args.frame_id, topic_prefix=args.topic_prefix, foxglove=args.foxglove,
            mcap_path=args.mcap, pointcloud=args.pointcloud, point_step=args.point_step),
    )


def _announce_servers(args: argparse.Namespace, sinks: list[Sink]) -> None:
    """Where the Foxglove server listens; a warning for each server others can reach."""
    if args.foxglove is not None:
        from stream.robotics.foxglove import FoxgloveServerSink
        from stream.robotics.foxglove import loopback_warning as foxglove_warning

        for sink in sinks:
            if isinstance(sink, FoxgloveServerSink):
                print(f"foxglove: {sink.url} (Foxglove: Open connection > Foxglove "
                      "WebSocket)", flush=True)
                _warn(foxglove_warning(sink))
    if args.zmq is not None:
        from stream.sinks.publisher import ZmqPublisher
        from stream.sinks.publisher import loopback_warning as zmq_warning

        for sink in sinks:
            if isinstance(sink, ZmqPublisher):
                _warn(zmq_warning(sink))


def _warn(warning: str | None) -> None:
    if warning:
        print(f"depthstream: warning: {warning}", file=sys.stderr)


def _report_foxglove(args: argparse.Namespace, sinks: list[Sink]) -> None:
    if args.foxglove is None:
        return
    from stream.robotics.foxglove import FoxgloveServerSink

    for sink in sinks:
        if isinstance(sink, FoxgloveServerSink):
            print(f"foxglove {sink.url}: {sink.sent} sent, {sink.dropped} dropped (sender "
                  f"busy), {sink.skipped} with no viewer")


def _video_summary(sinks: list[Sink]) -> str:
    """``", 1.2 MB, 845 kb/s"`` for the video file a run wrote, else ``""``."""
    video_sink = sys.modules.get("stream.sinks.video")  # not loaded: no video was written
    for sink in sinks if video_sink is not None else ():
        if isinstance(sink, video_sink.VideoFileSink) and sink.size_bytes:
            rate = sink.bitrate_kbps
            return f", {sink.size_bytes / 1e6:.1f} MB" + (f", {rate:.0f} kb/s" if rate else "")
    return ""


def _report_zmq(sinks: list[Sink]) -> None:
    from stream.sinks.publisher import ZmqPublisher

    for pub in sinks:
        if isinstance(pub, ZmqPublisher):
            print(f"zmq {pub.endpoint}: {pub.sent} sent, {pub.dropped} dropped (slow "
                  f"subscriber), {pub.skipped} with no subscriber")


class _ProgressBar:
    """``progress(done, total)`` for the pipeline, drawn with tqdm (frames, fps, ETA)."""

    def __init__(self, desc: str, enabled: bool = True) -> None:
        self.desc, self.enabled = desc, enabled
        self._bar: Any = None

    def __call__(self, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=self.desc, unit="frame", dynamic_ncols=True)
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _run_and_report(pipeline: Pipeline, bar: _ProgressBar | None = None) -> RunStats:
    """Run to the end (Ctrl+C: stop, finish files, re-raise); print warnings."""
    from stream.runtime.builder import run

    try:
        stats = run(pipeline)
    except KeyboardInterrupt as exc:  # the pipeline has stopped and finished its files
        outputs = [str(o) for o in (getattr(s, "path", None) or getattr(s, "folder", None)
                                    for s in pipeline.sinks) if o is not None]
        _note_done(exc, pipeline.stats().frames_written, "frames", outputs)
        raise
    finally:
        if bar is not None:
            bar.close()
    for warning in stats.warnings:
        print(f"depthstream: warning: {warning}", file=sys.stderr)
    return stats


def _cmd_convert(args: argparse.Namespace) -> int:
    settings = _stream_settings(args)
    from stream.runtime.builder import build_convert

    bar = _ProgressBar(Path(args.input).name, enabled=not args.no_progress)
    pipeline = build_convert(args.input, args.out, settings, progress=bar)
    _announce_servers(args, pipeline.sinks)
    stats = _run_and_report(pipeline, bar)
    _report_zmq(pipeline.sinks)
    _report_foxglove(args, pipeline.sinks)
    outputs = [o for o in (args.out, args.raw, args.rosbag, args.mcap) if o is not None]
    print(f"{args.input} -> {', '.join(outputs) or 'foxglove'}: {stats.frames_written} frames, "
          f"{stats.fps:.1f} fps{_video_summary(pipeline.sinks)}")
    return ExitStatus.OK


def _cmd_live(args: argparse.Namespace) -> int:
    from stream.core.errors import ConfigError

    if args.realtime and args.file is None:
        raise ConfigError("--realtime goes with --file")
    settings = _stream_settings(args)
    from stream.runtime.builder import build_live, open_source

    if args.file is not None:
        source = open_source(args.file, live=True, realtime=args.realtime)
    else:
        source = open_source(args.url if args.url is not None else (args.camera or 0))
    pipeline = build_live(source, settings, video=args.out, window=not args.no_window)
    _announce_servers(args, pipeline.sinks)
    stats = _run_and_report(pipeline)
    p50 = f"{stats.latency_ms_p50:.0f}" if stats.latency_ms_p50 is not None else "-"
    p95 = f"{stats.latency_ms_p95:.0f}" if stats.latency_ms_p95 is not None else "-"
    _report_zmq(pipeline.sinks)
    _report_foxglove(args, pipeline.sinks)
    print(f"live: {stats.frames_read} frames read, {stats.frames_written} shown/written, "
          f"{stats.frames_dropped} dropped, {stats.fps:.1f} fps, latency p50 {p50} ms, "
          f"p95 {p95} ms{_video_summary(pipeline.sinks)}")
    return ExitStatus.OK


def _cmd_serve(args: argparse.Namespace) -> int:
    from stream.web import parse_size_wh, serve

    serve(args.host, args.port, args.data_dir, args.weights, args.backend, args.device,
          camera=args.camera, url=args.url, max_image_mb=args.max_image_mb,
          max_video_mb=args.max_video_mb, precision=args.precision, token=args.token,
          max_data_mb=args.max_data_mb, keep_hours=args.keep_hours or None,
          max_image_mp=args.max_image_mp, max_video_wh=parse_size_wh(args.max_video_size),
          max_video_s=args.max_video_minutes * 60.0, max_video_frames=args.max_video_frames,
          max_uploads=args.max_uploads, max_viewers=args.max_viewers,
          write_timeout_s=args.write_timeout, model=args.model, input_size=args.input_size,
          allow_hosts=args.allow_host)
    # Stopped cleanly: every job, file and stream is closed. Skip the interpreter's
    # teardown of torch and OpenVINO (seconds on a busy machine), so that SIGTERM ends
    # the process promptly.
    import logging
    import os

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(ExitStatus.OK)


def _cmd_info(args: argparse.Namespace) -> int:
    from stream.engines.report import model_report

    report = model_report(args.weights, args.precision, model=args.model,
                          input_size=args.input_size)
    if args.json:
        import json

        print(json.dumps(report, indent=2))
        return ExitStatus.OK
    check, speed = report["int8_agreement"], report["int8_speed"]
    where = ("this machine" if speed is None or speed["machine"] == report["machine"]
             else f"another machine ({speed['machine']})")
    output = "depth in metres" if report["output"] == "metric" else "relative inverse depth"
    lines = [
        ("model", f"{report['model']} ({output})"),
        ("input size", ", ".join(f"{side} {use}" for use, side in report["input_sizes"].items())
         + (" (--input-size)" if args.input_size else "")),
        ("weights", f"{report['weights']} ({report['size_bytes']} bytes, "
                    f"sha256 {report['sha256'][:16]}...)"),
        ("model cache", report["cache"]),
        ("fp32 model", report["fp32_model"] or "not made yet (made on first use)"),
        ("int8 model", report["int8_model"] or "not made yet (--precision int8 makes it)"),
        ("int8 vs fp32", "-" if check is None else
         f"AbsRel {check['abs_rel']:.4f}, delta<1.25 {check['delta1']:.4f} on "
         f"{check['frames']} held-out frames (worst frame {check['abs_rel_worst']:.4f}, "
         f"{check['delta1_worst']:.4f})"),
        ("int8 layers", report["int8_layers"] or "-"),
        ("int8 speed", "-" if speed is None else
         f"fp32 {speed['fp32_ms']:.1f} ms, int8 {speed['int8_ms']:.1f} ms per "
         f"{speed['shape'][-2]}x{speed['shape'][-1]} input "
         f"({speed['fp32_ms'] / speed['int8_ms']:.2f}x), timed on {where}"),
        ("auto uses", report["auto"]),
        ("OpenVINO / NNCF", f"{report['openvino']} / {report['nncf']}, "
                            f"{report['threads']} threads"),
        ("telemetry", report["telemetry"]),
    ]
    for name, value in lines:
        print(f"{name + ':':16} {value}")
    return ExitStatus.OK


def _cmd_image(args: argparse.Namespace) -> int:
    from stream.engines.estimator import create_estimator
    from stream.runtime.pictures import PictureSettings, plan_outputs, run_pictures

    settings = PictureSettings(cmap=args.cmap, invert=args.invert, side=args.side, raw=args.raw,
                               overwrite=args.overwrite)
    pairs = plan_outputs(args.inputs, args.out, overwrite=args.overwrite, raw=args.raw)
    estimator = create_estimator(args.weights, args.backend, args.device,
                                 precision=args.precision, model=args.model,
                                 input_size=args.input_size)
    failed = []

    def report(exc: Exception) -> None:
        failed.append(exc)
        _error(exc)

    done = []

    def show(r: Any) -> None:
        done.append(r)
        print(f"{r.source} -> {', '.join(map(str, r.outputs))}", flush=True)

    try:
        run_pictures(pairs, estimator, settings, on_error=report, on_result=show)
    except KeyboardInterrupt as exc:  # the picture being written is discarded whole
        folders = sorted({str(dst.parent) for _, dst in pairs})
        _note_done(exc, len(done), "pictures", folders)
        raise
    return ExitStatus.USAGE if failed else ExitStatus.OK


def _cmd_batch(args: argparse.Namespace) -> int:
    from stream.core.errors import ConfigError

    if given := cli_args.refused_given(args):
        raise ConfigError(f"{', '.join(given)}: for the network and robotics outputs of "
                          "convert and live; batch writes videos and raw depth")
    settings = _stream_settings(argparse.Namespace(**{**vars(args), "raw": None,
                                                      "stats": None}))
    from stream.batch.options import BatchSettings, estimator_hook_from_env

    factory, kwargs = estimator_hook_from_env()
    batch = BatchSettings(out_dir=args.out, video_format=args.format, raw=args.raw,
                          address=args.address, workers=args.workers,
                          cpus_per_worker=args.cpus_per_worker, segment_s=args.segment_seconds,
                          overwrite=args.overwrite, stats_path=args.stats,
                          estimator_factory=factory, estimator_kwargs=kwargs)
    from stream.batch import run_batch
    from stream.batch.progress import BatchProgress, summary_table

    report = run_batch(args.inputs, settings, batch, BatchProgress(not args.no_progress))
    print(summary_table(report))
    return ExitStatus.ERROR if report.failed else ExitStatus.OK


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (one sub-command per job), each wired to its ``_cmd_*``."""
    return cli_args.build_parser({
        "image": _cmd_image, "convert": _cmd_convert, "live": _cmd_live,
        "serve": _cmd_serve, "batch": _cmd_batch, "info": _cmd_info,
    })


def _error(exc: BaseException) -> None:
    message = " ".join(str(exc).split()) or type(exc).__name__
    print(f"depthstream: error: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status instead of exiting."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    except KeyboardInterrupt as exc:  # Ctrl+C before the command's handlers are set
        return _interrupted_status(exc)
    try:
        with _sigterm_stops_the_run():
            return int(args.func(args))
    except KeyboardInterrupt as exc:
        return _interrupted_status(exc)
    except Exception as exc:
        if _arrived:  # an interrupt that surfaced as an error: still an interrupt
            return _interrupted_status(_Terminated(_arrived[0]))
        if args.traceback:
            raise
        return _error_status(exc)


def _error_status(exc: Exception) -> int:
    """Print the one line of a failed run and return its exit status."""
    from stream.core.errors import ConfigError, SinkError, SourceError, StreamError, WeightsError

    if isinstance(exc, (WeightsError, SourceError, SinkError, ConfigError)):
        _error(exc)
        return ExitStatus.USAGE
    if isinstance(exc, StreamError):
        _error(exc)
        return ExitStatus.ERROR
    # a bug: one line, the traceback on request
    _error(f"{type(exc).__name__}: {exc} (run with --traceback for details)")
    return ExitStatus.ERROR


if __name__ == "__main__":
    sys.exit(main())
