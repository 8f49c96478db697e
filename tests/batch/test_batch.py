"""Batch on a local Ray instance (2 CPUs, loopback only), shared by this module's tests.

Workers are separate processes: they import the cheap test double from ``tests/`` (put on
``PYTHONPATH`` before Ray starts) through :class:`BatchSettings`' estimator factory, or
the ``DEPTHSTREAM_BATCH_ESTIMATOR`` variable for the command line.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from support.clips import audio_duration_s, make_clip, read_video
from support.fakes import cheap_estimator

from batch.test_batch_plan import make_gop_clip, mean_diffs
from stream.batch import BatchSettings, run_batch
from stream.batch.options import ENV_ESTIMATOR, ENV_ESTIMATOR_KWARGS
from stream.batch.plan import MANIFEST_NAME, PARTS_NAME
from stream.batch.progress import BatchProgress
from stream.core.errors import ConfigError
from stream.core.settings import StreamSettings
from stream.runtime.builder import convert

ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
CHEAP = "support.fakes:cheap_estimator"


@pytest.fixture(scope="module")
def local_ray() -> Iterator[str]:
    """One local Ray instance (2 CPUs) for the module; workers can import ``support``.

    Ray's variables stay set afterwards (its token is read once per process); the
    ``PYTHONPATH`` the workers needed is put back.
    """
    from stream.batch import engine

    before = os.environ.get("PYTHONPATH")
    paths = [str(TESTS), str(ROOT), *filter(None, (before or "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    try:
        yield engine.start_local(num_cpus=2)
    finally:
        ray.shutdown()
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


def _default_signals() -> None:
    """Children start with default Ctrl+C/SIGTERM handling, also under a backgrounded pytest."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _cli_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)]),
           ENV_ESTIMATOR: CHEAP, **extra}
    env.pop("RAY_ADDRESS", None)
    return env


def descendants(root: int) -> list[int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        children = [p for p, parent in parents.items() if parent == pid]
        found.extend(children)
        frontier.extend(children)
    return found


def _address(hex_addr: str) -> str:
    raw = bytes.fromhex(hex_addr)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def listening(pids: list[int]) -> list[tuple[int, str]]:
    """``(pid, address)`` of every TCP socket these processes listen on (Linux /proc)."""
    owner = {}
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    owner[int(link[8:-1])] = pid
        except OSError:
            continue  # gone, or not ours to read
    found = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[9]) in owner:  # 0A: LISTEN
                found.append((owner[int(fields[9])], _address(fields[1].split(":")[0])))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_local_instance_listens_on_loopback_only(local_ray: str) -> None:
    assert local_ray.startswith("127.0.0.1:")
    sockets = listening([os.getpid(), *descendants(os.getpid())])
    assert len(sockets) >= 3, sockets  # GCS, raylet, this driver at least
    assert {addr for _, addr in sockets} <= {"127.0.0.1", "::ffff:127.0.0.1"}, sockets


def test_check_nodes_says_which_node_cannot_see_what(local_ray: str, tmp_path: Path) -> None:
    from stream.batch import engine

    found = engine.nodes()
    probe = tmp_path / "probe"
    probe.write_text("driver")
    engine.check_nodes(found, [], (str(probe), "driver"))
    with pytest.raises(ConfigError, match="node .* cannot see: /no/such/clip.mp4"):
        engine.check_nodes(found, [("/no/such/clip.mp4", 1, 1)], (str(probe), "driver"))
    with pytest.raises(ConfigError, match="not the driver's folder"):
        engine.check_nodes(found, [], (str(probe), "another machine's"))


def _tree(tmp_path: Path) -> Path:
    src = tmp_path / "in"
    (src / "sub" / "deeper").mkdir(parents=True)
    make_clip(src / "a.mp4", 12)  # sound, 30000/1001
    make_clip(src / "sub" / "b.mkv", 10, rate=Fraction(25), audio=False)
    make_clip(src / "sub" / "deeper" / "c.mp4", 14, vfr=True)  # sound, variable rate
    return src


