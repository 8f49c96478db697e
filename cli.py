"""depthstream command line: parse arguments, call the package, map the outcome to an exit code."""

from __future__ import annotations

import argparse
import sys
from enum import IntEnum

__all__ = ["ExitStatus", "build_parser", "main"]


class ExitStatus(IntEnum):
    """Process exit codes (as httpie's)."""

    OK = 0
    ERROR = 1  # something failed while running
    USAGE = 2  # a user mistake: bad arguments, unreadable input, missing or wrong weights
    INTERRUPTED = 130  # 128 + SIGINT


def _model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--weights", metavar="PATH",
                   help="midas_v21_small_256.pt (default: $DEPTHSTREAM_WEIGHTS, the cache, "
                        "or download)")
    g.add_argument("--backend", choices=("auto", "openvino", "torch"), default="auto",
                   help="inference engine (default: auto = OpenVINO when installed, else torch)")
    g.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="torch device (default: cpu)")


def _colour_options(p: argparse.ArgumentParser) -> None:
    from stream.colormap import COLORMAPS

    g = p.add_argument_group("colour")
    g.add_argument("--cmap", choices=tuple(COLORMAPS), default="inferno",
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
    return parser


def _cmd_image(args: argparse.Namespace) -> int:
    from stream.inference import create_estimator
    from stream.pictures import PictureSettings, plan_outputs, run_pictures

    settings = PictureSettings(cmap=args.cmap, invert=args.invert, side=args.side, raw=args.raw,
                               overwrite=args.overwrite)
    pairs = plan_outputs(args.inputs, args.out, overwrite=args.overwrite)
    estimator = create_estimator(args.weights, args.backend, args.device)
    failed = []

    def report(exc: Exception) -> None:
        failed.append(exc)
        _error(exc)

    results = run_pictures(pairs, estimator, settings, on_error=report)
    for r in results:
        print(f"{r.source} -> {', '.join(map(str, r.outputs))}")
    return ExitStatus.USAGE if failed else ExitStatus.OK


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
        return int(args.func(args))
    except KeyboardInterrupt:
        print("depthstream: interrupted", file=sys.stderr)
        return ExitStatus.INTERRUPTED
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
