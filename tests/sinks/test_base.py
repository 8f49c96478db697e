"""Sinks: layouts, video files (rate, timestamps, audio), raw depth, the display check."""

from __future__ import annotations

import csv
import socket
import threading
from fractions import Fraction

import cv2
import numpy as np
import pytest
from support.clips import NTSC, audio_duration_s, make_clip, pattern, read_video

from stream.core.errors import ConfigError, SinkError
from stream.core.records import DepthFrame, VideoInfo
from stream.core.settings import Layout, RawFormat
from stream.depth.colormap import colorize
from stream.depth.render import Renderer
from stream.sinks.base import CallbackSink, RawDepthSink, SinkContext, depth_to_u16
from stream.sinks.video import VideoFileSink
from stream.sources.capture import FileSource
from stream.window.sink import check_display


def _depth_frame(index: int, size_wh=(64, 48), timestamp=None, pts=None) -> DepthFrame:
    w, h = size_wh
    depth = (np.add.outer(np.arange(h), np.arange(w)) + index).astype(np.float32)
    return DepthFrame(index=index, timestamp=index / 30 if timestamp is None else timestamp,
                      image=pattern(index, size_wh), depth=depth, inference_ms=1.0,
                      lo=float(depth.min()), hi=float(depth.max()), pts=pts)


def _write(sink, frames, info):
    sink.open(SinkContext(info, threading.Event()))
    for f in frames:
        sink.write(f)
    sink.close()


# --------------------------------------------------------------------------- layouts


def test_renderer_layouts():
    f = _depth_frame(3)
    colour = colorize(f.depth, f.lo, f.hi, "inferno")
    assert np.array_equal(Renderer(Layout.DEPTH).render(f), colour)
    side = Renderer("side").render(f)
    assert side.shape == (48, 128, 3)
    assert np.array_equal(side[:, :64], f.image) and np.array_equal(side[:, 64:], colour)
    assert Renderer("side").size_wh((64, 48)) == (128, 48)
    assert np.array_equal(Renderer("overlay", alpha=0.0).render(f), f.image)
    assert np.array_equal(Renderer("overlay", alpha=1.0).render(f), colour)
    half = Renderer("overlay", alpha=0.5).render(f).astype(int)
    assert np.abs(half - (f.image.astype(int) + colour) / 2).max() <= 1


@pytest.mark.parametrize("kwargs", [{"alpha": 1.5}, {"cmap": "nope"}, {"layout": "mosaic"}])
def test_renderer_rejects_bad_settings(kwargs):
    with pytest.raises(ConfigError):
        Renderer(**kwargs)


# --------------------------------------------------------------------------- video file


def test_video_sink_keeps_exact_rate_pts_and_copies_audio(tmp_path):
    clip = make_clip(tmp_path / "in.mp4", 15, (64, 48), rate=NTSC, audio=True)
    src = FileSource(clip)
    frames = [_depth_frame(f.index, timestamp=f.timestamp, pts=f.pts) for f in src.frames()]
    sink = VideoFileSink(tmp_path / "out.mp4", Renderer("side"), audio_from=clip)
    _write(sink, frames, src.info)
    out = read_video(tmp_path / "out.mp4")
    src_video = read_video(clip)
    assert len(out["pts"]) == 15 and out["codec"] == "h264"
    assert out["rate"] == Fraction(30000, 1001)
    assert out["seconds"] == pytest.approx(src_video["seconds"], abs=1e-9)
    assert out["size_wh"] == (128, 48)
    assert out["audio"] == [("aac", 48000)]
    assert audio_duration_s(tmp_path / "out.mp4") == pytest.approx(
        audio_duration_s(clip), abs=0.03)
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".part"] == []


def test_video_sink_variable_frame_rate_keeps_each_timestamp(tmp_path):
    clip = make_clip(tmp_path / "vfr.mp4", 15, (64, 48), vfr=True, audio=False)
    src = FileSource(clip)
    frames = [_depth_frame(f.index, timestamp=f.timestamp, pts=f.pts) for f in src.frames()]
    _write(VideoFileSink(tmp_path / "out.mp4"), frames, src.info)
    assert read_video(tmp_path / "out.mp4")["seconds"] == pytest.approx(
        read_video(clip)["seconds"], abs=1e-9)


def test_video_sink_webm_reencodes_audio_to_opus_and_mkv_copies(tmp_path):
    clip = make_clip(tmp_path / "in.mp4", 10, (64, 48), audio=True)
    src = FileSource(clip)
    frames = [_depth_frame(f.index, timestamp=f.timestamp, pts=f.pts) for f in src.frames()]
    for name, vcodec, acodec in (("o.webm", "vp9", "opus"), ("o.mkv", "h264", "aac")):
        _write(VideoFileSink(tmp_path / name, audio_from=clip), frames, src.info)
        out = read_video(tmp_path / name)
        assert (out["codec"], out["audio"][0][0]) == (vcodec, acodec)
        assert len(out["pts"]) == 10 and out["rate"] == NTSC
        assert audio_duration_s(tmp_path / name) == pytest.approx(10 * 1001 / 30000, abs=0.05)


