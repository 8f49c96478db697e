"""Rotated phone videos: the display rotation is applied to decoded frames, outputs are upright.

Each test makes its own rotated clip with PyAV: the display matrix a phone writes
(``VideoStream.set_display_rotation``, counter-clockwise degrees, as FFmpeg's
``av_display_rotation_get`` reports them) or the ``rotate`` tag older files carry
(clockwise degrees). The stored frames are :func:`support.clips.pattern` frames, so the
upright picture is known: the stored frame turned as a player would show it.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from support.clips import mux_frames, pattern, read_video

from stream.cli import main
from stream.sources.capture import FileSource

STORED_WH = (64, 48)  # landscape as stored; 90 and 270 show it portrait
_TURN = {0: None, 90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180,
         270: cv2.ROTATE_90_COUNTERCLOCKWISE}


def _upright(image: np.ndarray, clockwise: int) -> np.ndarray:
    return image if clockwise == 0 else cv2.rotate(image, _TURN[clockwise])


def make_rotated_clip(path: Path, clockwise: int, frames: int = 6, how: str = "matrix",
                      audio: bool = False) -> Path:
    """A clip whose frames must be turned ``clockwise`` degrees to be shown upright.

    Args:
        path: the clip to write.
        clockwise: 0, 90, 180 or 270.
        frames: number of :func:`support.clips.pattern` frames.
        how: ``matrix`` (display-matrix side data, as phones write it) or ``tag`` (the
            stream's ``rotate`` metadata, kept by Matroska).
        audio: add a silent AAC track.
    """
    width, height = STORED_WH
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv444p"
        stream.options = {"preset": "ultrafast", "qp": "0"}
        if how == "matrix":
            stream.set_display_rotation(-clockwise)  # PyAV takes counter-clockwise degrees
        else:
            stream.metadata["rotate"] = str(clockwise)
        sound = None
        if audio:
            sound = container.add_stream("aac", rate=48000)
            sound.layout = "mono"
        mux_frames(container, stream, (pattern(index, STORED_WH) for index in range(frames)))
        if sound is not None:
            samples = np.zeros((1, 1024), np.float32)
            for n in range(frames * 48000 // 25 // 1024 + 1):
                chunk = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = 48000, n * 1024
                for packet in sound.encode(chunk):
                    container.mux(packet)
            for packet in sound.encode():
                container.mux(packet)
    return path


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    """Same picture up to colour conversion (the clips are lossless 4:4:4 H.264)."""
    return a.shape == b.shape and float(np.abs(a.astype(int) - b).mean()) < 8


@pytest.mark.parametrize("clockwise", [0, 90, 180, 270])
@pytest.mark.parametrize("how, suffix", [("matrix", ".mp4"), ("matrix", ".mkv"),
                                         ("tag", ".mkv")])
def test_file_source_turns_frames_upright(tmp_path, clockwise, how, suffix):
    clip = make_rotated_clip(tmp_path / f"r{suffix}", clockwise, how=how)
    with av.open(str(clip)) as container:  # the clip really is stored sideways
        stored = next(container.decode(video=0)).to_ndarray(format="bgr24")
    assert stored.shape[:2] == STORED_WH[::-1]

    src = FileSource(clip)
    frames = list(src.frames())

    assert src.rotation == clockwise
    width, height = STORED_WH if clockwise in (0, 180) else STORED_WH[::-1]
    assert src.info.size_wh == (width, height)
    assert len(frames) == 6
    for frame in frames:
        expected = _upright(pattern(frame.index, STORED_WH), clockwise)
        assert _close(frame.image, expected), (frame.index, clockwise)
        if clockwise:  # and not the stored orientation
            assert not _close(frame.image, pattern(frame.index, STORED_WH))


def test_rotation_agrees_with_pyav_frame_rotation(tmp_path):
    for clockwise in (90, 180, 270):
        clip = make_rotated_clip(tmp_path / f"r{clockwise}.mp4", clockwise)
        with av.open(str(clip)) as container:
            counter_clockwise = next(container.decode(video=0)).rotation
        assert FileSource(clip).rotation == (-counter_clockwise) % 360


@pytest.mark.parametrize("clockwise", [90, 180, 270])
def test_convert_writes_an_upright_video_and_raw_depth_without_a_rotation_flag(
        tmp_path, clockwise, cheap):
    clip = make_rotated_clip(tmp_path / "phone.mp4", clockwise, audio=True)
    upright_clip = tmp_path / "upright.mp4"
    _encode(upright_clip, [_upright(pattern(i, STORED_WH), clockwise) for i in range(6)])
    outs = {}
    for name, source in (("phone", clip), ("upright", upright_clip)):
        out = tmp_path / f"{name}_side.mp4"
        assert main(["convert", str(source), "-o", str(out), "--layout", "side",
                     "--raw", str(tmp_path / f"{name}_raw"), "--no-progress",
                     "--no-smooth"]) == 0
        outs[name] = out

    width, height = STORED_WH if clockwise == 180 else STORED_WH[::-1]
    video = read_video(outs["phone"])
    assert video["size_wh"] == (2 * width, height)
    assert video["audio"] == [("aac", 48000)]
    with av.open(str(outs["phone"])) as container:
        assert next(container.decode(video=0)).rotation == 0  # upright pixels, no flag
    reference = read_video(outs["upright"])
    assert len(video["images"]) == len(reference["images"]) == 6
    for index, (got, want) in enumerate(zip(video["images"], reference["images"])):
        # the picture and its depth, as for the same clip stored upright
        assert _close(got, want), index
        # and not the stored picture merely relabelled (180 keeps the shape)
        assert not _close(got[:, :width], _upright(want[:, :width], 180)), index
    rows = list(csv.DictReader((tmp_path / "phone_raw" / "timestamps.csv").open()))
    assert len(rows) == 6
    for index in range(6):
        raw = cv2.imread(str(tmp_path / "phone_raw" / f"depth_{index:06d}.png"),
                         cv2.IMREAD_UNCHANGED)
        ref = cv2.imread(str(tmp_path / "upright_raw" / f"depth_{index:06d}.png"),
                         cv2.IMREAD_UNCHANGED)
        assert raw.shape == (height, width)
        assert np.abs(raw.astype(int) - ref).mean() < 0.05 * 65535


def test_live_file_is_upright_too(tmp_path, cheap):
    clip = make_rotated_clip(tmp_path / "phone.mkv", 90, frames=8)
    out = tmp_path / "live.mkv"  # lossless: which frames a live run keeps varies with load
    assert main(["live", "--file", str(clip), "--no-window", "-o", str(out), "--codec", "ffv1",
                 "--layout", "side", "--no-smooth"]) == 0
    video = read_video(out)
    width, height = STORED_WH[::-1]
    assert video["size_wh"] == (2 * width, height)
    assert video["images"]
    for image in video["images"]:
        # which frames a live run keeps depends on timing: match each to one of the clip's
        assert any(_close(image[:, :width], _upright(pattern(i, STORED_WH), 90))
                   for i in range(8))


def _encode(path: Path, images: list[np.ndarray]) -> Path:
    height, width = images[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv444p"
        stream.options = {"preset": "ultrafast", "qp": "0"}
        mux_frames(container, stream, images)
    return path


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg command")
@pytest.mark.parametrize("clockwise", [90, 180, 270])
def test_upright_frames_match_ffmpegs_autorotate(tmp_path, clockwise):
    """FFmpeg's own command line (autorotate on by default) shows the same upright picture."""
    clip = make_rotated_clip(tmp_path / "phone.mp4", clockwise, frames=1)
    ours = next(FileSource(clip).frames()).image
    shown = subprocess.run(["ffmpeg", "-v", "error", "-i", str(clip), "-frames:v", "1",
                            "-f", "rawvideo", "-pix_fmt", "bgr24", "-"],
                           capture_output=True, check=True, timeout=60).stdout
    assert len(shown) == ours.size
    assert _close(np.frombuffer(shown, np.uint8).reshape(ours.shape), ours)
