"""Sources: video files through PyAV (every frame, pts timestamps), live capture through OpenCV."""

from __future__ import annotations

import socket
import threading
from fractions import Fraction

import numpy as np
import pytest
from support.clips import (
    NTSC,
    make_audio_only,
    make_clip,
    make_mixed_size_clip,
    pattern,
    truncate,
)
from support.mjpeg import MjpegServer

from stream.core.errors import SourceError
from stream.sources.capture import FileSource, FrameTooLarge, LiveSource, read_image


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_file_source_info_keeps_exact_rate_and_audio(tmp_path):
    clip = make_clip(tmp_path / "ntsc.mp4", 12, (64, 48), rate=NTSC, audio=True)
    with FileSource(clip) as src:
        info = src.info
    assert (info.width, info.height) == (64, 48)
    assert info.rate == Fraction(30000, 1001)
    assert info.frames == 12
    assert info.has_audio and not info.live
    assert info.time_base is not None


def test_file_source_yields_every_frame_in_order_with_pts_seconds(tmp_path):
    clip = make_clip(tmp_path / "ntsc.mp4", 12, (64, 48), audio=False)
    src = FileSource(clip)
    frames = list(src.frames())
    assert [f.index for f in frames] == list(range(12))
    # 30000/1001 fps: frame k is shown at k * 1001/30000 s, exactly from pts * time_base.
    for f in frames:
        assert f.timestamp == pytest.approx(f.index * 1001 / 30000, abs=1e-9)
        assert float(f.pts * src.info.time_base) == f.timestamp
    # The decoded pictures are the clip's frames, in order (H.264 is lossy: compare loosely).
    for f in frames:
        err = np.abs(f.image.astype(int) - pattern(f.index, (64, 48))).mean()
        assert err < 12, (f.index, err)
        assert f.image.dtype == np.uint8 and f.image.shape == (48, 64, 3)


def test_file_source_variable_frame_rate_timestamps(tmp_path):
    clip = make_clip(tmp_path / "vfr.mp4", 15, (64, 48), vfr=True, audio=False)
    frames = list(FileSource(clip).frames())
    steps = np.diff([f.timestamp for f in frames])
    assert len(frames) == 15
    assert set(np.round(steps * 90000).astype(int)) == {1500, 3000, 6000}


def test_file_source_closes_after_iteration_and_close_is_idempotent(tmp_path):
    src = FileSource(make_clip(tmp_path / "c.mp4", 3, audio=False))
    assert len(list(src.frames())) == 3
    src.close()
    src.close()


def test_file_source_stops_on_event(tmp_path):
    src = FileSource(make_clip(tmp_path / "c.mp4", 20, audio=False))
    stop = threading.Event()
    got = []
    for frame in src.frames(stop):
        got.append(frame.index)
        if frame.index == 4:
            stop.set()
    assert got == [0, 1, 2, 3, 4]
    assert src.warnings == []  # a stop is not damage


@pytest.mark.parametrize("make, message", [
    (lambda p: p, "no such file"),
    (lambda p: (p.write_bytes(b""), p)[1], "is empty"),
    (lambda p: (p.write_text("just some text\n"), p)[1], "cannot read"),
    (lambda p: make_audio_only(p.with_suffix(".m4a")), "no video stream"),
    (lambda p: truncate(make_clip(p, 30, audio=False), keep=0.6), "cannot read"),  # no moov
])
def test_file_source_bad_inputs(tmp_path, make, message):
    path = make(tmp_path / "bad.mp4")
    with pytest.raises(SourceError, match=message):
        FileSource(path)


def test_file_source_truncated_decodes_what_it_can_and_warns(tmp_path):
    clip = truncate(make_clip(tmp_path / "t.mp4", 40, audio=False, faststart=True), keep=0.6)
    src = FileSource(clip)
    frames = list(src.frames())
    assert 0 < len(frames) < 40
    assert [f.index for f in frames] == list(range(len(frames)))
    assert len(src.warnings) == 1
    assert "truncated" in src.warnings[0] and f"{len(frames)} of 40" in src.warnings[0]


