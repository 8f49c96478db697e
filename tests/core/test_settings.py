"""stream.core.settings: every value checked once, when made, before heavy imports."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from stream.core.errors import ConfigError
from stream.core.settings import (
    COLORMAP_NAMES,
    DEFAULT_SMOOTH,
    BackendName,
    Device,
    Layout,
    ModelSettings,
    Precision,
    RawFormat,
    RenderSettings,
    RunLimits,
    StreamSettings,
    choices,
    parse_enum,
    smooth_strength,
)

ROOT = Path(__file__).resolve().parents[2]


def test_flat_constructor_parses_and_groups():
    s = StreamSettings(layout="side", raw_format="npy", backend="torch", raw_dir="r",
                       duration_s=3, cmap="turbo", precision="fp32")
    assert s.layout is Layout.SIDE and s.render.layout is Layout.SIDE
    assert s.raw_format is RawFormat.NPY and s.export.raw_dir == Path("r")
    assert s.model.backend is BackendName.TORCH and s.backend is BackendName.TORCH
    assert s.model.precision is Precision.FP32 and s.limits.duration_s == 3
    assert s.render == RenderSettings(Layout.SIDE, 0.5, "turbo", False)


@pytest.mark.parametrize("kwargs, match", [
    ({"smooth": 2}, "smooth must be from 0"),
    ({"smooth": -0.1}, "smooth must be from 0"),
    ({"alpha": 1.5}, "alpha"),
    ({"cmap": "rainbow"}, "unknown colormap"),
    ({"layout": "grid"}, "unknown layout 'grid'; choose one of depth, side, overlay"),
    ({"raw_format": "tif"}, "unknown raw format"),
    ({"backend": "onnx"}, "unknown backend"),
    ({"device": "tpu"}, "unknown device"),
    ({"precision": "int4"}, "unknown precision"),
    ({"backend": "openvino", "device": "cuda"}, "runs on the cpu"),
    ({"precision": "int8", "backend": "torch"}, "int8 runs on OpenVINO"),
    ({"duration_s": 0}, "duration must be positive"),
    ({"queue_size": 0}, "queue_size"),
])
def test_bad_values_fail_at_construction(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        StreamSettings(**kwargs)


def test_smooth_strength_words():
    assert smooth_strength(None) == smooth_strength(True) == DEFAULT_SMOOTH
    assert smooth_strength(False) == 0.0 and smooth_strength(0.3) == 0.3
    assert smooth_strength(None, off=True) == 0.0
    with pytest.raises(ConfigError, match="contradict"):
        smooth_strength(0.5, off=True)
    with pytest.raises(ConfigError, match="strength"):
        smooth_strength("much")


def test_enums_are_the_choices():
    assert choices(Layout) == ("depth", "side", "overlay")
    assert choices(Device) == ("cpu", "cuda")
    assert parse_enum(BackendName, "auto", "backend") is BackendName.AUTO
    assert ModelSettings(weights=Path("w.pt")).weights == "w.pt"
    assert RunLimits(stats_path="s.json").stats_path == Path("s.json")


def test_colormap_names_match_the_tables():
    from stream.depth.colormap import COLORMAPS

    assert tuple(COLORMAPS) == COLORMAP_NAMES


def test_cli_choices_come_from_the_enums():
    from stream.cli import build_parser

    parser = build_parser()
    convert = parser._subparsers._group_actions[0].choices["convert"]  # noqa: SLF001
    by_dest = {a.dest: a for a in convert._actions}  # noqa: SLF001
    assert tuple(by_dest["layout"].choices) == choices(Layout)
    assert tuple(by_dest["backend"].choices) == choices(BackendName)
    assert tuple(by_dest["raw_format"].choices) == choices(RawFormat)
    assert tuple(by_dest["cmap"].choices) == COLORMAP_NAMES


def test_argument_error_is_fast_and_imports_nothing_heavy(tmp_path):
    code = (
        "import sys\nimport stream.cli as cli\n"
        "rc = cli.main(['convert', 'x.mp4', '-o', 'y.mp4', '--smooth', '2'])\n"
        "heavy = [m for m in ('torch', 'timm', 'openvino', 'av') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
        "sys.exit(rc)\n"
    )
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    elapsed = time.monotonic() - start
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "depthstream: error: smooth must be from 0 (off) to 1, got 2.0"]
    assert "HEAVY []" in proc.stdout
    assert elapsed < 1.5, elapsed
