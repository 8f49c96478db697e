"""stream.core.files: atomic writes with the umask's mode, stale temporaries, no input hit."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from support.clips import make_clip

from stream.cli import main
from stream.core.errors import SinkError
from stream.core.files import (
    PartFile,
    _host_tag,
    atomic_dir,
    atomic_open,
    check_not_input,
    remove_stale_parts,
    write_bytes_atomic,
    write_json_atomic,
)


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_write_takes_the_umask_mode(tmp_path, umask022):
    target = write_bytes_atomic(tmp_path / "a.bin", b"abc")
    assert target.read_bytes() == b"abc" and _mode(target) == 0o644
    os.umask(0o077)
    write_bytes_atomic(tmp_path / "b.bin", b"x")
    assert _mode(tmp_path / "b.bin") == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".part"] == []


def test_replacing_a_file_keeps_readable_mode(tmp_path, umask022):
    target = tmp_path / "out.json"
    target.write_text("{}")
    target.chmod(0o644)
    write_json_atomic(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1} and _mode(target) == 0o644


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "x.csv"
    with pytest.raises(RuntimeError), atomic_open(target, "w") as f:
        f.write("half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_part_file_commit_and_discard(tmp_path):
    part = PartFile(tmp_path / "v.mp4")
    assert part.path.exists() and part.path.name.endswith(".part")
    part.path.write_bytes(b"video")
    assert part.commit() == tmp_path / "v.mp4"
    part.discard()  # after commit: nothing happens
    assert (tmp_path / "v.mp4").read_bytes() == b"video"
    other = PartFile(tmp_path / "w.mp4")
    other.discard()
    other.discard()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]


def test_unwritable_folder_is_one_line_sink_error(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o555)
    with pytest.raises(SinkError, match="cannot write in"):
        PartFile(folder / "x.mp4")


def test_atomic_dir(tmp_path, umask022):
    with atomic_dir(tmp_path / "entry") as tmp:
        (tmp / "model.xml").write_text("<?xml")
        assert not (tmp_path / "entry").exists()
    assert (tmp_path / "entry" / "model.xml").exists() and _mode(tmp_path / "entry") == 0o755
    with pytest.raises(ValueError), atomic_dir(tmp_path / "other"):
        raise ValueError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry"]


def test_stale_parts_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    pid = int(dead.stdout)
    host = _host_tag()
    stale = tmp_path / f"out.mp4.ds{host}-{pid}-0123abcd.part"
    mine = tmp_path / f"out.mp4.ds{host}-{os.getpid()}-0123abcd.part"
    elsewhere = ("0" if host[0] != "0" else "1") + host[1:]
    other_host = tmp_path / f"out.mp4.ds{elsewhere}-{pid}-0123abcd.part"
    foreign = tmp_path / "notes.part"
    for p in (stale, mine, other_host, foreign):
        p.write_bytes(b"x")
    assert remove_stale_parts(tmp_path) == [stale]
    assert mine.exists() and foreign.exists() and other_host.exists() and not stale.exists()
    assert PartFile(tmp_path / "x.mp4").path.name.startswith(f"x.mp4.ds{host}-{os.getpid()}-")


def test_check_not_input_sees_links(tmp_path):
    src = tmp_path / "in.png"
    src.write_bytes(b"x")
    (tmp_path / "sym.png").symlink_to(src)
    os.link(src, tmp_path / "hard.png")
    for out in ("in.png", "sym.png", "hard.png", "./in.png"):
        with pytest.raises(SinkError, match="would replace the input"):
            check_not_input([tmp_path / out], [src])
    check_not_input([tmp_path / "other.png"], [src])


# --------------------------------------------------------------------------- through the CLI


def test_cli_outputs_are_0644_also_after_overwrite(tmp_path, umask022, cheap):
    clip = make_clip(tmp_path / "in.mp4", frames=4, size_wh=(64, 48))
    pic = tmp_path / "pic.png"
    import cv2
    import numpy as np

    cv2.imwrite(str(pic), np.full((24, 32, 3), 128, np.uint8))
    out = tmp_path / "out"
    out.mkdir()
    for extra in ([], ["--overwrite"]):
        assert main(["convert", str(clip), "-o", str(out / "d.mp4"), "--raw", str(out / "raw"),
                     "--stats", str(out / "s.json"), "--no-progress", *extra]) == 0
        assert main(["image", str(pic), "-o", str(out / "p.png"), "--raw", *extra]) == 0
        files = [p for p in out.rglob("*") if p.is_file()]
        assert len(files) >= 8
        assert {p.name: _mode(p) for p in files} == {p.name: 0o644 for p in files}
        if not extra:  # make the next round replace files that are 0600 now
            for p in files:
                p.chmod(0o600)


def _picture(path: Path, value: int = 128) -> Path:
    import cv2
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((24, 32, 3), value, np.uint8))
    return path


def _another_name(path: Path, how: str) -> Path:
    """``path`` itself (``same``), or a new symlink or hard link to it beside it."""
    if how == "same":
        return path
    other = path.with_name(f"{how.replace(' ', '_')}{path.suffix}")
    if how == "symlink":
        other.symlink_to(path)
    else:
        os.link(path, other)
    return other


@pytest.mark.parametrize("how", ["same", "symlink", "hard link"])
def test_image_never_writes_onto_its_input(tmp_path, cheap, capsys, how):
    pic = _picture(tmp_path / "x.png")
    before = pic.read_bytes()
    out = _another_name(pic, how)
    assert main(["image", str(pic), "-o", str(out), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "would replace the input" in err[0]
    assert "--overwrite" not in err[0]  # no advice that would destroy the picture
    assert pic.read_bytes() == before


def test_image_folder_into_itself_keeps_every_picture(tmp_path, cheap):
    pics = tmp_path / "photos"
    originals = {p: p.read_bytes() for p in (_picture(pics / "a.png", 10),
                                             _picture(pics / "b.jpg", 200))}
    for extra in ([], ["--overwrite"]):
        assert main(["image", str(pics), "-o", str(pics), "--raw", *extra]) == 0
    assert {p: p.read_bytes() for p in originals} == originals
    assert sorted(p.name for p in pics.iterdir()) == [
        "a.png", "a_depth.png", "a_depth16.npy", "a_depth16.png",
        "b.jpg", "b_depth.png", "b_depth16.npy", "b_depth16.png"]


@pytest.mark.parametrize("how", ["same", "symlink", "hard link"])
@pytest.mark.parametrize("command", ["convert", "live"])
def test_convert_and_live_never_write_onto_their_input(tmp_path, cheap, capsys, how, command):
    clip = make_clip(tmp_path / "in.mp4", frames=3, size_wh=(64, 48))
    before = clip.read_bytes()
    out = _another_name(clip, how)
    argv = (["convert", str(clip), "--no-progress"] if command == "convert"
            else ["live", "--file", str(clip), "--no-window"])
    assert main([*argv, "-o", str(out), "--overwrite"]) == 2
    assert "would replace the input" in capsys.readouterr().err
    assert clip.read_bytes() == before
