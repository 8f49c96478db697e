"""Command-line arguments: depthstream's argparse parser; starts no threads, touches no files.

Flags, defaults, help texts and choices of every sub-command, in one place. Choices come from
the enums of :mod:`stream.core.settings`; values are validated there, not here. Nothing heavy is
imported, so a usage error exits at once. The functions that run the commands stay in
``cli.py``, which hands them to :func:`build_parser` by sub-command name.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import Any

from stream.core.settings import (
    CODEC_DEFAULTS,
    COLORMAP_NAMES,
    CRF_RANGES,
    DEFAULT_SMOOTH,
    PRESET_NAMES,
    BackendName,
    Device,
    Layout,
    Precision,
    RawFormat,
    RobotSettings,
    RosbagStorage,
    StampOrigin,
    VideoCodec,
    choices,
)
from stream.models.registry import DEFAULT_MODEL, MODELS

__all__ = ["Handler", "build_parser"]

#: Runs one sub-command with its parsed arguments and returns the exit status.
Handler = Callable[[argparse.Namespace], int]


def build_parser(commands: Mapping[str, Handler] | None = None) -> argparse.ArgumentParser:
    """The full argument parser: one sub-command per job.

    Args:
        commands: the function that runs each sub-command, by name; each becomes that
            sub-command's ``func`` default. ``None`` leaves them unset (parsing only).

    Returns:
        The parser of the ``depthstream`` command.

    Raises:
        ValueError: ``commands`` does not name every sub-command exactly.
    """
    parser = argparse.ArgumentParser(
        prog="depthstream",
        description="Monocular depth (MiDaS v2.1 small, Depth Anything V2 Small) for pictures, "
                    "videos and cameras.",
    )
    parser.add_argument("--traceback", action="store_true",
                        help="show the full traceback on errors (for bug reports)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_image_command, _add_convert_command, _add_live_command,
                _add_serve_command, _add_batch_command, _add_info_command):
        add(sub)
    if commands is not None:
        _attach_commands(sub, commands)
    return parser


def _add_image_command(sub: Any) -> None:
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


def _add_convert_command(sub: Any) -> None:
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


def _add_live_command(sub: Any) -> None:
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


def _add_info_command(sub: Any) -> None:
    p = sub.add_parser("info", help="the checkpoint, its cached models and int8's self-check",
                       description="Show which checkpoint is used, which OpenVINO models are "
                                   "cached for it, and how the int8 model agreed with fp32. "
                                   "With --precision, make that model first if it is missing.")
    _network_options(p, "the checkpoint (default: $DEPTHSTREAM_WEIGHTS or the cache; "
                        "no download)")
    p.add_argument("--precision", choices=("fp32", "int8"), default=None,
                   help="make this model now if it is not cached (int8: about a minute, once)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def _attach_commands(sub: Any, commands: Mapping[str, Handler]) -> None:
    """Make each sub-command's ``func`` default its handler; every sub-command needs one."""
    missing = [name for name in sub.choices if name not in commands]
    unknown = [name for name in commands if name not in sub.choices]
    if missing or unknown:
        raise ValueError(f"command handlers: missing {missing}, unknown {unknown}")
    for name, handler in commands.items():
        sub.choices[name].set_defaults(func=handler)


def _network_options(g: Any, weights_help: str) -> None:
    """``--model``, ``--weights`` and ``--input-size``: which network, from which file."""
    g.add_argument("--model", choices=list(MODELS), default=DEFAULT_MODEL,
                   help=f"the network (default: {DEFAULT_MODEL}); the dav2-metric models "
                        "give depth in metres")
    g.add_argument("--weights", metavar="PATH", help=weights_help)
    g.add_argument("--input-size", type=int, metavar="N", default=None,
                   help="the network's input side (default: the model's: 256 for midas-small, "
                        "518 for dav2 pictures; smaller is faster, larger sharper)")


def _model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    _network_options(g, "the model's official checkpoint (default: $DEPTHSTREAM_WEIGHTS, "
                        "the cache, or download)")
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