def test_tree_mirrored_exactly_and_rerun_rewrites_nothing(local_ray: str,
                                                          tmp_path: Path) -> None:
    src, out = _tree(tmp_path), tmp_path / "out"
    batch = BatchSettings(out_dir=out, raw=True, estimator_factory=CHEAP,
                          stats_path=tmp_path / "stats.json")
    report = run_batch([src], StreamSettings(), batch, BatchProgress(enabled=False))
    assert (report.converted, report.failed) == (3, 0)
    for name in ("a", "sub/b", "sub/deeper/c"):
        source = next(src.glob(f"{name}.*"))
        reference = tmp_path / "ref" / f"{name}.mp4"
        reference.parent.mkdir(parents=True, exist_ok=True)
        convert(source, reference, StreamSettings(), estimator=cheap_estimator())
        ref, got = read_video(reference), read_video(out / f"{name}.mp4")
        assert got["pts"] == ref["pts"] and got["time_base"] == ref["time_base"]
        assert got["rate"] == ref["rate"] and got["audio"] == ref["audio"]
        assert max(mean_diffs(ref["images"], got["images"])) == 0.0
        if ref["audio"]:
            assert audio_duration_s(out / f"{name}.mp4") == audio_duration_s(reference)
        raw = out / f"{name}_raw"
        assert len(list(raw.glob("depth_*.png"))) == len(ref["pts"])
        assert (raw / "timestamps.csv").is_file()
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["totals"]["converted"] == 3 and stats["files"][0]["nodes"]
    written = {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in out.rglob("*")}
    again = run_batch([src], StreamSettings(), batch, BatchProgress(enabled=False))
    assert (again.skipped, again.converted, again.workers) == (3, 0, 0)  # Ray not even asked
    assert {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in out.rglob("*")} == written
    changed = run_batch([src], StreamSettings(layout="side"), batch,
                        BatchProgress(enabled=False))
    assert changed.converted == 3  # other settings: done again
    assert read_video(out / "a.mp4")["size_wh"] == (128, 48)


def _segmented(tmp_path: Path, frames: int = 300) -> tuple[Path, Path]:
    # A keyframe every 25 frames at 29.97 fps: the cuts fall between milliseconds.
    clip = make_gop_clip(tmp_path / "in" / "long.mp4", frames, gop=25)
    reference = tmp_path / "ref.mp4"
    convert(clip, reference, StreamSettings(), estimator=cheap_estimator())
    return clip, reference


def _assert_like_convert(output: Path, reference: Path) -> None:
    ref, got = read_video(reference), read_video(output)
    assert got["pts"] == ref["pts"] and got["rate"] == ref["rate"]
    assert got["audio"] == ref["audio"]
    assert max(mean_diffs(ref["images"], got["images"])) < 4.0  # joins included
    assert audio_duration_s(output) == pytest.approx(audio_duration_s(reference), abs=1e-3)


def test_long_clip_in_segments_equals_convert(local_ray: str, tmp_path: Path) -> None:
    clip, reference = _segmented(tmp_path)
    batch = BatchSettings(out_dir=tmp_path / "out", segment_s=2.0, workers=2,
                          cpus_per_worker=1, estimator_factory=CHEAP)
    report = run_batch([clip], StreamSettings(), batch, BatchProgress(enabled=False))
    (file,) = report.files
    assert file.status == "converted" and file.segments >= 3 and file.frames == 300
    assert report.workers == 2
    _assert_like_convert(tmp_path / "out" / "long.mp4", reference)
    assert not (tmp_path / "out" / PARTS_NAME).exists()


class _KillAWorker(BatchProgress):
    """Kills (SIGKILL) the first worker seen in the middle of a segment."""

    def __init__(self) -> None:
        super().__init__(enabled=False)
        self.killed: str | None = None

    def update(self, frames: int, files_done: int, workers: list[dict]) -> None:
        for worker in workers:
            task = worker.get("task") or ""
            if self.killed is None and "segment" in task and worker["frames"] >= 10:
                os.kill(worker["pid"], signal.SIGKILL)
                self.killed = task


def test_killed_worker_segment_is_redone(local_ray: str, tmp_path: Path) -> None:
    clip, reference = _segmented(tmp_path)
    batch = BatchSettings(out_dir=tmp_path / "out", segment_s=2.0, workers=2,
                          cpus_per_worker=1, estimator_factory=CHEAP,
                          estimator_kwargs={"delay_s": 0.02})
    killer = _KillAWorker()
    report = run_batch([clip], StreamSettings(), batch, killer)
    assert killer.killed is not None
    assert report.retried >= 1 and report.files[0].status == "converted"
    _assert_like_convert(tmp_path / "out" / "long.mp4", reference)


