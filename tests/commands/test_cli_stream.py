"""The ``convert`` and ``live`` commands: what a user runs, checked through ``main([...])``.

The frame-by-frame test and the Ctrl+C test run the real network (MidasSmall on the
synthetic weights, torch). Tests about streaming mechanics swap the model for
``cheap_estimator`` (a documented test double) by patching ``create_estimator``.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from support.clips import (
    NTSC,
    audio_duration_s,
    make_audio_only,
    make_clip,
    pattern,
    read_video,
    truncate,
)
from support.fakes import cheap_estimator
from support.mjpeg import MjpegServer

from stream.cli import main
from stream.engines.estimator import DepthEstimator
from stream.engines.torch_backend import TorchBackend
from stream.models.transforms import to_rgb
from stream.sinks.base import depth_to_u16

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_line_error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("depthstream: error: ")
    return lines[0]


# --------------------------------------------------------------------------- real network


@pytest.fixture(scope="module")
def converted(weights_file, tmp_path_factory):
    """One real conversion: 30000/1001 fps + AAC clip, --no-smooth, raw npy, stats."""
    d = tmp_path_factory.mktemp("convert")
    clip = make_clip(d / "in.mp4", 10, (64, 48), rate=NTSC, audio=True)
    rc = main(["convert", str(clip), "-o", str(d / "out.mp4"), "--weights", str(weights_file),
               "--backend", "torch", "--no-smooth", "--raw", str(d / "raw"),
               "--raw-format", "npy", "--stats", str(d / "stats.json"), "--no-progress"])
    return {"rc": rc, "dir": d, "clip": clip, "out": d / "out.mp4"}


def test_convert_keeps_frame_count_exact_rate_and_timestamps(converted):
    assert converted["rc"] == 0
    src, out = read_video(converted["clip"]), read_video(converted["out"])
    assert len(out["pts"]) == len(src["pts"]) == 10
    assert out["rate"] == src["rate"] == NTSC
    assert out["seconds"] == pytest.approx(src["seconds"], abs=1e-9)
    assert out["codec"] == "h264" and out["size_wh"] == (64, 48)


def test_convert_copies_audio_with_the_videos_duration(converted):
    out = read_video(converted["out"])
    assert out["audio"] == [("aac", 48000)]
    video_s = 10 * 1001 / 30000
    assert audio_duration_s(converted["out"]) == pytest.approx(video_s, abs=0.03)


def test_convert_raw_depth_of_frame_k_is_the_model_on_frame_k(converted, state_dict):
    estimator = DepthEstimator(TorchBackend(state_dict, threads=2))
    decoded = read_video(converted["clip"])["images"]
    model = [estimator.predict(to_rgb(img, "bgr"))[0] for img in decoded]
    raw = converted["dir"] / "raw"
    rows = list(csv.DictReader(open(raw / "timestamps.csv")))
    assert [int(r["index"]) for r in rows] == list(range(10))
    for k, row in enumerate(rows):
        depth = np.load(raw / f"depth_{k:06d}.npy")
        assert depth.dtype == np.float32 and depth.shape == (48, 64)
        np.testing.assert_allclose(depth, model[k], rtol=0, atol=1e-4 * np.ptp(model[k]))
        # No drop, no reordering: frame k's depth is nearest to the model on frame k.
        distances = [np.abs(depth - m).mean() for m in model]
        assert int(np.argmin(distances)) == k
        assert sorted(distances)[1] > 100 * distances[k]
        lo, hi = float(row["lo"]), float(row["hi"])
        assert (lo, hi) == pytest.approx((model[k].min(), model[k].max()), rel=1e-5)
        png = cv2.imread(str(raw / f"depth_{k:06d}.png"), cv2.IMREAD_UNCHANGED)
        assert np.abs(png.astype(int) - depth_to_u16(depth, lo, hi)).max() == 0


def test_convert_stats_json(converted):
    stats = json.loads((converted["dir"] / "stats.json").read_text())
    assert (stats["frames_read"], stats["frames_inferred"], stats["frames_written"],
            stats["frames_dropped"]) == (10, 10, 10, 0)
    assert stats["inference_ms_mean"] > 0 and stats["latency_ms_p95"] >= stats["latency_ms_p50"]


# --------------------------------------------------------------------------- streaming mechanics


def test_convert_variable_frame_rate_stays_in_sync(cheap, tmp_path, capsys):
    clip = make_clip(tmp_path / "vfr.mp4", 20, (64, 48), vfr=True, audio=True)
    assert main(["convert", str(clip), "-o", str(tmp_path / "o.mp4"), "--no-progress"]) == 0
    src, out = read_video(clip), read_video(tmp_path / "o.mp4")
    assert out["seconds"] == pytest.approx(src["seconds"], abs=1e-9)
    assert audio_duration_s(tmp_path / "o.mp4") == pytest.approx(
        audio_duration_s(clip), abs=0.05)


def test_convert_layout_side_and_smoothing_flag(cheap, tmp_path):
    clip = make_clip(tmp_path / "in.mp4", 5, (64, 48), audio=False)
    assert main(["convert", str(clip), "-o", str(tmp_path / "o.mkv"), "--layout", "side",
                 "--no-progress"]) == 0
    assert read_video(tmp_path / "o.mkv")["size_wh"] == (128, 48)


def test_convert_truncated_input_warns_and_exits_0_with_playable_file(cheap, tmp_path, capsys):
    clip = truncate(make_clip(tmp_path / "t.mp4", 40, (64, 48), audio=True, faststart=True),
                    keep=0.6)
    assert main(["convert", str(clip), "-o", str(tmp_path / "o.mp4"), "--no-progress"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("depthstream: warning: ") and "truncated" in err[0]
    frames = len(read_video(tmp_path / "o.mp4")["pts"])
    assert 0 < frames < 40 and f"{frames} of 40 frames" in err[0]


def _written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


BAD_CONVERT = {
    "missing file": (lambda d: d / "nope.mp4", "no such file"),
    "empty file": (lambda d: _written(d / "e.mp4", b""), "is empty"),
    "text named .mp4": (lambda d: _written(d / "t.mp4", b"hello\n"), "cannot read"),
    "truncated without index": (
        lambda d: truncate(make_clip(d / "c.mp4", 20, audio=False), keep=0.5), "cannot read"),
    "no video stream": (lambda d: make_audio_only(d / "a.m4a"), "no video stream"),
}


@pytest.mark.parametrize("case", list(BAD_CONVERT))
def test_convert_bad_input_exit_2_one_line_nothing_written(case, no_model, tmp_path, capsys):
    make, message = BAD_CONVERT[case]
    src = make(tmp_path)
    out = tmp_path / "out" / "o.mp4"
    out.parent.mkdir()
    assert main(["convert", str(src), "-o", str(out), "--raw", str(tmp_path / "raw")]) == 2
    assert message in _one_line_error(capsys)
    assert list(out.parent.iterdir()) == [] and not (tmp_path / "raw").exists()


def test_convert_bad_outputs_exit_2(no_model, tmp_path, capsys):
    clip = make_clip(tmp_path / "in.mp4", 3, audio=False)
    assert main(["convert", str(clip), "-o", str(tmp_path / "missing" / "o.mp4")]) == 2
    assert "output folder does not exist" in _one_line_error(capsys)
    (tmp_path / "exists.mp4").write_bytes(b"precious")
    assert main(["convert", str(clip), "-o", str(tmp_path / "exists.mp4")]) == 2
    assert "--overwrite" in _one_line_error(capsys)
    assert (tmp_path / "exists.mp4").read_bytes() == b"precious"
    assert main(["convert", str(clip), "-o", str(clip), "--overwrite"]) == 2
    assert "replace the input" in _one_line_error(capsys)


def test_convert_overwrite_replaces(cheap, tmp_path):
    clip = make_clip(tmp_path / "in.mp4", 3, audio=False)
    (tmp_path / "o.mp4").write_bytes(b"old")
    assert main(["convert", str(clip), "-o", str(tmp_path / "o.mp4"), "--overwrite",
                 "--no-progress"]) == 0
    assert len(read_video(tmp_path / "o.mp4")["pts"]) == 3


def test_failure_while_running_is_exit_1(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr("stream.engines.estimator.create_estimator",
                        lambda *a, **k: cheap_estimator(fail_at=4))
    clip = make_clip(tmp_path / "in.mp4", 20, audio=False)
    assert main(["convert", str(clip), "-o", str(tmp_path / "o.mp4"), "--no-progress"]) == 1
    assert "inference thread failed" in _one_line_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]  # no partial video


@pytest.mark.parametrize("args, message", [
    (["--camera", "97", "--no-window"], "cannot open camera 97"),
    (["--url", "http://127.0.0.1:{port}/x.mjpg", "--no-window"], "cannot open URL"),
    (["--realtime", "--no-window"], "--realtime goes with --file"),
])
def test_live_bad_sources_exit_2(args, message, no_model, capsys):
    args = [a.format(port=_free_port()) for a in args]
    assert main(["live", *args]) == 2
    assert message in _one_line_error(capsys)


def test_live_without_display_suggests_out_or_no_window(no_model, monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    clip = make_clip(tmp_path / "in.mp4", 3, audio=False)
    assert main(["live", "--file", str(clip)]) == 2
    line = _one_line_error(capsys)
    assert "--out" in line and "--no-window" in line


@pytest.mark.slow
def test_live_mjpeg_30s_counts_drops_and_keeps_latency_low(monkeypatch, tmp_path, capsys):
    # A network that takes 60 ms (slept, so the CPU stays free: the test is about the
    # queues) behind a 30 fps camera: about half the frames must be dropped, and a
    # frame's capture-to-render latency must stay under 3 inference times throughout.
    monkeypatch.setattr("stream.engines.estimator.create_estimator",
                        lambda *a, **k: cheap_estimator(delay_s=0.06))
    frames = [pattern(i, (160, 120)) for i in range(30)]
    with MjpegServer(frames, fps=30).start() as server:
        rc = main(["live", "--url", server.url, "--no-window", "--duration", "30",
                   "--out", str(tmp_path / "rec.mp4"), "--stats", str(tmp_path / "s.json")])
    assert rc == 0
    s = json.loads((tmp_path / "s.json").read_text())
    print(capsys.readouterr().out, s)
    assert 0.9 * 30 * 30 <= s["frames_read"] <= 1.05 * 30 * 30
    assert s["frames_dropped"] > 0.3 * s["frames_read"]
    assert s["frames_read"] == s["frames_written"] + s["frames_dropped"]
    assert s["latency_ms_p95"] < 3 * s["inference_ms_mean"]
    assert len(read_video(tmp_path / "rec.mp4")["pts"]) == s["frames_written"]


@pytest.mark.skipif(not (shutil.which("Xvfb") and shutil.which("xdotool")),
                    reason="needs Xvfb and xdotool (apt-get install xvfb xdotool)")
def test_window_opens_under_xvfb_and_q_quits(weights_file, tmp_path):
    display = next(n for n in range(90, 200) if not Path(f"/tmp/.X11-unix/X{n}").exists())
    xvfb = subprocess.Popen(["Xvfb", f":{display}", "-screen", "0", "800x600x24", "-nolisten",
                             "tcp"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {**os.environ, "DISPLAY": f":{display}"}
    try:
        for _ in range(50):
            if Path(f"/tmp/.X11-unix/X{display}").exists():
                break
            time.sleep(0.1)
        clip = make_clip(tmp_path / "in.mp4", 600, (160, 120), audio=False)
        app = subprocess.Popen(
            [sys.executable, str(ROOT / "cli.py"), "live", "--file", str(clip), "--realtime",
             "--layout", "side", "--weights", str(weights_file), "--backend", "torch",
             "--duration", "60"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        window = ""
        deadline = time.monotonic() + 90
        while not window and time.monotonic() < deadline and app.poll() is None:
            time.sleep(0.3)
            window = subprocess.run(["xdotool", "search", "--name", "^depthstream$"], env=env,
                                    capture_output=True, text=True).stdout.split()
            window = window[0] if window else ""
        assert window, app.communicate(timeout=30)
        time.sleep(2.0)  # a few frames drawn
        if shutil.which("import"):
            shot = tmp_path / "window.png"
            subprocess.run(["import", "-window", "root", str(shot)], env=env, check=True)
            image = cv2.imread(str(shot))
            # The side layout, enlarged to 640 wide: the picture, then depth colours.
            drawn = image[40:240, :640]
            assert drawn.std() > 20 and len(np.unique(drawn.reshape(-1, 3), axis=0)) > 50
        subprocess.run(["xdotool", "windowfocus", "--sync", window, "key", "q"], env=env,
                       check=True)
        out, err = app.communicate(timeout=60)
        assert app.returncode == 0, err
        assert err.strip() == "", err  # no Qt chatter
        assert out.startswith("live: ")
    finally:
        if "app" in locals() and app.poll() is None:
            app.kill()
        xvfb.terminate()
        xvfb.wait(10)


def _raw_run(clip, out_dir, *flags):
    assert main(["convert", str(clip), "--raw", str(out_dir), "--raw-format", "npy",
                 "--no-progress", *flags]) == 0
    rows = list(csv.DictReader(open(out_dir / "timestamps.csv")))
    return rows, [np.load(out_dir / f"depth_{int(r['index']):06d}.npy") for r in rows]


def test_convert_smooths_by_default_and_raw_export_says_which_scale(cheap, tmp_path):
    clip = make_clip(tmp_path / "in.mp4", 12, (64, 48), audio=False)
    plain_rows, plain = _raw_run(clip, tmp_path / "plain", "--no-smooth")
    smooth_rows, smooth = _raw_run(clip, tmp_path / "smooth")
    unsmoothed_rows, unsmoothed = _raw_run(clip, tmp_path / "unsmoothed", "--raw-unsmoothed")
    assert {r["scale"] for r in plain_rows} == {"raw"}
    assert {r["scale"] for r in smooth_rows} == {"smoothed"}
    assert {r["scale"] for r in unsmoothed_rows} == {"raw"}
    # --raw-unsmoothed exports the network's own depth: equal to a --no-smooth run
    for a, b in zip(plain, unsmoothed):
        np.testing.assert_array_equal(a, b)
    # the smoother changed something after the first frame (it starts from frame 0 as is)
    np.testing.assert_array_equal(smooth[0], plain[0])
    assert any(np.abs(s - p).max() > 1e-6 for s, p in zip(smooth[1:], plain[1:]))
    # lo/hi in the CSV undo the PNG scaling: they are the exported depth's own min/max
    for row, depth in zip(smooth_rows, smooth):
        assert (float(row["lo"]), float(row["hi"])) == (float(depth.min()), float(depth.max()))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--smooth", "2"], "smooth"),
        (["--smooth", "0.5", "--no-smooth"], "contradict"),
        (["--zmq-jpeg"], "--zmq"),
        (["--zmq", "nonsense://x"], "cannot publish on nonsense://x"),
    ],
)
def test_convert_bad_smoothing_and_zmq_flags_exit_2(flags, message, no_model, tmp_path, capsys):
    clip = make_clip(tmp_path / "in.mp4", 3, (64, 48), audio=False)
    assert main(["convert", str(clip), "-o", str(tmp_path / "o.mp4"), "--no-progress",
                 *flags]) == 2
    assert message in _one_line_error(capsys)
    assert not (tmp_path / "o.mp4").exists()


def test_convert_publishes_over_zmq_without_an_output_file(cheap, tmp_path, capsys):
    clip = make_clip(tmp_path / "in.mp4", 6, (64, 48), audio=False)
    port = _free_port()
    assert main(["convert", str(clip), "--zmq", f"tcp://127.0.0.1:{port}",
                 "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert f"zmq tcp://127.0.0.1:{port}:" in captured.out and "6 with no subscriber" in captured.out
    assert "warning" not in captured.err  # loopback only: nothing to warn about


def test_a_zmq_address_on_every_interface_is_warned_about(cheap, tmp_path, capsys):
    clip = make_clip(tmp_path / "in.mp4", 2, (64, 48), audio=False)
    assert main(["convert", str(clip), "--zmq", f"tcp://*:{_free_port()}",
                 "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "depthstream: warning: the ZeroMQ publisher at tcp://" in err
    assert "reachable from the network and has no authentication" in err
