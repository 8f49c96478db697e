"""The argument parser of :mod:`stream.cli_args` and how ``cli.py`` wires its commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import stream.cli as cli
from stream import cli_args

ROOT = Path(__file__).resolve().parent.parent

#: One valid command line per sub-command.
ARGV = {
    "image": ["image", "a.png"],
    "convert": ["convert", "in.mp4"],
    "live": ["live", "--no-window"],
    "serve": ["serve"],
    "batch": ["batch", "in", "-o", "out"],
    "info": ["info"],
}


def _subcommands(parser) -> list[str]:
    return list(parser._subparsers._group_actions[0].choices)  # noqa: SLF001


def test_argv_table_covers_every_subcommand():
    assert sorted(_subcommands(cli_args.build_parser())) == sorted(ARGV)


@pytest.mark.parametrize("name", sorted(ARGV))
def test_cli_wires_each_subcommand_to_its_own_function(name):
    args = cli.build_parser().parse_args(ARGV[name])
    assert args.command == name
    assert args.func is getattr(cli, f"_cmd_{name}")


def test_without_handlers_the_parser_only_parses():
    args = cli_args.build_parser().parse_args(ARGV["convert"])
    assert args.input == "in.mp4"
    assert not hasattr(args, "func")


def test_handlers_must_name_every_subcommand_exactly():
    def handler(args) -> int:
        return 0

    every = dict.fromkeys(ARGV, handler)
    cli_args.build_parser(every)  # exactly the sub-commands: accepted
    with pytest.raises(ValueError, match="missing \\['info'\\]"):
        cli_args.build_parser({k: v for k, v in every.items() if k != "info"})
    with pytest.raises(ValueError, match="unknown \\['imgae'\\]"):
        cli_args.build_parser({**every, "imgae": handler})


def test_import_is_light():
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "import stream.cli_args\n"
        "heavy = ('torch', 'timm', 'openvino', 'av', 'cv2', 'numpy')\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert json.loads(out.stdout) == []


def test_batch_help_lists_no_option_batch_refuses(capsys):
    """--help shows what batch takes; the network and robotics options are not listed."""
    assert cli.main(["batch", "--help"]) == 0
    shown = capsys.readouterr().out
    assert "--segment-seconds" in shown and "--raw-format" in shown
    for flag in ("--zmq", "--rosbag", "--foxglove", "--mcap", "--pointcloud", "--fov",
                 "--known-distance", "ROS 2 and Foxglove", "network output"):
        assert flag not in shown, flag


@pytest.mark.parametrize("extra", [["--zmq", "tcp://127.0.0.1:5599"], ["--fov", "70"],
                                   ["--rosbag", "bag", "--known-distance", "1,2,3"],
                                   ["--stamp-origin", "video"], ["--zmq-jpeg"],
                                   ["--point-step", "4", "--frame-id", "camera"]])
def test_batch_refuses_a_hidden_option_in_one_line_before_any_work(extra, tmp_path, capsys):
    out = tmp_path / "out"
    status = cli.main(["batch", str(tmp_path / "missing.mp4"), "-o", str(out), *extra])
    assert status == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("depthstream: error: ")
    flags = [word for word in extra if word.startswith("--")]  # default values too
    assert err.split(": ")[2] == ", ".join(flags)
    assert "batch writes videos and raw depth" in err
    assert not out.exists()


def test_convert_still_lists_the_options_batch_hides(capsys):
    assert cli.main(["convert", "--help"]) == 0
    shown = capsys.readouterr().out
    assert "--zmq" in shown and "--rosbag" in shown and "ROS 2 and Foxglove" in shown


def test_batch_without_refused_options_gets_every_default_back():
    """The settings a batch builds see the same robot and ZeroMQ defaults as convert's."""
    parser = cli_args.build_parser()
    batch = parser.parse_args(["batch", "in", "-o", "out"])
    assert cli_args.refused_given(batch) == []
    convert = vars(parser.parse_args(["convert", "in.mp4", "-o", "out.mp4"]))
    for _, dest, _ in batch._refused:
        assert getattr(batch, dest) == convert[dest], dest