def _stream_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--layout", choices=choices(Layout), default="depth",
                   help="depth only, picture and depth side by side, or depth over the picture")
    g.add_argument("--alpha", type=float, default=0.5,
                   help="depth weight in the overlay layout, 0..1 (default: 0.5)")
    g.add_argument("--range-m", metavar="NEAR:FAR", default=None,
                   help="metric models: a fixed colour range in metres, like 0.5:8 (default: "
                        "automatic, held steady)")
    g.add_argument("--raw", metavar="DIR",
                   help="also write per frame a 16-bit depth PNG (millimetres for metric "
                        "models) and DIR/timestamps.csv")
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
        "Depth is metres with a metric model (--model dav2-metric-*), else relative inverse "
        "depth (larger = nearer, not metres); then point clouds are in metres only with "
        "two or more --known-distance points.")
    r.add_argument("--rosbag", metavar="DIR",
                   help="write a ROS 2 bag: depth (32FC1), JPEG colour, camera info per frame")
    r.add_argument("--rosbag-storage", choices=choices(RosbagStorage), default="mcap",
                   help="the bag's storage (default: mcap)")
    r.add_argument("--rosbag-colour", action="store_true",
                   help="also put the colourised depth in the bag (bgr8)")
    r.add_argument("--rosbag-compression", choices=choices(RobotSettings.Compression),
                   default=RobotSettings.rosbag_compression.value,
                   help="compress the bag: zstd chunks in MCAP, each message in sqlite3 "
                        "(default: none)")
    r.add_argument("--rosbag-depth", choices=choices(RobotSettings.DepthTransport),
                   default=RobotSettings.rosbag_depth.value,
                   help="depth as 32FC1 images (raw, default) or as image_transport's "
                        "compressedDepth PNG (16UC1 millimetres for metric models, "
                        "quantized 32FC1 for relative ones)")
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
    from stream.window.keys import key_help

    return "keys in the window:\n" + "\n".join(f"  {line}" for line in key_help())


def _add_serve_command(sub: Any) -> None:
    p = sub.add_parser("serve", help="web UI: upload pictures and videos, watch live depth",
                       description="Serve the web page and its HTTP API (waitress). On an "
                                   "address other than 127.0.0.1 every request needs a token "
                                   "(--token, $DEPTHSTREAM_TOKEN, or a new one printed with "
                                   "the URL). Jobs run on --model unless they ask for another "
                                   "model whose checkpoint is here (never downloaded for a "
                                   "job). SIGTERM or Ctrl-C stops it cleanly.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; "
                        "0.0.0.0 opens it to the network, with a token)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000; 0 = any free)")
    p.add_argument("--data-dir", metavar="DIR",
                   help="uploads and results (default: ~/.cache/depthstream/server)")
    p.add_argument("--token", metavar="TOKEN",
                   help="secret every request must carry (default: $DEPTHSTREAM_TOKEN; made up "
                        "when --host is not a loopback address)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="also answer to this Host name (a DNS name, a reverse proxy's; '*' any); "
                        "by default only localhost, 127.0.0.1, [::1] and the --host address "
                        "(repeat for more)")
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
    _refuse_groups(p, "network output", "ROS 2 and Foxglove")


#: The groups a batch parses only to refuse, with one message, when one of them is given.
REFUSED = "_refused"


def _refuse_groups(p: argparse.ArgumentParser, *titles: str) -> None:
    """Hide the options of the groups titled ``titles`` from ``--help``, and record them.

    They stay parseable, so a command can refuse them in one clear line rather than
    argparse's "unrecognized arguments": each is left out of the parsed arguments unless
    given (even with its default value), and ``args._refused`` holds ``(flag, dest,
    default)`` of each (:func:`refused_given`).
    """
    refused = []
    for group in p._action_groups:
        if group.title in titles:
            group.title = group.description = None  # an empty section prints nothing
            for action in group._group_actions:
                refused.append((action.option_strings[-1], action.dest, action.default))
                action.help = action.default = argparse.SUPPRESS
    p.set_defaults(**{REFUSED: tuple(refused)})


def refused_given(args: argparse.Namespace) -> list[str]:
    """The flags of refused options (:func:`_refuse_groups`) given in ``args``.

    Those not given get their defaults back in ``args``, so the settings built from it
    are the ones every command has.
    """
    given = []
    for flag, dest, default in getattr(args, REFUSED, ()):
        if hasattr(args, dest):
            given.append(flag)
        else:
            setattr(args, dest, default)
    return given