def test_file_source_realtime_is_live(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", 3, audio=False)
    assert FileSource(clip, realtime=True).info.live
    assert FileSource(clip, live=True).info.live
    assert not FileSource(clip).info.live


def test_live_source_reads_mjpeg_url_with_monotonic_stamps(tmp_path):
    images = [pattern(i, (64, 48)) for i in range(5)]
    with MjpegServer(images, fps=60).start() as server:
        src = LiveSource.from_url(server.url)
        assert src.info.live and src.info.size_wh == (64, 48)
        got = []
        for frame in src.frames():
            got.append(frame)
            if len(got) == 6:
                break
    assert [f.index for f in got] == list(range(6))
    stamps = [f.timestamp for f in got]
    assert stamps[0] == 0.0 and all(b > a for a, b in zip(stamps, stamps[1:]))
    assert all(f.captured > 0 and f.pts is None for f in got)
    src.close()  # already closed by the generator: safe


def test_live_source_unreachable_url():
    with pytest.raises(SourceError, match="cannot open URL"):
        LiveSource.from_url(f"http://127.0.0.1:{_free_port()}/stream.mjpg", open_timeout_s=3)


def test_live_source_unknown_camera():
    with pytest.raises(SourceError, match="cannot open camera 97"):
        LiveSource.from_camera(97)


def test_file_source_yields_each_frame_at_its_own_size(tmp_path):
    clip = make_mixed_size_clip(tmp_path / "mixed.avi", [(4, (64, 64)), (3, (96, 80))])
    with FileSource(clip) as src:
        assert src.info.size_wh == (64, 64)  # the first frame's
        frames = list(src.frames())
    assert [f.image.shape for f in frames] == [(64, 64, 3)] * 4 + [(80, 96, 3)] * 3
    assert [f.pts for f in frames] == list(range(7))
    assert src.warnings == []
    assert np.abs(frames[5].image.astype(int) - pattern(5, (96, 80))).mean() < 8


def test_file_source_refuses_a_frame_over_its_size_limit(tmp_path):
    clip = make_mixed_size_clip(tmp_path / "mixed.mkv", [(4, (64, 64)), (3, (96, 80))])
    src = FileSource(clip, max_size_wh=(80, 400))  # more pixels allowed, not the width
    seen = []
    with pytest.raises(FrameTooLarge) as info:
        seen.extend(f.index for f in src.frames())
    assert seen == [0, 1, 2, 3]
    assert (info.value.index, info.value.size_wh, info.value.limit_wh) == (4, (96, 80),
                                                                           (80, 400))
    assert str(info.value) == f"{clip}: frame 4 is 96x80, over the limit of 80x400 pixels"


def test_file_source_limit_keeps_the_decoder_from_making_a_larger_picture(tmp_path):
    clip = make_mixed_size_clip(tmp_path / "mixed.avi", [(2, (64, 64)), (2, (640, 480))])
    src = FileSource(clip, max_size_wh=(100, 100))
    with pytest.raises(FrameTooLarge) as info:
        for _ in src.frames():
            pass
    assert info.value.index == 2 and info.value.size_wh is None  # refused before decoding
    assert "frame 2 has more pixels than the limit of 100x100 pixels" in str(info.value)
    with pytest.raises(FrameTooLarge, match="frame 0 is 64x64"):
        FileSource(clip, max_size_wh=(64, 63))  # the first frame: when it is opened


def test_file_source_limit_lets_frames_within_it_through(tmp_path):
    clip = make_mixed_size_clip(tmp_path / "mixed.avi", [(2, (64, 64)), (2, (96, 80))])
    with FileSource(clip, max_size_wh=(96, 80)) as src:
        assert [f.image.shape[:2] for f in src.frames()] == [(64, 64)] * 2 + [(80, 96)] * 2


@pytest.mark.parametrize("name", ["broken.jpg", "broken.png", "broken.TIFF"])
def test_read_image_calls_a_damaged_picture_damaged(tmp_path, name):
    bad = tmp_path / name
    bad.write_bytes(b"\xff\xd8\xff\xe0" + bytes(64))
    with pytest.raises(SourceError) as info:
        read_image(bad)
    assert str(info.value) == f"cannot read {bad}: the file is damaged or not a picture"