def _worker_processes() -> list[int]:
    pids = []
    for pid in descendants(os.getpid()):
        try:
            if b"_RayWorker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(pid)
        except OSError:
            continue
    return pids


def _wait(condition: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_kill_9_driver_then_rerun_completes(local_ray: str, tmp_path: Path) -> None:
    clip, reference = _segmented(tmp_path)
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "cli.py"), "batch", str(clip), "-o", str(out),
           "--address", local_ray, "--segment-seconds", "2", "--workers", "2",
           "--cpus-per-worker", "1", "--no-progress"]
    env = _cli_env(**{ENV_ESTIMATOR_KWARGS: json.dumps({"delay_s": 0.02})})
    with open(tmp_path / "first.log", "w") as log:
        driver = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  preexec_fn=_default_signals)
        try:
            _wait(lambda: list(out.glob(f"{PARTS_NAME}/*/*/done.json")), 120,
                  "a finished segment")
        finally:
            driver.kill()  # SIGKILL: no cleanup of any kind
            driver.wait(30)
    _wait(lambda: not _worker_processes(), 60, "Ray to end the dead driver's workers")
    assert not (out / "long.mp4").exists()
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300,
                           preexec_fn=_default_signals)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    _assert_like_convert(out / "long.mp4", reference)
    leftovers = [p for p in out.rglob("*") if p.name.endswith(".part") or PARTS_NAME in p.parts]
    assert not leftovers and not (out / PARTS_NAME).exists()
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["files"]["long.mp4"]["status"] == "done"


def test_missing_token_says_what_to_do(local_ray: str, tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "a.mp4", 3)
    env = _cli_env(HOME=str(tmp_path))
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        env.pop(name, None)
    result = subprocess.run([sys.executable, str(ROOT / "cli.py"), "batch", str(clip), "-o",
                             str(tmp_path / "out"), "--address", local_ray],
                            env=env, capture_output=True, text=True, timeout=120,
                            preexec_fn=_default_signals)
    assert result.returncode == 2, result.stderr
    assert "auth_token" in result.stderr and "RAY_AUTH_TOKEN" in result.stderr


def test_failed_file_is_reported_and_the_others_go_on(local_ray: str, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    make_clip(src / "good.mp4", 6)
    (src / "broken.mp4").write_bytes(b"not a video at all" * 100)
    report = run_batch([src], StreamSettings(),
                       BatchSettings(out_dir=tmp_path / "out", estimator_factory=CHEAP),
                       BatchProgress(enabled=False))
    status = {f.rel: (f.status, f.reason) for f in report.files}
    assert status["good.mp4"][0] == "converted" and status["broken.mp4"][0] == "failed"
    assert "broken.mp4" in (status["broken.mp4"][1] or "")
    assert not (tmp_path / "out" / "broken.mp4").exists()
    assert np.isclose(report.fps, report.frames / report.elapsed_s)


def test_a_metric_model_runs_in_batch_workers(local_ray: str, tmp_path: Path,
                                              dav2_weights_file: Path) -> None:
    # The real network in the workers (no test double): the settings carry the model, and
    # the raw export says metres.
    (tmp_path / "in").mkdir()
    make_clip(tmp_path / "in" / "a.mp4", 3, size_wh=(64, 48), audio=False)
    settings = StreamSettings(network="dav2-metric-indoor", weights=str(dav2_weights_file),
                              input_size=56, raw_format="npy")
    report = run_batch([tmp_path / "in"], settings, BatchSettings(out_dir=tmp_path / "out",
                                                                  raw=True),
                       BatchProgress(enabled=False))
    assert (report.converted, report.failed) == (1, 0)
    raw = tmp_path / "out" / "a_raw"
    assert (raw / "timestamps.csv").read_text().splitlines()[0] == \
        "index,seconds,min_m,max_m,scale"
    depths = [np.load(path) for path in sorted(raw.glob("depth_*.npy"))]
    assert len(depths) == 3
    assert all(0.0 <= float(d.min()) and float(d.max()) <= 20.0 for d in depths)
