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
