"""Batch on two simulated Ray nodes (``ray.cluster_utils.Cluster``, loopback only).

Runs after ``test_batch.py`` has stopped its local instance: one process drives one Ray
at a time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.clips import make_clip

from batch.test_batch import descendants, listening
from stream.batch import BatchSettings, run_batch
from stream.batch.progress import BatchProgress
from stream.core.settings import StreamSettings

ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[2]
NODE = {"num_cpus": 1, "object_store_memory": 128 * 2**20}


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[list[str]]:
    """A head and a worker node of one CPU each; this process is the driver."""
    from ray.cluster_utils import Cluster

    from stream.batch import engine

    before = os.environ.get("PYTHONPATH")
    paths = [str(ROOT / "tests"), *filter(None, (before or "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    engine.local_env()
    cluster = Cluster(initialize_head=True,
                      head_node_args={**NODE, "include_dashboard": False})
    try:
        cluster.add_node(**NODE)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, logging_level="WARNING")
        yield [n.node_id for n in engine.nodes()]
    finally:
        ray.shutdown()
        cluster.shutdown()
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


def test_two_nodes_share_the_work(two_nodes: list[str], tmp_path: Path) -> None:
    assert len(two_nodes) == 2
    src = tmp_path / "in"
    src.mkdir()
    for number in range(6):
        make_clip(src / f"clip{number}.mp4", 20, audio=False)
    batch = BatchSettings(out_dir=tmp_path / "out", workers=2, cpus_per_worker=1,
                          estimator_factory="support.fakes:cheap_estimator",
                          estimator_kwargs={"delay_s": 0.05})
    report = run_batch([src], StreamSettings(), batch, BatchProgress(enabled=False))
    assert report.converted == 6 and len(report.nodes) == 2
    used = {node for f in report.files for node in f.node_ids}
    assert used == set(two_nodes)
    assert all(len(f.node_ids) == 1 for f in report.files)
    sockets = listening([os.getpid(), *descendants(os.getpid())])
    assert sockets and {a for _, a in sockets} <= {"127.0.0.1", "::ffff:127.0.0.1"}, sockets
