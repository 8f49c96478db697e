"""The engine's local Ray instance: always a new one, whatever Ray's temporary folder says.

Runs ``batch`` in a child process whose Ray temporary folder (``RAY_TMPDIR``) is a fresh
folder of the test's, never the machine's; the Ray processes the child starts end with it
(any left over are stopped by pid).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.clips import make_clip

from batch.test_batch import ROOT, _cli_env, _default_signals

pytest.importorskip("ray")


@pytest.fixture
def ray_tmp() -> Iterator[Path]:
    """A short folder for Ray's temporary files (its socket paths must stay short)."""
    folder = Path(tempfile.mkdtemp(prefix="dsray"))
    try:
        yield folder
    finally:
        for pid in _processes_using(folder):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass  # already gone
        shutil.rmtree(folder, ignore_errors=True)


def _processes_using(folder: Path) -> list[int]:
    """Processes whose command line names ``folder`` (the Ray instance started there)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if str(folder).encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:
                continue
    return found


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_batch_starts_its_own_ray_despite_a_stale_cluster_file(ray_tmp: Path,
                                                               tmp_path: Path) -> None:
    (ray_tmp / "ray").mkdir()
    stale = ray_tmp / "ray" / "ray_current_cluster"
    stale.write_text(f"127.0.0.1:{_closed_port()}")  # a `ray start` killed, not stopped
    clip = make_clip(tmp_path / "a.mp4", 4, audio=False)
    result = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "batch", str(clip), "-o", str(tmp_path / "out"),
         "--workers", "1", "--cpus-per-worker", "1", "--no-progress"],
        env=_cli_env(RAY_TMPDIR=str(ray_tmp)), capture_output=True, text=True, timeout=300,
        preexec_fn=_default_signals)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "out" / "a.mp4").is_file()
    assert list((ray_tmp / "ray").glob("session_*")), "Ray used another temporary folder"
    assert stale.read_text().startswith("127.0.0.1:")  # not Ray's to remove, nor ours
    assert not _processes_using(ray_tmp)  # the instance ended with its driver
