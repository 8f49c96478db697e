"""Tests for the video sink's encoder options (codec, CRF, preset) and their settings.

Each output is opened again with PyAV to see what a player sees: the codec, the pixel
format, the encoder's own record of its options (x264 and x265 write them into the
stream), the size.
"""

from __future__ import annotations

import errno
import re
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from support.clips import make_clip, read_video

from stream.cli import main
from stream.core.errors import ConfigError, SinkError
from stream.core.files import OutputTaken
from stream.core.records import DepthFrame, VideoInfo
from stream.core.settings import (
    CODEC_DEFAULTS,
    CONTAINER_CODECS,
    PRESET_NAMES,
    EncoderSettings,
    StreamSettings,
    VideoCodec,
)
from stream.depth.render import Renderer
from stream.sinks.base import SinkContext
from stream.sinks.video import VIDEO_FORMATS, VideoFileSink

INFO = VideoInfo(96, 64, Fraction(30), time_base=Fraction(1, 30))


def _frames(count: int = 30) -> list[DepthFrame]:
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, 96, dtype=np.float32)[None, :] * np.ones((64, 1), np.float32)
    frames = []
    for i in range(count):
        image = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
        depth = (ramp + np.float32(0.02 * i) + rng.normal(0, 0.08, ramp.shape)).astype(
            np.float32)
        frames.append(DepthFrame(i, i / 30, image, depth, 1.0, lo=0.0, hi=1.6, pts=i))
    return frames


def _encode(path: Path, encoder: EncoderSettings | None = None,
            renderer: Renderer | None = None, count: int = 30) -> VideoFileSink:
    sink = VideoFileSink(path, renderer, encoder=encoder)
    sink.open(SinkContext(INFO))
    for frame in _frames(count):
        sink.write(frame)
    sink.close()
    return sink


def _stream_text(path: Path) -> bytes:
    """The file's first bytes: x264 and x265 write their settings there, as text."""
    return path.read_bytes()[:200_000]


def test_every_container_has_its_codecs():
    assert set(CONTAINER_CODECS) == set(VIDEO_FORMATS)
    assert set(CODEC_DEFAULTS) == set(VideoCodec)
    for codec, (crf, preset) in CODEC_DEFAULTS.items():
        EncoderSettings(codec, crf, preset)  # the defaults pass their own checks


