"""Damaged and odd inputs: what decodes is converted, what cannot is one clear line.

The damaged clips are made here: an MPEG-TS (what cameras and broadcast recorders
write) of H.264 and AAC, with the start of every fourth audio and video packet
overwritten, as a bad sector or a lossy link would.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from support.clips import make_clip, read_video

from stream.cli import main
from stream.core.errors import SourceError
from stream.sources.capture import FileSource

_TS_PACKET = 188


def damage_ts(path: Path, out: Path, kinds: tuple[str, ...] = ("audio", "video"),
              every: int = 4, skip: int = 0) -> Path:
    """Overwrite the first payload bytes of every ``every``-th packet of ``kinds`` streams.

    The bytes hit are the codec's own headers (AAC's ADTS header, H.264's first NAL
    units), right after the MPEG-TS and PES headers, so the container still demuxes.
    With ``skip`` they start that many bytes later: ``skip=7`` leaves AAC's ADTS header
    whole and scrambles the sound itself (a packet every muxer takes, no decoder).
    """
    with av.open(str(path)) as container:
        pids = {stream.id: stream.type for stream in container.streams}
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    seen = dict.fromkeys(kinds, 0)
    for at in range(0, len(data) - _TS_PACKET + 1, _TS_PACKET):
        packet = data[at:at + _TS_PACKET]
        kind = pids.get(((packet[1] & 0x1F) << 8) | packet[2])
        if kind not in seen or not packet[1] & 0x40:  # only where a PES packet starts
            continue
        seen[kind] += 1
        if seen[kind] < 3 or seen[kind] % every:
            continue
        offset = 4 + (1 + packet[4] if packet[3] & 0x20 else 0)  # TS + adaptation field
        begin = at + offset + 9 + packet[offset + 8] + skip  # + PES header
        data[begin:begin + 16] = rng.integers(0, 256, 16, np.uint8).tobytes()
    out.write_bytes(data)
    return out


@pytest.mark.parametrize("suffix, codec", [(".mp4", "aac"), (".webm", "opus")])
def test_damaged_ts_with_sound_converts_with_a_warning(tmp_path, cheap, capsys, suffix, codec):
    clip = make_clip(tmp_path / "cam.ts", 60, (64, 48), audio=True)
    bad = damage_ts(clip, tmp_path / "bad.ts")
    out = tmp_path / f"out{suffix}"

    assert main(["convert", str(bad), "-o", str(out), "--no-progress"]) == 0

    err = capsys.readouterr().err.strip().splitlines()
    audio_lines = [line for line in err if "damaged audio packet(s) skipped" in line]
    assert len(audio_lines) == 1, err
    assert audio_lines[0].startswith(f"depthstream: warning: {bad}: ")
    assert int(audio_lines[0].split(": ")[3].split()[0]) >= 5  # counted, not just noted
    assert not [line for line in err if "error" in line]
    video = read_video(out)  # plays, with its sound
    assert video["audio"] == [(codec, 48000)]
    assert 30 <= len(video["pts"]) <= 60
    assert decode_everything(out)["audio"] > 0  # and every packet of it decodes


def test_damaged_audio_alone_keeps_every_video_frame(tmp_path, cheap, capsys):
    clip = make_clip(tmp_path / "cam.ts", 40, (64, 48), audio=True)
    bad = damage_ts(clip, tmp_path / "bad.ts", kinds=("audio",))
    assert main(["convert", str(bad), "-o", str(tmp_path / "o.mp4"), "--no-progress"]) == 0
    assert "damaged audio packet(s) skipped" in capsys.readouterr().err
    assert len(read_video(tmp_path / "o.mp4")["pts"]) == 40


def decode_everything(path: Path) -> dict[str, int]:
    """Frames of each stream type, every packet of the file decoded (raises on damage)."""
    frames = {"audio": 0, "video": 0}
    with av.open(str(path)) as container:
        for packet in container.demux():
            frames[packet.stream.type] += len(packet.decode())
    return frames


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_scrambled_sound_is_never_copied_into_the_output(tmp_path, cheap, capsys, suffix):
    """AAC packets whose header holds and whose sound is scrambled: muxers take them."""
    clip = make_clip(tmp_path / "cam.ts", 60, (64, 48), audio=True)
    bad = damage_ts(clip, tmp_path / "bad.ts", kinds=("audio",), skip=7)
    with av.open(str(bad)) as container, pytest.raises(av.InvalidDataError):
        for packet in container.demux(audio=0):  # the input's sound does not all decode
            packet.decode()
    out = tmp_path / f"out{suffix}"

    assert main(["convert", str(bad), "-o", str(out), "--no-progress"]) == 0

    frames = decode_everything(out)  # every audio and video packet decodes
    assert frames["video"] == 60 and frames["audio"] > 40
    assert read_video(out)["audio"] == [("aac", 48000)]  # copied, not re-encoded
    err = capsys.readouterr().err.strip().splitlines()
    skipped = [line for line in err if "damaged audio packet(s) skipped" in line]
    assert len(skipped) == 1 and int(skipped[0].split(": ")[3].split()[0]) >= 10, err


def test_an_undamaged_ts_has_no_warning(tmp_path, cheap, capsys):
    clip = make_clip(tmp_path / "cam.ts", 20, (64, 48), audio=True)
    assert main(["convert", str(clip), "-o", str(tmp_path / "o.mp4"), "--no-progress"]) == 0
    assert "warning" not in capsys.readouterr().err


_SVG = ('<svg xmlns="http://www.w3.org/2000/svg" width="64" height="48">'
        '<rect width="64" height="48" fill="red"/></svg>\n')


def test_a_file_that_demuxes_without_a_picture_size_is_not_a_video(tmp_path):
    svg = tmp_path / "logo.svg"
    svg.write_text(_SVG)
    with av.open(str(svg)) as container:  # FFmpeg does demux it: a video stream...
        assert container.streams.video
    with pytest.raises(SourceError, match="is not a video"):
        FileSource(svg)


def test_convert_of_an_svg_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr("stream.engines.estimator.create_estimator", no_model)
    svg = tmp_path / "logo.svg"
    svg.write_text(_SVG)
    assert main(["convert", str(svg), "-o", str(tmp_path / "o.mp4")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("depthstream: error: ")
    assert "not a video" in err[0]
    assert list(tmp_path.iterdir()) == [svg]


def test_a_video_of_which_no_frame_decodes_fails_when_opened(tmp_path):
    clip = make_clip(tmp_path / "cam.ts", 10, (64, 48), audio=False)
    bad = damage_ts(clip, tmp_path / "bad.ts", kinds=("video",), every=1)
    data = bytearray(bad.read_bytes())
    # every video payload byte: nothing of the picture is left
    with av.open(str(clip)) as container:
        pid = container.streams.video[0].id
    for at in range(0, len(data), _TS_PACKET):
        if ((data[at + 1] & 0x1F) << 8) | data[at + 2] == pid:
            data[at + 4:at + _TS_PACKET] = bytes(_TS_PACKET - 4)
    bad.write_bytes(data)
    with pytest.raises(SourceError, match="decodes|not a video|no video"):
        FileSource(bad)
