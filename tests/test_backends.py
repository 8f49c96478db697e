"""Tests for stream.backends: golden outputs, in-order ``imap``, the OpenVINO cache, selection."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openvino
import pytest
import torch

from stream import model_cache
from stream.backends import (
    ENV_CACHE,
    OpenVinoBackend,
    PerformanceHint,
    TorchBackend,
    create_backend,
    default_cache_dir,
)
from stream.errors import ConfigError, StreamError

DATA = Path(__file__).parent / "data"
CASES = ("case_4x3", "case_16x9", "case_portrait")  # 192x256, 128x256, 256x192


class _ConvertCalled(Exception):
    """Raised by a stand-in ``openvino.convert_model``: proves a conversion was attempted."""


def _refuse_convert(*args: object, **kwargs: object) -> None:
    raise _ConvertCalled


def assert_close(out: np.ndarray, golden: np.ndarray) -> None:
    """The issue's tolerance: ``max|out - golden| <= 1e-4 * max|golden|``."""
    assert out.shape == golden.shape
    assert out.dtype == np.float32
    err = float(np.abs(out - golden).max())
    assert err <= 1e-4 * float(np.abs(golden).max()), err


@pytest.fixture(scope="module")
def golden() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{case: (input [1, 3, h, w], net [h, w])}`` from the golden files."""
    out = {}
    for case in CASES:
        with np.load(DATA / f"{case}.npz") as d:
            out[case] = (d["input"], d["net"][0])
    return out


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``$DEPTHSTREAM_CACHE`` for this module; OpenVINO models go in ``<root>/openvino``."""
    return tmp_path_factory.mktemp("depthstream_cache")


@pytest.fixture(autouse=True)
def _cache_env(monkeypatch: pytest.MonkeyPatch, cache_root: Path) -> None:
    monkeypatch.setenv(ENV_CACHE, str(cache_root))


@pytest.fixture(scope="module")
def torch_backend(state_dict: dict) -> Iterator[TorchBackend]:
    with TorchBackend(state_dict) as backend:
        yield backend


@pytest.fixture(scope="module")
def ov_backend(state_dict: dict, cache_root: Path) -> Iterator[OpenVinoBackend]:
    """The one real conversion most tests share (it fills ``cache_root``)."""
    with OpenVinoBackend(state_dict, cache_dir=cache_root / "openvino") as backend:
        yield backend


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
def test_torch_matches_golden(torch_backend: TorchBackend, golden: dict, case: str) -> None:
    x, net = golden[case]
    assert_close(torch_backend.infer(x), net)


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


def test_torch_imap_keeps_order_and_tags(torch_backend: TorchBackend, golden: dict) -> None:
    items = [(("frame", n), golden[case][0]) for n, case in enumerate(CASES)]
    results = list(torch_backend.imap(items))
    assert [tag for tag, _ in results] == [("frame", n) for n in range(len(CASES))]
    for (_, out), case in zip(results, CASES):
        assert_close(out, golden[case][1])


# -- the OpenVINO cache -----------------------------------------------------------------