@pytest.mark.parametrize("name, codec, codec_name, pix_fmt", [
    ("a.mp4", None, "h264", "yuv420p"),
    ("b.mkv", None, "h264", "yuv420p"),
    ("c.webm", None, "vp9", "yuv420p"),
    ("d.mp4", "hevc", "hevc", "yuv420p"),
    ("e.mkv", "hevc", "hevc", "yuv420p"),
    ("f.mp4", "vp9", "vp9", "yuv420p"),
    ("g.mkv", "ffv1", "ffv1", "bgr0"),
])
def test_codec_per_container(tmp_path, name, codec, codec_name, pix_fmt, capfd):
    sink = _encode(tmp_path / name, EncoderSettings(codec=codec))
    video = read_video(tmp_path / name)
    assert video["codec"] == codec_name and len(video["images"]) == 30
    with av.open(str(tmp_path / name)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.pix_fmt == pix_fmt
        if name == "d.mp4":
            assert stream.codec_tag == "hvc1"  # what Apple's players need for HEVC in MP4
    assert sink.size_bytes == (tmp_path / name).stat().st_size
    assert sink.duration_s == pytest.approx(1.0)
    assert sink.bitrate_kbps == pytest.approx(sink.size_bytes * 8 / 1000)
    assert capfd.readouterr().err == ""  # x265 keeps its settings to itself


def test_ffv1_is_lossless(tmp_path):
    renderer = Renderer(layout="side")
    _encode(tmp_path / "out.mkv", EncoderSettings(codec="ffv1"), renderer, count=5)
    decoded = read_video(tmp_path / "out.mkv")["images"]
    for frame, image in zip(_frames(5), decoded):
        np.testing.assert_array_equal(image, renderer.render(frame))


@pytest.mark.parametrize("preset, subme", [("ultrafast", 0), ("superfast", 1),
                                           ("veryfast", 2), ("medium", 7)])
def test_x264_gets_the_crf_and_preset(tmp_path, preset, subme):
    _encode(tmp_path / "out.mp4", EncoderSettings(crf=31, preset=preset), count=3)
    text = _stream_text(tmp_path / "out.mp4")
    assert b"crf=31.0" in text
    assert re.search(rb"subme=(\d+)", text).group(1) == str(subme).encode()


def test_default_h264_settings_reach_the_encoder(tmp_path):
    crf, preset = CODEC_DEFAULTS[VideoCodec.H264]
    _encode(tmp_path / "out.mp4", count=3)
    text = _stream_text(tmp_path / "out.mp4")
    assert f"crf={crf}.0".encode() in text
    assert preset in PRESET_NAMES


def test_h264_past_4k_is_written_without_b_frames(tmp_path, monkeypatch):
    """x264's B-frame lookahead holds gigabytes for 8K pictures: above 4K UHD it is off.

    A real 8K encode takes seconds per frame; the size limit is lowered instead.
    """
    import stream.sinks.video as video_sink

    _encode(tmp_path / "small.mp4", count=3)
    assert b"bframes=3" in _stream_text(tmp_path / "small.mp4")
    assert video_sink._BFRAMES_MAX_PIXELS == 3840 * 2160
    monkeypatch.setattr(video_sink, "_BFRAMES_MAX_PIXELS", 96 * 64 - 1)
    _encode(tmp_path / "large.mp4", count=3)
    assert b"bframes=0" in _stream_text(tmp_path / "large.mp4")
    assert len(read_video(tmp_path / "large.mp4")["images"]) == 3


@pytest.mark.parametrize("layout", ["depth", "side", "overlay"])
def test_large_frames_convert_to_i420_in_bands_as_a_whole_frame_would(tmp_path, monkeypatch,
                                                                       layout):
    import cv2

    import stream.sinks.video as video_sink

    rng = np.random.default_rng(1)
    h, w = 45, 37  # odd: the encoded size is padded to 46 x 38 (side: 74)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    depth = rng.random((h, w), dtype=np.float32)
    frame = DepthFrame(0, 0.0, image, depth, 1.0, lo=0.1, hi=0.9, pts=0)
    renderer = Renderer(layout)
    sink = VideoFileSink(tmp_path / "out.mp4", renderer)
    sink.open(SinkContext(VideoInfo(w, h, Fraction(30), time_base=Fraction(1, 30))))
    try:
        whole = sink.yuv420(frame)
        monkeypatch.setattr(video_sink, "_BAND_PIXELS", 4 * 38)  # bands of 2 or 4 rows
        banded = sink.yuv420(frame)
    finally:
        sink.close()
    rendered = renderer.render(frame)
    padded = cv2.copyMakeBorder(rendered, 0, 1, 0, rendered.shape[1] % 2, cv2.BORDER_REPLICATE)
    np.testing.assert_array_equal(whole, cv2.cvtColor(padded, cv2.COLOR_BGR2YUV_I420))
    np.testing.assert_array_equal(banded, whole)


def test_x265_gets_the_crf(tmp_path):
    _encode(tmp_path / "out.mkv", EncoderSettings("hevc", crf=33, preset="fast"), count=3)
    assert b"crf=33.0" in _stream_text(tmp_path / "out.mkv")


@pytest.mark.parametrize("codec, low, high", [("h264", 16, 36), ("hevc", 20, 40),
                                               ("vp9", 20, 55)])
def test_a_higher_crf_makes_a_smaller_file(tmp_path, codec, low, high):
    small = _encode(tmp_path / "high.mp4", EncoderSettings(codec, crf=high))
    large = _encode(tmp_path / "low.mp4", EncoderSettings(codec, crf=low))
    assert large.size_bytes > 1.5 * small.size_bytes


@pytest.mark.parametrize("suffix, kwargs, message", [
    (".mp4", {"codec": "ffv1"}, "a .mp4 file cannot hold --codec ffv1; write .mkv"),
    (".webm", {"codec": "hevc"}, "a .webm file cannot hold --codec hevc; write .mp4 or .mkv"),
    (".mp4", {"crf": 60}, "--crf 60 is out of range for h264: 0..51"),
])
def test_the_container_is_checked_at_construction(tmp_path, suffix, kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        VideoFileSink(tmp_path / f"out{suffix}", encoder=EncoderSettings(**kwargs))
    assert list(tmp_path.iterdir()) == []


def test_for_container_fills_in_the_defaults():
    assert EncoderSettings().for_container(".webm") == EncoderSettings(
        "vp9", *CODEC_DEFAULTS[VideoCodec.VP9])
    assert EncoderSettings(crf=40).for_container(".MKV") == EncoderSettings(
        "h264", 40, CODEC_DEFAULTS[VideoCodec.H264][1])
    assert EncoderSettings("ffv1").for_container(".mkv") == EncoderSettings("ffv1")


@pytest.mark.parametrize("kwargs, message", [
    ({"codec": "ffv1", "crf": 10}, "--crf does not apply to --codec ffv1"),
    ({"codec": "ffv1", "preset": "fast"}, "--preset does not apply to --codec ffv1"),
    ({"codec": "h264", "crf": 52}, "--crf 52 is out of range for h264: 0..51"),
    ({"codec": "vp9", "crf": -1}, "--crf -1 is out of range for vp9: 0..63"),
    ({"crf": 64}, "out of range for any codec: 0..63"),
    ({"crf": 2.5}, "whole number"),
    ({"crf": True}, "whole number"),
    ({"preset": "quick"}, "unknown preset 'quick'"),
    ({"codec": "av1"}, "unknown codec 'av1'"),
])
def test_encoder_settings_reject_bad_values(kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        EncoderSettings(**kwargs)
    with pytest.raises(ConfigError, match=re.escape(message)):
        StreamSettings(**kwargs)


def test_stream_settings_group_the_encoder():
    settings = StreamSettings(codec="hevc", crf=30.0, preset="fast", snapshot_dir="snaps")
    assert settings.encoder == EncoderSettings(VideoCodec.HEVC, 30, "fast")
    assert settings.codec is VideoCodec.HEVC and settings.crf == 30
    assert settings.snapshot_dir == Path("snaps")


# --------------------------------------------------------------------------- cli


def test_convert_with_encoder_options_reports_size_and_bitrate(cheap, tmp_path, capsys):
    clip = make_clip(tmp_path / "in.mp4", 30, (96, 64), audio=False)
    out = tmp_path / "out.mkv"
    assert main(["convert", str(clip), "-o", str(out), "--codec", "hevc", "--crf", "30",
                 "--preset", "fast", "--no-progress"]) == 0
    video = read_video(out)
    assert video["codec"] == "hevc" and len(video["images"]) == 30
    assert b"crf=30.0" in _stream_text(out)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    size = out.stat().st_size
    match = re.search(r"30 frames, [\d.]+ fps, ([\d.]+) MB, (\d+) kb/s$", line)
    assert match, line
    assert float(match.group(1)) == pytest.approx(size / 1e6, abs=0.051)
    assert int(match.group(2)) == pytest.approx(size * 8 / 1000 / (30 / float(video["rate"])),
                                                abs=1)


@pytest.mark.parametrize("flags, message", [
    (["-o", "{d}/o.mp4", "--codec", "ffv1"], "a .mp4 file cannot hold --codec ffv1"),
    (["-o", "{d}/o.webm", "--codec", "h264"], "a .webm file cannot hold --codec h264"),
    (["-o", "{d}/o.mkv", "--codec", "ffv1", "--crf", "5"], "--crf does not apply"),
    (["-o", "{d}/o.mkv", "--codec", "ffv1", "--preset", "slow"], "--preset does not apply"),
    (["-o", "{d}/o.mp4", "--crf", "60"], "--crf 60 is out of range for h264: 0..51"),
    (["-o", "{d}/o.webm", "--crf", "64"], "--crf 64 is out of range for any codec"),
    (["-o", "{d}/o.mp4", "--codec", "hevc", "--crf", "52"], "out of range for hevc: 0..51"),
])
def test_invalid_encoder_options_exit_2_with_one_line(no_model, tmp_path, capsys, flags,
                                                      message):
    clip = make_clip(tmp_path / "in.mp4", 3, (64, 48), audio=False)
    args = [f.format(d=tmp_path) for f in flags]
    assert main(["convert", str(clip), *args, "--no-progress"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("depthstream: error: "), lines
    assert message in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_live_checks_encoder_options_before_opening_anything(no_model, tmp_path, capsys):
    assert main(["live", "--file", str(tmp_path / "missing.mp4"), "--codec", "ffv1",
                 "--crf", "3", "--no-window"]) == 2
    assert "--crf does not apply" in capsys.readouterr().err


def _sized_frame(index: int, size_wh: tuple[int, int]) -> DepthFrame:
    width, height = size_wh
    image = np.full((height, width, 3), 200, np.uint8)
    depth = np.tile(np.linspace(0, 1, width, dtype=np.float32), (height, 1))
    return DepthFrame(index, index / 30, image, depth, 1.0, lo=0.0, hi=1.0, pts=index)


@pytest.mark.parametrize("codec", [None, "ffv1"])
def test_frames_of_another_size_are_scaled_to_fit_the_first(tmp_path, codec):
    path = tmp_path / "mixed.mkv"
    warnings: list[str] = []
    sink = VideoFileSink(path, warnings=warnings,
                         encoder=EncoderSettings(codec) if codec else None)
    sink.open(SinkContext(INFO))  # 96x64
    sizes = [(96, 64)] * 3 + [(48, 64)] * 2 + [(192, 64)] * 2 + [(96, 64)]
    for index, size in enumerate(sizes):
        sink.write(_sized_frame(index, size))
    sink.close()

    video = read_video(path)
    assert video["size_wh"] == (96, 64) and len(video["images"]) == len(sizes)
    assert warnings == [f"{path}: the input's frame size changes (96x64, then 48x64 from "
                        "frame 3): 4 frames were scaled to fit 96x64"]
    narrow, wide = video["images"][3], video["images"][5]
    # kept in shape: the narrow frame has black bars left and right, the wide one above
    # and below; the picture fills the middle
    assert narrow[:, :20].max() < 30 and narrow[:, -20:].max() < 30
    assert narrow[:, 30:66].mean() > 60
    assert wide[:12].max() < 30 and wide[-12:].max() < 30 and wide[20:44].mean() > 60
    full = video["images"][7]
    assert full[:, :20].mean() > 10  # a frame of the first size fills the picture


def test_no_warning_when_the_size_holds(tmp_path):
    warnings: list[str] = []
    sink = VideoFileSink(tmp_path / "same.mp4", warnings=warnings)
    sink.open(SinkContext(INFO))
    for index in range(3):
        sink.write(_sized_frame(index, (96, 64)))
    sink.close()
    assert warnings == []


def _written(path: Path, count: int = 8, overwrite: bool = False) -> VideoFileSink:
    sink = VideoFileSink(path, overwrite=overwrite)
    sink.open(SinkContext(INFO))
    for frame in _frames(count):
        sink.write(frame)
    return sink


def test_a_file_that_appears_at_the_path_meanwhile_is_not_replaced(tmp_path):
    path = tmp_path / "out.mp4"
    sink = _written(path)
    path.write_bytes(b"another run's video")
    with pytest.raises(OutputTaken) as info:
        sink.close()
    kept = tmp_path / "out-2.mp4"
    assert str(info.value) == (f"{path} appeared while this run was writing it (another "
                               f"run?); the finished output was kept in {kept}")
    assert path.read_bytes() == b"another run's video"
    assert len(read_video(kept)["pts"]) == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out-2.mp4", "out.mp4"]


def test_with_overwrite_the_finished_video_replaces_the_file(tmp_path):
    path = tmp_path / "out.mp4"
    path.write_bytes(b"old")
    sink = _written(path, overwrite=True)
    sink.close()
    assert len(read_video(path)["pts"]) == 8


def test_abort_after_a_failure_leaves_nothing(tmp_path):
    path = tmp_path / "out.mkv"
    sink = _written(path)
    assert sink.abort(RuntimeError("the network failed")) is None
    sink.close()  # nothing left to do
    assert list(tmp_path.iterdir()) == []


def test_abort_after_a_full_disk_keeps_the_frames_beside_the_path(tmp_path):
    path = tmp_path / "out.mp4"
    sink = _written(path, count=12)
    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError as full:
        error = SinkError("cannot write raw depth: No space left on device")
        error.__cause__ = full
    note = sink.abort(error)
    kept = tmp_path / "out.partial.mp4"
    frames = len(read_video(kept)["pts"])
    assert note == f"the {frames} frames written were kept in {kept}"
    assert 0 < frames <= 12  # those the encoder had given out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.partial.mp4"]
