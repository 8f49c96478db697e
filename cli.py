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

from stream.settings import (
    COLORMAP_NAMES,
    DEFAULT_SMOOTH,
    BackendName,
    Device,
    Layout,
    Precision,
    RawFormat,
    RobotSettings,
    RosbagStorage,
    StampOrigin,
    StreamSettings,
    choices,
    smooth_strength,
)

if TYPE_CHECKING:
    from stream.pipeline import Pipeline
    from stream.sinks import Sink
    from stream.stats import RunStats

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


class _Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread: the run stops as on Ctrl+C.

    Attributes:
        signum: the signal; the exit status is 128 + ``signum``.
    """

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signum)
        self.signum = int(signum)


def _raise_terminated(signum: int, frame: object) -> None:
    for other in _STOP_SIGNALS:  # one stop is enough: the next ones would cut the finish
        signal.signal(other, signal.SIG_IGN)
    raise _Terminated(signum)


@contextlib.contextmanager
def _sigterm_stops_the_run() -> Iterator[None]:
    """While a command runs, SIGTERM and SIGHUP stop it as Ctrl+C does: files are finished.

    A signal this process was started ignoring (``nohup``) stays ignored.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in _STOP_SIGNALS}
    for signum, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(signum, _raise_terminated)
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


def _model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--weights", metavar="PATH",
                   help="midas_v21_small_256.pt (default: $DEPTHSTREAM_WEIGHTS, the cache, "
                        "or download)")
    g.add_argument("--backend", choices=choices(BackendName), default="auto",
                   help="inference engine (default: auto = OpenVINO when installed, else torch)")
    g.add_argument("--device", choices=choices(Device), default="cpu",
                   help="torch device (default: cpu)")
    g.add_argument("--precision", choices=choices(Precision), default="auto",
                   help="network precision (default: auto = int8 where its self-check against "
                        "fp32 passed, else fp32; int8 is made once per checkpoint, OpenVINO only)")


