"""Disk and permission errors: one line and exit 2, found before the work starts.

A full disk leaves no temporaries, and a CSV for every raw frame written; a video it
cuts short is ended where it is and kept beside its path (``out.partial.mp4``), playable.

Tests run as root in CI, where file permissions do not stop writes: a read-only folder
is then a read-only tmpfs mounted for the test, and a full disk a small tmpfs. Without
root, ``chmod`` makes the read-only folder and the full-disk test is skipped; where
neither works (root without the right to mount) the tests skip.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from support.clips import make_clip, mux_frames, pattern, read_video

from stream.cli import main


@contextlib.contextmanager
def _tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at ``path`` for the block (root only), unmounted after."""
    path.mkdir(exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder this process cannot write in, whoever runs the tests."""
    folder = tmp_path / "read_only"
    if os.geteuid() == 0:
        with _tmpfs(folder, "ro,size=64k,mode=0755"):
            yield folder
        return
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("this user can write in a 0555 folder")
        yield folder
    finally:
        folder.chmod(0o755)


def _one_line_error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("depthstream: error: ")
    return lines[0]


@pytest.mark.parametrize("what", ["video", "raw", "stats", "image", "image folder"])
def test_a_read_only_output_folder_is_exit_2_naming_it_before_any_work(
        tmp_path, read_only_folder, no_model, capsys, what):
    clip = make_clip(tmp_path / "in.mp4", 3, (64, 48), audio=False)
    picture = tmp_path / "pic.png"
    assert cv2.imwrite(str(picture), pattern(0, (64, 48)))
    argv = {
        "video": ["convert", str(clip), "-o", str(read_only_folder / "out.mp4")],
        "raw": ["convert", str(clip), "--raw", str(read_only_folder / "raw")],
        "stats": ["convert", str(clip), "-o", str(tmp_path / "out.mp4"),
                  "--stats", str(read_only_folder / "stats.json")],
        "image": ["image", str(picture), "-o", str(read_only_folder / "depth.png")],
        "image folder": ["image", str(picture), "-o", str(read_only_folder / "new")],
    }[what]

    assert main(argv) == 2

    line = _one_line_error(capsys)
    assert str(read_only_folder) in line
    assert "read-only" in line.lower() or "permission denied" in line.lower()
    assert list(read_only_folder.iterdir()) == []
    assert not (tmp_path / "out.mp4").exists()  # nothing started before the check


def test_stats_in_a_missing_folder_is_found_before_the_conversion(tmp_path, no_model, capsys):
    clip = make_clip(tmp_path / "in.mp4", 3, (64, 48), audio=False)
    assert main(["convert", str(clip), "-o", str(tmp_path / "out.mp4"),
                 "--stats", str(tmp_path / "missing" / "stats.json")]) == 2
    assert "output folder does not exist" in _one_line_error(capsys)
    assert not (tmp_path / "out.mp4").exists()


def test_raw_export_on_a_full_disk_keeps_a_csv_of_the_frames_written(tmp_path, cheap, capsys):
    clip = make_clip(tmp_path / "in.mp4", 120, (64, 48), audio=False)
    with _tmpfs(tmp_path / "small", "size=160k") as disk:
        raw = disk / "raw"
        rc = main(["convert", str(clip), "--raw", str(raw), "--raw-format", "npy",
                   "--no-progress", "--no-smooth"])

        line = _one_line_error(capsys)
        assert rc == 2
        assert "No space left on device" in line
        everything = [p.name for p in disk.rglob("*")]
        assert not [n for n in everything if ".part" in n], everything
        rows = list(csv.DictReader((raw / "timestamps.csv").open()))
        assert 0 < len(rows) < 120
        files = sorted(p.name for p in raw.iterdir() if p.name != "timestamps.csv")
        # exactly the frames in the CSV, each with both files, each whole
        assert files == sorted(f"depth_{int(r['index']):06d}{ext}" for r in rows
                               for ext in (".npy", ".png"))
        for row in rows:
            stem = raw / f"depth_{int(row['index']):06d}"
            depth = np.load(stem.with_suffix(".npy"))
            u16 = cv2.imread(str(stem.with_suffix(".png")), cv2.IMREAD_UNCHANGED)
            assert depth.shape == u16.shape == (48, 64)
            assert (float(row["lo"]), float(row["hi"])) == (depth.min(), depth.max())


def _noise_clip(path: Path, frames: int, size_wh: tuple[int, int] = (160, 120)) -> Path:
    """A video of random pictures (with sound): its depth video barely compresses."""
    make_clip(path.with_name("tone.mp4"), frames, size_wh, audio=True)
    rng = np.random.default_rng(0)
    with av.open(str(path.with_name("tone.mp4"))) as tone, av.open(str(path), "w") as out:
        video = out.add_stream("ffv1", rate=30)
        video.width, video.height, video.pix_fmt = *size_wh, "bgr0"
        sound = out.add_stream_from_template(tone.streams.audio[0])
        for packet in tone.demux(tone.streams.audio[0]):
            if packet.dts is not None:
                packet.stream = sound
                out.mux(packet)
        mux_frames(out, video, (rng.integers(0, 256, (size_wh[1], size_wh[0], 3), np.uint8)
                                for _ in range(frames)))
    return path


def _decodes(path: Path) -> dict[str, int]:
    frames = {"audio": 0, "video": 0}
    with av.open(str(path)) as container:
        for packet in container.demux():
            frames[packet.stream.type] += len(packet.decode())
    return frames


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".webm"])
def test_a_full_disk_keeps_the_video_written_so_far_playable(tmp_path, cheap, capsys, suffix):
    clip = _noise_clip(tmp_path / "noise.mkv", 90)
    with _tmpfs(tmp_path / "small", "size=3m") as disk:
        out = disk / f"out{suffix}"
        rc = main(["convert", str(clip), "-o", str(out), "--layout", "side", "--crf", "4",
                   "--no-progress"])

        line = _one_line_error(capsys)
        assert rc == 2
        kept = disk / f"out.partial{suffix}"
        match = re.fullmatch(rf"depthstream: error: cannot write frame (\d+) to {out}: the "
                             rf"disk is full; the (\d+) frames written were kept in {kept}", line)
        assert match, line
        assert sorted(p.name for p in disk.iterdir()) == [kept.name]  # no temporary left
        frames = _decodes(kept)  # plays: every packet decodes
        assert frames["video"] == int(match[2]) and 5 < frames["video"] < 90
        assert frames["audio"] > 0
        assert read_video(kept)["size_wh"] == (320, 120)


def test_a_full_disk_in_raw_export_also_keeps_the_video(tmp_path, cheap, capsys):
    clip = _noise_clip(tmp_path / "noise.mkv", 90)
    with _tmpfs(tmp_path / "small", "size=3m") as disk:
        out, raw = disk / "out.mp4", disk / "raw"
        rc = main(["convert", str(clip), "-o", str(out), "--raw", str(raw), "--raw-format",
                   "npy", "--no-progress", "--no-smooth"])

        line = _one_line_error(capsys)
        assert rc == 2
        kept = disk / "out.partial.mp4"
        match = re.fullmatch(rf"depthstream: error: cannot write .*: No space left on device; "
                             rf"the (\d+) frames written were kept in {kept}", line)
        assert match, line
        assert _decodes(kept)["video"] == int(match[1]) > 0
        rows = list(csv.DictReader((raw / "timestamps.csv").open()))
        assert int(match[1]) <= len(rows) + 1
        assert not out.exists() and not [p for p in disk.rglob("*.part")]
