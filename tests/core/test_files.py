"""stream.core.files: atomic writes with the umask's mode, stale temporaries, no input hit."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from support.clips import make_clip

from stream.cli import main
from stream.core import files
from stream.core.errors import SinkError
from stream.core.files import (
    OutputTaken,
    PartFile,
    ReservedFile,
    _host_tag,
    atomic_dir,
    atomic_open,
    check_not_input,
    check_output_path,
    disk_full,
    keep_beside,
    remove_stale_parts,
    rename_no_replace,
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


@pytest.mark.parametrize("how", ["renameat2", "link", "neither"])
def test_rename_no_replace_never_replaces(tmp_path, monkeypatch, how):
    if how != "renameat2":
        monkeypatch.setattr(files, "_renameat2", lambda src, dst: None)
    if how == "neither":
        def no_links(src, dst):
            raise OSError(errno.EPERM, "Operation not permitted")

        monkeypatch.setattr(os, "link", no_links)
    src, taken, free = tmp_path / "src", tmp_path / "taken", tmp_path / "free"
    src.write_bytes(b"mine")
    taken.write_bytes(b"theirs")
    assert not rename_no_replace(src, taken)
    assert taken.read_bytes() == b"theirs" and src.exists()
    assert rename_no_replace(src, free)
    assert free.read_bytes() == b"mine" and not src.exists()


def test_keep_beside_takes_the_first_free_name(tmp_path):
    target = tmp_path / "out.mp4"
    for name in ("out.mp4", "out-2.mp4", "out.partial.mp4"):
        (tmp_path / name).write_bytes(b"x")
    for expected, tag in (("out-3.mp4", ""), ("out.partial-2.mp4", "partial")):
        src = tmp_path / "src"
        src.write_bytes(b"mine")
        assert keep_beside(src, target, tag) == tmp_path / expected
        assert (tmp_path / expected).read_bytes() == b"mine"


def test_a_claimed_output_is_published_only_while_it_is_free(tmp_path):
    target = check_output_path(tmp_path / "out.json")  # claimed: it was free
    part = PartFile(target)
    part.path.write_text("mine")
    target.write_text("theirs")  # another run finished first
    with pytest.raises(OutputTaken) as info:
        part.commit()
    assert info.value.kept == tmp_path / "out-2.json" and info.value.target == target
    assert target.read_text() == "theirs" and info.value.kept.read_text() == "mine"
    # published (or given up), the claim is gone: the next writer replaces as asked
    write_json_atomic(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}


def test_overwrite_and_unclaimed_writes_replace(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    check_output_path(target, overwrite=True)
    write_json_atomic(target, {"b": 2})  # --overwrite
    assert json.loads(target.read_text()) == {"b": 2}
    part = PartFile(tmp_path / "cache.json")  # a cache entry: never claimed
    part.path.write_text("new")
    (tmp_path / "cache.json").write_text("made by another process meanwhile")
    part.commit()
    assert (tmp_path / "cache.json").read_text() == "new"
    explicit = PartFile(tmp_path / "cache.json", replace=False)
    explicit.path.write_text("newer")
    with pytest.raises(OutputTaken):
        explicit.commit()


def test_a_discarded_claim_is_forgotten(tmp_path):
    target = check_output_path(tmp_path / "v.mp4")
    PartFile(target).discard()
    target.write_text("made later, on purpose")
    write_bytes_atomic(target, b"replaced")
    assert target.read_bytes() == b"replaced"


def test_disk_full_reads_the_causes():
    full = OSError(errno.ENOSPC, "No space left on device")
    wrapped = SinkError("cannot write x: No space left on device")
    wrapped.__cause__ = full
    assert disk_full(full) and disk_full(wrapped)
    assert disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not disk_full(SinkError("cannot write x")) and not disk_full(None)
    assert not disk_full(OSError(errno.EIO, "I/O error"))


def test_a_reserved_file_ends_on_a_full_disk_with_its_reserve(tmp_path):
    disk = tmp_path / "small"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        part = PartFile(disk / "out.mp4")
        writer = ReservedFile(part.path, part.target, 256 << 10)
        assert len(list(disk.iterdir())) == 2  # the file and its reserve
        chunk = bytes(64 << 10)
        written = 0
        while not writer.disk_full:
            written += writer.write(chunk)  # never fails while the reserve lasts
        assert 700 << 10 < written <= 1 << 20
        assert writer.tell() == written and len(list(disk.iterdir())) == 1
        writer.seek(0)
        assert writer.write(b"head") == 4  # an index written back at the start
        writer.seek(0, os.SEEK_END)
        with pytest.raises(OSError) as info:
            for _ in range(8):  # the reserve is spent: the disk is full again
                writer.write(chunk)
        assert info.value.errno == errno.ENOSPC
        writer.close()
        part.discard()
        assert list(disk.iterdir()) == []
        with pytest.raises(SinkError, match="No space left on device"):
            (disk / "fill").write_bytes(bytes(900 << 10))
            ReservedFile(PartFile(disk / "x").path, disk / "x", 512 << 10)
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


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
