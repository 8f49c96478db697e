"""Retention: the data folder stays under --max-data-mb, old results go, the table is bounded."""

from __future__ import annotations

import dataclasses
import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from flask.testing import FlaskClient
from support.fakes import cheap_estimator
from support.web import png_bytes

from stream.web import DepthServer, Job, JobKind, JobSettings, JobStatus, JobStore, ServerConfig
from stream.web.retention import folder_bytes, sweep


def noisy(seed: int, size_wh: tuple[int, int] = (96, 72)) -> bytes:
    """A picture whose results do not compress away (so each job has a real size)."""
    w, h = size_wh
    return png_bytes(np.random.default_rng(seed).integers(0, 255, (h, w, 3), np.uint8))


def run_job(client: FlaskClient, data: bytes, name: str = "p.png") -> dict:
    resp = client.post("/api/jobs", data={"file": (io.BytesIO(data), name)},
                       content_type="multipart/form-data")
    assert resp.status_code in (200, 202), resp.get_json()
    job_id = resp.get_json()["id"]
    deadline = time.monotonic() + 60
    while (body := client.get(f"/api/jobs/{job_id}").get_json())["status"] in ("queued",
                                                                                "running"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert body["status"] == "done", body["error"]
    return body


def server_for(data_dir: Path, **limits: object) -> DepthServer:
    return DepthServer(ServerConfig(data_dir, **limits), cheap_estimator).start()


def test_the_data_folder_stays_under_max_data_mb(tmp_path: Path) -> None:
    probe = server_for(tmp_path / "probe")
    try:
        run_job(probe.app.test_client(), noisy(0))
        one_job = folder_bytes(probe.store.root)
    finally:
        probe.close()
    budget = int(3.5 * one_job)
    server = server_for(tmp_path / "data", max_data_bytes=budget)
    client = server.app.test_client()
    try:
        jobs = [run_job(client, noisy(seed)) for seed in range(8)]
        server.sweep(force=True)
        used = folder_bytes(server.store.root)
        print(f"\nretention: 8 jobs of {one_job / 1000:.0f} kB under a {budget / 1000:.0f} kB "
              f"budget: {used / 1000:.0f} kB kept, {len(server.store)} jobs")
        assert used <= budget
        kept = [j["id"] for j in jobs if client.get(f"/api/jobs/{j['id']}").status_code == 200]
        assert kept == [j["id"] for j in jobs[-len(kept):]]  # the least recently used went
        assert 2 <= len(kept) <= 4
        gone = jobs[0]
        assert client.get(gone["status_url"]).status_code == 404
        assert client.get(gone["results"]["result_png"]["url"]).status_code == 404
        assert not server.store.job_dir(gone["id"]).exists()
        # a download counts as a use: that job outlives newer ones
        oldest_kept = client.get(f"/api/jobs/{kept[0]}").get_json()
        assert client.get(oldest_kept["results"]["result_png"]["url"]).status_code == 200
        run_job(client, noisy(100))
        server.sweep(force=True)
        assert client.get(f"/api/jobs/{kept[0]}").status_code == 200
        assert client.get(f"/api/jobs/{kept[1]}").status_code == 404
        assert folder_bytes(server.store.root) <= budget
    finally:
        server.close()


def test_the_newest_result_is_kept_even_over_the_budget(tmp_path: Path) -> None:
    server = server_for(tmp_path, max_data_bytes=1)
    try:
        client = server.app.test_client()
        first = run_job(client, noisy(1))
        second = run_job(client, noisy(2))
        server.sweep(force=True)
        assert client.get(second["status_url"]).status_code == 200
        assert client.get(first["status_url"]).status_code == 404
    finally:
        server.close()


def make_job(store: JobStore, seed: int, status: JobStatus, used_s: float,
             size_bytes: int = 0) -> Job:
    job = Job(id=f"{seed:032x}", kind=JobKind.PICTURE, settings=JobSettings(), key=f"k{seed}",
              status=status, created_s=used_s, used_s=used_s)
    folder = store.job_dir(job.id)
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps(job.to_dict()))
    if size_bytes:
        (folder / "result.png").write_bytes(b"\0" * size_bytes)
    return job


def test_sweep_order_age_count_and_size(tmp_path: Path) -> None:
    now = 1_000_000.0
    store = JobStore(tmp_path)
    make_job(store, 1, JobStatus.DONE, now - 10 * 3600, 1000)  # too old
    make_job(store, 2, JobStatus.DONE, now - 300, 1000)
    make_job(store, 3, JobStatus.FAILED, now - 5)  # a record only: goes before results
    make_job(store, 4, JobStatus.DONE, now - 200, 1000)
    make_job(store, 5, JobStatus.RUNNING, now - 900, 5000)  # never evicted
    make_job(store, 6, JobStatus.DONE, now - 100, 1000)  # the newest result: kept
    store = JobStore(tmp_path)  # as after a restart (the running one is failed now)
    assert store.get(f"{5:032x}").status is JobStatus.FAILED
    store._jobs[f"{5:032x}"] = dataclasses.replace(store.get(f"{5:032x}"),
                                                   status=JobStatus.RUNNING)

    config = ServerConfig(tmp_path, keep_s=3600.0, max_jobs=4, max_data_bytes=10**9)
    evicted = sweep(store, config, now_s=now)
    assert evicted == [f"{1:032x}", f"{3:032x}"]  # the old one, then the failed record
    assert len(store) == 4
    config = dataclasses.replace(config, max_data_bytes=folder_bytes(tmp_path) - 1500)
    assert sweep(store, config, now_s=now) == [f"{2:032x}", f"{4:032x}"]
    assert {j.id for j in store.jobs()} == {f"{5:032x}", f"{6:032x}"}
    assert not store.job_dir(f"{2:032x}").exists()


def test_old_results_go_at_start(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    make_job(store, 7, JobStatus.DONE, time.time() - 3 * 3600, 100)
    make_job(store, 8, JobStatus.DONE, time.time() - 60, 100)
    server = DepthServer(ServerConfig(tmp_path, keep_s=3600.0), cheap_estimator)
    try:
        assert [j.id for j in server.store.jobs()] == [f"{8:032x}"]
    finally:
        server.close()


@pytest.mark.parametrize("limit", [0, -1.0, float("nan")])
def test_retention_limits_are_checked(tmp_path: Path, limit: float) -> None:
    from stream.core.errors import ConfigError

    with pytest.raises(ConfigError):
        ServerConfig(tmp_path, max_data_bytes=limit)
    with pytest.raises(ConfigError):
        ServerConfig(tmp_path, keep_s=limit)