def _colour_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("colour")
    g.add_argument("--cmap", choices=COLORMAP_NAMES, default="inferno",
                   help="colormap (default: inferno; near = bright)")
    g.add_argument("--invert", action="store_true", help="show near as dark instead")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (one sub-command per job)."""
    parser = argparse.ArgumentParser(
        prog="depthstream",
        description="Monocular depth (MiDaS v2.1 small) for pictures, videos and cameras.",
    )
    parser.add_argument("--traceback", action="store_true",
                        help="show the full traceback on errors (for bug reports)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("image", help="depth PNGs for pictures or folders of pictures",
                       description="Write an Inferno depth PNG per picture, at its size.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="picture files or folders")
    p.add_argument("-o", "--out", metavar="OUT",
                   help="a .png for one picture, else a folder (default: ./<name>_depth.png)")
    p.add_argument("--raw", action="store_true",
                   help="also write the depth as 16-bit PNG and float32 .npy")
    p.add_argument("--side", action="store_true", help="picture and depth side by side")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    _model_options(p)
    _colour_options(p)
    p.set_defaults(func=_cmd_image)

    p = sub.add_parser("convert", help="a depth video from a video file",
                       description="Convert every frame of a video, in order, keeping its frame "
                                   "rate, timestamps and audio.")
    p.add_argument("input", metavar="INPUT", help="a video file")
    p.add_argument("-o", "--out", "--output", dest="out", metavar="OUTPUT",
                   help="the depth video: .mp4 or .mkv (H.264), .webm (VP9 + Opus)")
    _stream_options(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _model_options(p)
    _colour_options(p)
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("live", help="live depth from a camera, a stream URL or a file",
                       description="Live depth in a window (q or Esc quits) and/or to a file.\n"
                                   "Frames the network cannot keep up with are dropped, so "
                                   "the latency stays low.",
                       epilog=_window_keys_help(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--camera", type=int, metavar="N", help="camera index (default: 0)")
    src.add_argument("--url", metavar="URL", help="stream URL (rtsp://..., http://... MJPEG)")
    src.add_argument("--file", metavar="F", help="a video file, played as a live source")
    p.add_argument("--realtime", action="store_true",
                   help="with --file: release frames at the file's own pace, as a camera would")
    p.add_argument("-o", "--out", metavar="FILE", help="also record to .mp4, .mkv or .webm")
    p.add_argument("--no-window", action="store_true", help="do not open a window")
    p.add_argument("--snapshot-dir", metavar="DIR",
                   help="where the window's snapshots (s) and recordings (o) go "
                        "(default: the current folder)")
    p.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long")
    _stream_options(p)
    _model_options(p)
    _colour_options(p)
    p.set_defaults(func=_cmd_live)

    _add_serve_command(sub)

    _add_batch_command(sub)

    p = sub.add_parser("info", help="the checkpoint, its cached models and int8's self-check",
                       description="Show which checkpoint is used, which OpenVINO models are "
                                   "cached for it, and how the int8 model agreed with fp32. "
                                   "With --precision, make that model first if it is missing.")
    p.add_argument("--weights", metavar="PATH",
                   help="the checkpoint (default: $DEPTHSTREAM_WEIGHTS or the cache; no download)")
    p.add_argument("--precision", choices=("fp32", "int8"), default=None,
                   help="make this model now if it is not cached (int8: about a minute, once)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_info)
    return parser


def _stream_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--layout", choices=choices(Layout), default="depth",
                   help="depth only, picture and depth side by side, or depth over the picture")
    g.add_argument("--alpha", type=float, default=0.5,
                   help="depth weight in the overlay layout, 0..1 (default: 0.5)")
    g.add_argument("--raw", metavar="DIR",
                   help="also write per frame a 16-bit depth PNG and DIR/timestamps.csv")
    g.add_argument("--raw-format", choices=choices(RawFormat), default="png",
                   help="npy: float32 .npy files next to the PNGs (default: png)")
    g.add_argument("--smooth", type=float, metavar="STRENGTH", default=None,
                   help="temporal smoothing from 0 (off) to 1 (default: "
                        f"{DEFAULT_SMOOTH}, chosen with benchmarks/temporal.py)")
    g.add_argument("--no-smooth", action="store_true",
                   help="no temporal smoothing (same as --smooth 0)")
    g.add_argument("--raw-unsmoothed", action="store_true",
                   help="raw depth export: the network's own per-frame depth, not the "
                        "smoothed one")
    n = p.add_argument_group("network output")
    n.add_argument("--zmq", metavar="ADDR",
                   help="also publish each depth frame with ZeroMQ, e.g. tcp://127.0.0.1:5555 "
                        "(see samples/zmq_subscriber.py)")
    n.add_argument("--zmq-dtype", choices=("float16", "float32"), default=None,
                   help="depth values on the wire (default: float16)")
    n.add_argument("--zmq-jpeg", action="store_true",
                   help="also send the colour frame as JPEG")
    _robot_options(p)
    _encoder_options(p)
    g.add_argument("--stats", metavar="FILE.json",
                   help="write frame counts, per-stage ms and latency p50/p95 as JSON")
    g.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def _robot_options(p: argparse.ArgumentParser) -> None:
    r = p.add_argument_group(
        "ROS 2 and Foxglove",
        "Depth is relative inverse depth (larger = nearer, not metres); point clouds are "
        "in metres only with two or more --known-distance points.")
    r.add_argument("--rosbag", metavar="DIR",
                   help="write a ROS 2 bag: depth (32FC1), JPEG colour, camera info per frame")
    r.add_argument("--rosbag-storage", choices=choices(RosbagStorage), default="mcap",
                   help="the bag's storage (default: mcap)")
    r.add_argument("--rosbag-colour", action="store_true",
                   help="also put the colourised depth in the bag (bgr8)")
    r.add_argument("--foxglove", metavar="[HOST:]PORT",
                   help="serve the frames live to Foxglove over WebSocket (host default "
                        "127.0.0.1; another host is reachable from the network with no "
                        "authentication)")
    r.add_argument("--mcap", metavar="FILE", help="record the Foxglove channels to FILE.mcap")
    r.add_argument("--pointcloud", action="store_true",
                   help="also publish a coloured point cloud per frame")
    r.add_argument("--point-step", type=int, default=4, metavar="N",
                   help="point clouds take every N-th pixel across and down (default: 4)")
    r.add_argument("--fov", type=float, metavar="DEGREES",
                   help="horizontal field of view of the camera (default: 60)")
    r.add_argument("--intrinsics", metavar="FX,FY,CX,CY",
                   help="calibrated camera intrinsics in pixels at the input's size")
    r.add_argument("--known-distance", action="append", default=[], metavar="ROW,COL,METRES",
                   help="a pixel whose distance is known; two or more make point clouds metric")
    r.add_argument("--frame-id", default="camera", help="frame_id of every message "
                   "(an optical frame: x right, y down, z forward; default: camera)")
    r.add_argument("--topic-prefix", default="/depthstream",
                   help="namespace of the topics (default: /depthstream)")
    r.add_argument("--stamp-origin", choices=choices(StampOrigin), default="video",
                   help="stamps of a file's frames: seconds from the video's start, or unix "
                        "time from its recorded start (live sources: the capture clock)")


def _encoder_options(p: argparse.ArgumentParser) -> None:
    from stream.settings import CODEC_DEFAULTS, CRF_RANGES, PRESET_NAMES, VideoCodec

    lossy = [c for c in VideoCodec if c in CRF_RANGES]
    e = p.add_argument_group("video encoding")
    e.add_argument("--codec", choices=choices(VideoCodec), default=None,
                   help="video codec (default: h264 in .mp4 and .mkv, vp9 in .webm; "
                        "ffv1 is lossless, in .mkv)")
    e.add_argument("--crf", type=int, metavar="N",
                   help="quality, lower is better and larger: " + ", ".join(
                       f"{c.value} {CRF_RANGES[c][0]}-{CRF_RANGES[c][1]} (default "
                       f"{CODEC_DEFAULTS[c][0]})" for c in lossy))
    e.add_argument("--preset", choices=PRESET_NAMES, default=None, metavar="PRESET",
                   help=f"encoder speed, {PRESET_NAMES[0]} (largest file) to {PRESET_NAMES[-1]} "
                        "(smallest; default: " + ", ".join(
                            f"{c.value} {CODEC_DEFAULTS[c][1]}" for c in lossy) + ")")


def _window_keys_help() -> str:
    from stream.window_keys import key_help

    return "keys in the window:\n" + "\n".join(f"  {line}" for line in key_help())


def _stream_settings(args: argparse.Namespace) -> StreamSettings:
    """Every run setting from the arguments, validated before anything heavy is imported."""
    return StreamSettings(
        layout=args.layout, alpha=args.alpha, cmap=args.cmap, invert=args.invert,
        smooth=smooth_strength(args.smooth, off=args.no_smooth), raw_dir=args.raw,
        raw_unsmoothed=args.raw_unsmoothed, raw_format=args.raw_format,
        overwrite=args.overwrite, backend=args.backend, device=args.device,
        weights=args.weights, precision=args.precision,
        duration_s=getattr(args, "duration", None),
        stats_path=args.stats,
        codec=args.codec, crf=args.crf, preset=args.preset,
        snapshot_dir=getattr(args, "snapshot_dir", None),
        robot=RobotSettings(
            fov_deg=args.fov, intrinsics=args.intrinsics, known_distances=args.known_distance,
            rosbag_dir=args.rosbag, rosbag_storage=args.rosbag_storage,
            rosbag_colour=args.rosbag_colour, stamp_origin=args.stamp_origin,
            frame_id=args.frame_id, topic_prefix=args.topic_prefix, foxglove=args.foxglove,
            mcap_path=args.mcap, pointcloud=args.pointcloud, point_step=args.point_step),
    )


def _zmq_sinks(args: argparse.Namespace) -> list[Sink]:
    """A ZeroMQ publisher when ``--zmq`` asks for one (binds now: a busy port is exit 2)."""
    from stream.errors import ConfigError

    if args.zmq is None:
        if args.zmq_dtype is not None or args.zmq_jpeg:
            raise ConfigError("--zmq-dtype and --zmq-jpeg go with --zmq ADDR")
        return []
    from stream.publisher import ZmqPublisher

    return [ZmqPublisher(args.zmq, dtype=args.zmq_dtype or "float16", jpeg=args.zmq_jpeg)]


def _announce_foxglove(args: argparse.Namespace, sinks: list[Sink]) -> None:
    if args.foxglove is None:
        return
    from stream.foxglove_sink import FoxgloveServerSink, loopback_warning

    for sink in sinks:
        if isinstance(sink, FoxgloveServerSink):
            print(f"foxglove: {sink.url} (Foxglove: Open connection > Foxglove WebSocket)",
                  flush=True)
            warning = loopback_warning(sink)
            if warning:
                print(f"depthstream: warning: {warning}", file=sys.stderr)


def _report_foxglove(args: argparse.Namespace, sinks: list[Sink]) -> None:
    if args.foxglove is None:
        return
    from stream.foxglove_sink import FoxgloveServerSink

    for sink in sinks:
        if isinstance(sink, FoxgloveServerSink):
            print(f"foxglove {sink.url}: {sink.sent} sent, {sink.dropped} dropped (sender "
                  f"busy), {sink.skipped} with no viewer")


def _video_summary(sinks: list[Sink]) -> str:
    """``", 1.2 MB, 845 kb/s"`` for the video file a run wrote, else ``""``."""
    video_sink = sys.modules.get("stream.video_sink")  # not loaded: no video was written
    for sink in sinks if video_sink is not None else ():
        if isinstance(sink, video_sink.VideoFileSink) and sink.size_bytes:
            rate = sink.bitrate_kbps
            return f", {sink.size_bytes / 1e6:.1f} MB" + (f", {rate:.0f} kb/s" if rate else "")
    return ""


def _report_zmq(sinks: list[Sink]) -> None:
    from stream.publisher import ZmqPublisher

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
    from stream.builder import run

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
    from stream.builder import build_convert

    bar = _ProgressBar(Path(args.input).name, enabled=not args.no_progress)
    pipeline = build_convert(args.input, args.out, settings, progress=bar,
                             extra_sinks=_zmq_sinks(args))
    _announce_foxglove(args, pipeline.sinks)
    stats = _run_and_report(pipeline, bar)
    _report_zmq(pipeline.sinks)
    _report_foxglove(args, pipeline.sinks)
    outputs = [o for o in (args.out, args.raw, args.rosbag, args.mcap) if o is not None]
    print(f"{args.input} -> {', '.join(outputs) or 'foxglove'}: {stats.frames_written} frames, "
          f"{stats.fps:.1f} fps{_video_summary(pipeline.sinks)}")
    return ExitStatus.OK


def _cmd_live(args: argparse.Namespace) -> int:
    from stream.errors import ConfigError

    if args.realtime and args.file is None:
        raise ConfigError("--realtime goes with --file")
    settings = _stream_settings(args)
    from stream.builder import build_live, open_source

    if args.file is not None:
        source = open_source(args.file, live=True, realtime=args.realtime)
    else:
        source = open_source(args.url if args.url is not None else (args.camera or 0))
    pipeline = build_live(source, settings, video=args.out, window=not args.no_window,
                          extra_sinks=_zmq_sinks(args))
    _announce_foxglove(args, pipeline.sinks)
    stats = _run_and_report(pipeline)
    p50 = f"{stats.latency_ms_p50:.0f}" if stats.latency_ms_p50 is not None else "-"
    p95 = f"{stats.latency_ms_p95:.0f}" if stats.latency_ms_p95 is not None else "-"
    _report_zmq(pipeline.sinks)
    _report_foxglove(args, pipeline.sinks)
    print(f"live: {stats.frames_read} frames read, {stats.frames_written} shown/written, "
          f"{stats.frames_dropped} dropped, {stats.fps:.1f} fps, latency p50 {p50} ms, "
          f"p95 {p95} ms{_video_summary(pipeline.sinks)}")
    return ExitStatus.OK


def _add_serve_command(sub: Any) -> None:
    p = sub.add_parser("serve", help="web UI: upload pictures and videos, watch live depth",
                       description="Serve the web page and its HTTP API (waitress). On an "
                                   "address other than 127.0.0.1 every request needs a token "
                                   "(--token, $DEPTHSTREAM_TOKEN, or a new one printed with "
                                   "the URL). SIGTERM or Ctrl-C stops it cleanly.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; "
                        "0.0.0.0 opens it to the network, with a token)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000; 0 = any free)")
    p.add_argument("--data-dir", metavar="DIR",
                   help="uploads and results (default: ~/.cache/depthstream/server)")
    p.add_argument("--token", metavar="TOKEN",
                   help="secret every request must carry (default: $DEPTHSTREAM_TOKEN; made up "
                        "when --host is not a loopback address)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--camera", type=int, metavar="N", help="camera index for the /live page")
    src.add_argument("--url", metavar="URL",
                     help="stream URL for the /live page (rtsp://..., http://... MJPEG)")
    g = p.add_argument_group("limits (read from each upload's header before decoding)")
    g.add_argument("--max-image-mb", type=float, default=20, metavar="MB",
                   help="largest picture upload (default: 20)")
    g.add_argument("--max-image-mp", type=float, default=40, metavar="MP",
                   help="most megapixels a picture may have (default: 40)")
    g.add_argument("--max-video-mb", type=float, default=500, metavar="MB",
                   help="largest video upload (default: 500)")
    g.add_argument("--max-video-size", default="4096x4096", metavar="WxH",
                   help="largest video frame (default: 4096x4096)")
    g.add_argument("--max-video-minutes", type=float, default=30, metavar="MIN",
                   help="longest video (default: 30)")
    g.add_argument("--max-video-frames", type=int, default=108_000, metavar="N",
                   help="most frames a video may have (default: 108000)")
    g.add_argument("--max-uploads", type=int, default=4, metavar="N",
                   help="large uploads (over 1 MB) on their way in at once; more get 503 "
                        "(default: 4)")
    g.add_argument("--max-viewers", type=int, default=8, metavar="N",
                   help="live viewers at once (default: 8)")
    g.add_argument("--write-timeout", type=float, default=10, metavar="S",
                   help="disconnect a client that reads nothing for this long (default: 10)")
    g = p.add_argument_group("retention")
    g.add_argument("--max-data-mb", type=float, default=2000, metavar="MB",
                   help="data folder budget: least recently used results are deleted "
                        "(default: 2000)")
    g.add_argument("--keep-hours", type=float, default=168, metavar="H",
                   help="delete results unused this long (default: 168; 0 = no age limit)")
    _model_options(p)
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    from stream.web import parse_size_wh, serve

    serve(args.host, args.port, args.data_dir, args.weights, args.backend, args.device,
          camera=args.camera, url=args.url, max_image_mb=args.max_image_mb,
          max_video_mb=args.max_video_mb, precision=args.precision, token=args.token,
          max_data_mb=args.max_data_mb, keep_hours=args.keep_hours or None,
          max_image_mp=args.max_image_mp, max_video_wh=parse_size_wh(args.max_video_size),
          max_video_s=args.max_video_minutes * 60.0, max_video_frames=args.max_video_frames,
          max_uploads=args.max_uploads, max_viewers=args.max_viewers,
          write_timeout_s=args.write_timeout)
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
    from stream.backends import model_report

    report = model_report(args.weights, args.precision)
    if args.json:
        import json

        print(json.dumps(report, indent=2))
        return ExitStatus.OK
    check = report["int8_agreement"]
    lines = [
        ("weights", f"{report['weights']} ({report['size_bytes']} bytes, "
                    f"sha256 {report['sha256'][:16]}...)"),
        ("model cache", report["cache"]),
        ("fp32 model", report["fp32_model"] or "not made yet (made on first use)"),
        ("int8 model", report["int8_model"] or "not made yet (--precision int8 makes it)"),
        ("int8 vs fp32", "-" if check is None else
         f"AbsRel {check['abs_rel']:.4f}, delta<1.25 {check['delta1']:.4f} on "
         f"{check['frames']} held-out frames (worst frame {check['abs_rel_worst']:.4f}, "
         f"{check['delta1_worst']:.4f})"),
        ("auto uses", report["auto"]),
        ("OpenVINO / NNCF", f"{report['openvino']} / {report['nncf']}, "
                            f"{report['threads']} threads"),
        ("telemetry", report["telemetry"]),
    ]
    for name, value in lines:
        print(f"{name + ':':16} {value}")
    return ExitStatus.OK


def _cmd_image(args: argparse.Namespace) -> int:
    from stream.inference import create_estimator
    from stream.pictures import PictureSettings, plan_outputs, run_pictures

    settings = PictureSettings(cmap=args.cmap, invert=args.invert, side=args.side, raw=args.raw,
                               overwrite=args.overwrite)
    pairs = plan_outputs(args.inputs, args.out, overwrite=args.overwrite, raw=args.raw)
    estimator = create_estimator(args.weights, args.backend, args.device,
                                 precision=args.precision)
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


def _add_batch_command(sub: Any) -> None:
    from stream.batch.options import DEFAULT_SEGMENT_S, OutputFormat

    # "resolve": batch's --raw is a switch (a folder per video), not convert's --raw DIR.
    p = sub.add_parser("batch", conflict_handler="resolve",
                       help="depth videos for many videos, on this machine or a Ray cluster",
                       description="Convert video files and folders (searched recursively) "
                                   "into OUTDIR, mirroring the tree, spread over Ray workers: a "
                                   "local Ray instance (127.0.0.1 only), or a cluster with "
                                   "--address. Long videos are cut into segments converted in "
                                   "parallel. A rerun skips what is done. Exit 1 if a file "
                                   "failed.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="video files or folders")
    p.add_argument("-o", "--out", "--output", dest="out", required=True, metavar="OUTDIR",
                   help="output folder; in/sub/c.mkv (from folder in) -> OUTDIR/sub/c.mp4")
    _stream_options(p)
    b = p.add_argument_group("batch")
    b.add_argument("--raw", action="store_true",
                   help="also write raw depth per video to OUTDIR/<sub>/<name>_raw/")
    b.add_argument("--format", choices=choices(OutputFormat), default="mp4",
                   help="output container (default: mp4)")
    b.add_argument("--address", metavar="ADDR",
                   help="join a Ray cluster: auto, HOST:PORT or ray://HOST:10001 (default: a "
                        "local instance on this machine)")
    b.add_argument("--workers", type=int, metavar="N",
                   help="worker processes, each loads the network once (default: as many as "
                        "the CPUs hold)")
    b.add_argument("--cpus-per-worker", type=float, metavar="N",
                   help="CPUs (network threads) per worker (default: a whole machine)")
    b.add_argument("--segment-seconds", type=float, default=DEFAULT_SEGMENT_S, metavar="S",
                   help=f"cut longer videos at keyframes into pieces of about S seconds, "
                        f"converted in parallel (default: {DEFAULT_SEGMENT_S:g}; 0 = whole)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    _model_options(p)
    _colour_options(p)
    p.set_defaults(func=_cmd_batch)


def _cmd_batch(args: argparse.Namespace) -> int:
    from stream.errors import ConfigError

    if args.zmq is not None:
        raise ConfigError("--zmq goes with convert and live, not batch")
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


def _error(exc: BaseException) -> None:
    message = " ".join(str(exc).split()) or type(exc).__name__
    print(f"depthstream: error: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status instead of exiting."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    from stream.errors import ConfigError, SinkError, SourceError, StreamError, WeightsError

    try:
        with _sigterm_stops_the_run():
            return int(args.func(args))
    except KeyboardInterrupt as exc:
        return _interrupted_status(exc)
    except (WeightsError, SourceError, SinkError, ConfigError) as exc:
        if args.traceback:
            raise
        _error(exc)
        return ExitStatus.USAGE
    except StreamError as exc:
        if args.traceback:
            raise
        _error(exc)
        return ExitStatus.ERROR
    except Exception as exc:  # a bug: one line, the traceback on request
        if args.traceback:
            raise
        _error(f"{type(exc).__name__}: {exc} (run with --traceback for details)")
        return ExitStatus.ERROR


if __name__ == "__main__":
    sys.exit(main())