def test_second_start_reads_the_cache_without_converting(
    ov_backend: OpenVinoBackend, state_dict: dict, cache_root: Path, golden: dict,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entry = ov_backend.cache_entry.path
    assert entry.parent == cache_root / "openvino"
    assert (entry / "model.xml").is_file() and (entry / "model.bin").is_file()
    assert not list(entry.parent.glob("*.part"))  # no temporary folders left behind
    monkeypatch.setattr(openvino, "convert_model", _refuse_convert)
    with OpenVinoBackend(state_dict, cache_dir=cache_root / "openvino") as backend:
        assert backend.cache_entry.path == entry
        x, net = golden["case_16x9"]
        assert_close(backend.infer(x), net)


def test_cache_is_keyed_by_weights(
    ov_backend: OpenVinoBackend, state_dict: dict, cache_root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    other = dict(state_dict)
    key = "scratch.output_conv.4.bias"
    other[key] = state_dict[key] + 1.0
    root = cache_root / "openvino"
    mine = model_cache.fp32_entry(model_cache.CheckpointId.from_state_dict(state_dict), root)
    assert mine == ov_backend.cache_entry
    assert model_cache.fp32_entry(model_cache.CheckpointId.from_state_dict(other), root) != mine
    # Another OpenVINO release gets its own entry.
    with monkeypatch.context() as m:
        m.setattr(model_cache, "package_version",
                  lambda name: "2099.1.0" if name == "openvino" else "1")
        assert model_cache.fp32_entry(
            model_cache.CheckpointId.from_state_dict(state_dict), root).path.name != mine.path.name
    # Different weights must not be served the cached model of the first ones.
    monkeypatch.setattr(openvino, "convert_model", _refuse_convert)
    with pytest.raises(_ConvertCalled):
        OpenVinoBackend(other, cache_dir=cache_root / "openvino")


def _copy_cache(ov_backend: OpenVinoBackend, dest: Path) -> Path:
    shutil.copytree(ov_backend.cache_entry.path, dest / ov_backend.cache_entry.path.name)
    return dest / ov_backend.cache_entry.path.name


def test_garbage_cache_xml_is_converted_again(
    ov_backend: OpenVinoBackend, state_dict: dict, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entry = _copy_cache(ov_backend, tmp_path)
    (entry / "model.xml").write_text("not a model")
    monkeypatch.setattr(openvino, "convert_model", _refuse_convert)
    with pytest.raises(_ConvertCalled):  # no crash on the bad file: it goes to convert
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
    monkeypatch.setattr(openvino, "convert_model", _refuse_convert)
    with OpenVinoBackend(state_dict, cache_dir=tmp_path) as backend:  # and reads back
        assert_close(backend.infer(x), net)


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(ENV_CACHE, str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv(ENV_CACHE)
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert default_cache_dir() == tmp_path / "xdg" / "depthstream"
    assert default_cache_dir().name in ("depthstream", "Cache")


# -- selection --------------------------------------------------------------------------


def test_auto_picks_openvino_on_cpu_and_uses_the_env_cache(
    ov_backend: OpenVinoBackend, state_dict: dict, golden: dict,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(openvino, "convert_model", _refuse_convert)  # $DEPTHSTREAM_CACHE hit
    with create_backend("auto", state_dict, live=True, threads=2) as backend:
        assert isinstance(backend, OpenVinoBackend)
        assert backend.live and backend.threads == 2
        assert backend.cache_entry == ov_backend.cache_entry
        x, net = golden["case_4x3"]
        assert_close(backend.infer(x), net)


def test_auto_falls_back_to_torch_without_openvino(
    state_dict: dict, golden: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # makes `import openvino` fail
    with create_backend("auto", state_dict) as backend:
        assert isinstance(backend, TorchBackend)
        x, net = golden["case_4x3"]
        assert_close(backend.infer(x), net)
    with pytest.raises(ConfigError, match="openvino cannot be imported"):
        create_backend("openvino", state_dict)


def test_auto_falls_back_to_torch_when_openvino_fails(
    state_dict: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_CACHE, str(tmp_path))  # empty cache: a conversion is needed

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no CPU plugin")

    monkeypatch.setattr(openvino, "convert_model", broken)
    with create_backend("auto", state_dict) as backend:
        assert isinstance(backend, TorchBackend)
    with pytest.raises(RuntimeError, match="no CPU plugin"):  # asked for by name: no fallback
        create_backend("openvino", state_dict)


@pytest.mark.parametrize(
    ("name", "device", "match"),
    [
        ("tensorrt", "cpu", "unknown backend"),
        ("torch", "tpu", "unknown device"),
        ("auto", "gpu", "unknown device"),
        ("openvino", "cuda", "runs on the cpu"),
    ],
)
def test_bad_settings_are_config_errors(
    state_dict: dict, name: str, device: str, match: str
) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        create_backend(name, state_dict, device=device)
    assert "\n" not in str(info.value)


def test_missing_state_dict_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="state dict"):
        create_backend("torch", None)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")
@pytest.mark.parametrize("name", ["auto", "torch"])
def test_cuda_without_gpu_is_a_one_line_config_error(state_dict: dict, name: str) -> None:
    with pytest.raises(ConfigError, match="no CUDA GPU") as info:
        create_backend(name, state_dict, device="cuda")
    assert "\n" not in str(info.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
@pytest.mark.parametrize("case", CASES)
def test_cuda_auto_is_torch_on_the_gpu(state_dict: dict, golden: dict, case: str) -> None:
    with create_backend("auto", state_dict, device="cuda") as backend:
        assert isinstance(backend, TorchBackend) and backend.device == "cuda"
        x, net = golden[case]
        assert_close(backend.infer(x), net)


@pytest.mark.parametrize("make", ["torch", "openvino"])
def test_close_twice_then_infer_is_an_error(
    make: str, ov_backend: OpenVinoBackend, state_dict: dict, cache_root: Path, golden: dict
) -> None:
    backend = (TorchBackend(state_dict) if make == "torch"
               else OpenVinoBackend(state_dict, cache_dir=cache_root / "openvino"))
    backend.close()
    backend.close()
    with pytest.raises(StreamError, match="closed"):
        backend.infer(golden["case_4x3"][0])


def test_openvino_submit_gives_what_infer_and_predict_give(
    ov_backend: OpenVinoBackend, golden: dict
) -> None:
    from stream.inference import DepthEstimator
    from stream.transforms import preprocess_array, resize_depth

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