def test_video_sink_live_frames_odd_size_padded_to_even(tmp_path):
    info = VideoInfo(width=63, height=47, live=True)
    frames = [_depth_frame(i, (63, 47), timestamp=i * 0.04) for i in range(5)]
    _write(VideoFileSink(tmp_path / "live.mp4"), frames, info)
    out = read_video(tmp_path / "live.mp4")
    assert out["size_wh"] == (64, 48) and len(out["pts"]) == 5
    assert out["seconds"] == pytest.approx([i * 0.04 for i in range(5)], abs=1e-4)


def test_video_sink_without_frames_leaves_nothing(tmp_path):
    sink = VideoFileSink(tmp_path / "none.mp4")
    _write(sink, [], VideoInfo(width=64, height=48, rate=Fraction(30)))
    sink.close()  # twice: safe
    assert list(tmp_path.iterdir()) == []


def test_video_sink_close_twice_writes_trailer_once(tmp_path):
    sink = VideoFileSink(tmp_path / "o.mp4")
    _write(sink, [_depth_frame(i) for i in range(3)], VideoInfo(64, 48, rate=Fraction(30)))
    size = (tmp_path / "o.mp4").stat().st_size
    sink.close()
    assert (tmp_path / "o.mp4").stat().st_size == size
    assert len(read_video(tmp_path / "o.mp4")["pts"]) == 3


@pytest.mark.parametrize("name, message", [
    ("missing/o.mp4", "output folder does not exist"),
    ("o.avi", "cannot write video as .avi"),
    ("exists.mp4", "output exists"),
])
def test_video_sink_checks_path_at_construction(tmp_path, name, message):
    (tmp_path / "exists.mp4").write_bytes(b"keep me")
    with pytest.raises(SinkError, match=message):
        VideoFileSink(tmp_path / name)
    assert (tmp_path / "exists.mp4").read_bytes() == b"keep me"
    VideoFileSink(tmp_path / "exists.mp4", overwrite=True)  # allowed with overwrite


# --------------------------------------------------------------------------- raw depth


@pytest.mark.parametrize("fmt", [RawFormat.PNG, RawFormat.NPY])
def test_raw_depth_sink_png16_csv_and_npy(tmp_path, fmt):
    frames = [_depth_frame(i, timestamp=i * 1001 / 30000) for i in range(3)]
    _write(RawDepthSink(tmp_path / "raw", fmt), frames, VideoInfo(64, 48))
    rows = list(csv.DictReader(open(tmp_path / "raw" / "timestamps.csv")))
    assert [int(r["index"]) for r in rows] == [0, 1, 2]
    for f, row in zip(frames, rows):
        assert float(row["seconds"]) == f.timestamp
        assert (float(row["lo"]), float(row["hi"])) == (f.lo, f.hi)
        png = cv2.imread(str(tmp_path / "raw" / f"depth_{f.index:06d}.png"), cv2.IMREAD_UNCHANGED)
        assert png.dtype == np.uint16
        assert np.array_equal(png, depth_to_u16(f.depth, f.lo, f.hi))
        npy = tmp_path / "raw" / f"depth_{f.index:06d}.npy"
        assert npy.exists() == (fmt is RawFormat.NPY)
        if npy.exists():
            assert np.array_equal(np.load(npy), f.depth)


def test_raw_depth_sink_refuses_existing_and_cleans_up_when_empty(tmp_path):
    _write(RawDepthSink(tmp_path / "raw"), [_depth_frame(0)], VideoInfo(64, 48))
    with pytest.raises(SinkError, match="output exists"):
        RawDepthSink(tmp_path / "raw")
    RawDepthSink(tmp_path / "raw", overwrite=True)
    with pytest.raises(SinkError, match="does not exist"):
        RawDepthSink(tmp_path / "missing" / "raw")
    _write(RawDepthSink(tmp_path / "empty"), [], VideoInfo(64, 48))
    assert not (tmp_path / "empty").exists()


def test_callback_sink():
    got = []
    _write(CallbackSink(got.append), [_depth_frame(i) for i in range(2)], VideoInfo(64, 48))
    assert [f.index for f in got] == [0, 1]


# --------------------------------------------------------------------------- window


def test_check_display_without_display_suggests_out_or_no_window(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.setattr("sys.platform", "linux")
    with pytest.raises(SinkError, match="--out FILE.*--no-window"):
        check_display()


def test_check_display_with_dead_display(monkeypatch):
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.setattr("sys.platform", "linux")
    with socket.socket() as s:  # a TCP display number nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    if port < 6000:
        pytest.skip("ephemeral port below the X range")
    monkeypatch.setenv("DISPLAY", f"127.0.0.1:{port - 6000}")
    with pytest.raises(SinkError, match="no X display answers"):
        check_display()
