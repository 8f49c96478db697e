"""Tests for stream.engines.openvino_backend: golden outputs, ``imap``, ``submit``, its cache."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openvino
import pytest

from engines.conftest import CASES, ConvertCalled, assert_close, refuse_convert
from stream.engines.base import PerformanceHint
from stream.engines.openvino_backend import OpenVinoBackend

pytestmark = pytest.mark.usefixtures("cache_env")


def _tagged_inputs(golden: dict) -> list[tuple[str, np.ndarray]]:
    """Seven inputs of all three shapes, interleaved, each with a distinct output."""
    items = []
    for k, scale in enumerate((1.0, 0.5, -0.7)):
        for case in CASES:
            items.append((f"{case}/{k}", golden[case][0] * np.float32(scale)))
    return items[:7]


class _Counting:
    """An input iterator that records how many items were taken before each output."""

    def __init__(self, items: list) -> None:
        self.items = items
        self.taken = 0

    def __iter__(self) -> Iterator:
        for item in self.items:
            self.taken += 1
            yield item


# -- golden outputs ---------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_openvino_matches_golden(ov_backend: OpenVinoBackend, golden: dict, case: str) -> None:
    # One IR with dynamic H and W, traced at 192x256, must hold for every aspect ratio.
    x, net = golden[case]
    assert_close(ov_backend.infer(x), net)


def test_openvino_infer_does_not_keep_or_alias_buffers(
    ov_backend: OpenVinoBackend, golden: dict
) -> None:
    x, net = golden["case_4x3"]
    first = ov_backend.infer(x)
    ov_backend.infer(-x)  # same request again: the first output must be a copy
    assert_close(first, net)


# -- imap -------------------------------------------------------------------------------


@pytest.mark.parametrize("jobs", [2, 3])
def test_openvino_imap_keeps_order_with_requests_in_flight(
    ov_backend: OpenVinoBackend, golden: dict, jobs: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = _tagged_inputs(golden)
    expected = [(tag, ov_backend.infer(x)) for tag, x in items]
    source = _Counting(items)
    monkeypatch.setattr(ov_backend, "jobs", jobs)  # the shared backend: no extra compiles
    assert ov_backend.requests_in_flight() == jobs
    results = []
    taken_at_output = []
    for tag, out in ov_backend.imap(source):
        taken_at_output.append(source.taken)
        results.append((tag, out))
    assert [t for t, _ in results] == [t for t, _ in expected]
    for (_, out), (_, want) in zip(results, expected):
        assert_close(out, want)
    # The first output comes only once `jobs` inputs are running and one more is waiting.
    assert taken_at_output[0] == jobs + 1


def test_openvino_imap_default_matches_golden(ov_backend: OpenVinoBackend, golden: dict) -> None:
    results = list(ov_backend.imap((case, golden[case][0]) for case in CASES))
    assert [tag for tag, _ in results] == list(CASES)
    for case, out in results:
        assert_close(out, golden[case][1])


def test_openvino_files_keep_one_request_more_than_openvinos_optimum(
    ov_backend: OpenVinoBackend, golden: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ov_backend, "jobs", None)
    shape = tuple(golden[CASES[0]][0].shape)  # compiled already by the other tests
    optimum = ov_backend._compiled(shape, PerformanceHint.THROUGHPUT).get_property(
        "OPTIMAL_NUMBER_OF_INFER_REQUESTS")
    assert ov_backend.requests_in_flight(shape) == int(optimum) + 1


def test_openvino_live_imap_runs_one_at_a_time(
    ov_backend: OpenVinoBackend, golden: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _Counting([(case, golden[case][0]) for case in CASES])
    monkeypatch.setattr(ov_backend, "live", True)
    assert ov_backend.requests_in_flight() == 1
    for n, (tag, out) in enumerate(ov_backend.imap(source), start=1):
        assert source.taken == n
        assert_close(out, golden[tag][1])


def test_openvino_imap_closed_early_leaves_backend_usable(
    ov_backend: OpenVinoBackend, golden: dict
) -> None:
    stream = ov_backend.imap(_tagged_inputs(golden))
    tag, _ = next(stream)
    assert tag == "case_4x3/0"
    stream.close()  # requests still running must be waited for, not dropped mid-flight
    results = dict(ov_backend.imap((case, golden[case][0]) for case in CASES))
    for case in CASES:
        assert_close(results[case], golden[case][1])


def test_openvino_submit_gives_what_infer_and_predict_give(
    ov_backend: OpenVinoBackend, golden: dict
) -> None:
    from stream.engines.estimator import DepthEstimator
    from stream.models.transforms import preprocess_array, resize_depth

    assert ov_backend.submits_in_background
    for case in CASES:
        x, net = golden[case]
        job = ov_backend.submit(x)
        out = job.wait()
        assert_close(out, net)
        np.testing.assert_array_equal(out, ov_backend.infer(x))
        assert job.wait() is out  # waited once; asked again, the same copy
    first = ov_backend.submit(x).wait()
    ov_backend.submit(-x).wait()  # same request again: the first output must be a copy
    assert_close(first, net)
    estimator = DepthEstimator(ov_backend)  # not closed: the backend is the module's
    rgb = np.random.default_rng(1).integers(0, 256, (120, 200, 3), dtype=np.uint8)
    depth, ms = estimator.submit(rgb).result()
    assert depth.shape == (120, 200) and ms > 0.0
    want = resize_depth(ov_backend.infer(preprocess_array(rgb)), rgb.shape[:2])
    np.testing.assert_array_equal(depth, want)
    np.testing.assert_array_equal(estimator.predict(rgb)[0], want)


# -- the model cache --------------------------------------------------------------------


def test_second_start_reads_the_cache_without_converting(
    ov_backend: OpenVinoBackend, state_dict: dict, cache_root: Path, golden: dict,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entry = ov_backend.cache_entry.path
    assert entry.parent == cache_root / "openvino"
    assert (entry / "model.xml").is_file() and (entry / "model.bin").is_file()
    assert not list(entry.parent.glob("*.part"))  # no temporary folders left behind
    monkeypatch.setattr(openvino, "convert_model", refuse_convert)
    with OpenVinoBackend(state_dict, cache_dir=cache_root / "openvino") as backend:
        assert backend.cache_entry.path == entry
        x, net = golden["case_16x9"]
        assert_close(backend.infer(x), net)



def _copy_cache(ov_backend: OpenVinoBackend, dest: Path) -> Path:
    shutil.copytree(ov_backend.cache_entry.path, dest / ov_backend.cache_entry.path.name)
    return dest / ov_backend.cache_entry.path.name


def test_garbage_cache_xml_is_converted_again(
    ov_backend: OpenVinoBackend, state_dict: dict, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entry = _copy_cache(ov_backend, tmp_path)
    (entry / "model.xml").write_text("not a model")
    monkeypatch.setattr(openvino, "convert_model", refuse_convert)
    with pytest.raises(ConvertCalled):  # no crash on the bad file: it goes to convert
        OpenVinoBackend(state_dict, cache_dir=tmp_path)


def test_truncated_cache_bin_is_converted_again_and_replaced(
    ov_backend: OpenVinoBackend, state_dict: dict, tmp_path: Path, golden: dict,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entry = _copy_cache(ov_backend, tmp_path)
    weights = (entry / "model.bin").read_bytes()
    (entry / "model.bin").write_bytes(weights[: len(weights) // 3])
    calls = []
    real_convert = openvino.convert_model

    def counting_convert(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real_convert(*args, **kwargs)

    monkeypatch.setattr(openvino, "convert_model", counting_convert)
    with OpenVinoBackend(state_dict, cache_dir=tmp_path) as backend:
        x, net = golden["case_portrait"]
        assert_close(backend.infer(x), net)
    assert len(calls) == 1
    assert (entry / "model.bin").stat().st_size == len(weights)  # the entry was rewritten
    monkeypatch.setattr(openvino, "convert_model", refuse_convert)
    with OpenVinoBackend(state_dict, cache_dir=tmp_path) as backend:  # and reads back
        assert_close(backend.infer(x), net)

