"""Tests for stream/inference.py: DepthEstimator's shapes, values, timing and ordering.

The backend is a test double whose output says which picture it came from (a map filled
with the normalised red level of a flat picture), so a depth map that belongs to another
picture, or has another picture's size, shows.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator

import numpy as np
import pytest
from support.fakes import cheap_estimator

from stream.core.errors import ConfigError
from stream.engines.base import Backend
from stream.engines.estimator import DepthEstimator, SharedEstimator
from stream.models.transforms import MEAN_RGB, STD_RGB, network_size

SIZES_HW = [(48, 64), (480, 640), (640, 360), (37, 251), (1, 1), (300, 300)]


class EchoBackend(Backend):
    """TEST DOUBLE: a network-size map filled with the input's mean red value.

    ``imap`` keeps ``ahead`` inputs in flight before it yields the first output (as the
    OpenVINO backend does) and still yields in input order.
    """

    name = "echo-test-double"

    def __init__(self, ahead: int = 0, delay_s: float = 0.0) -> None:
        self.ahead = ahead
        self.delay_s = delay_s
        self.shapes: list[tuple[int, ...]] = []
        self.taken = 0
        self.closed = 0

    def infer(self, x: np.ndarray) -> np.ndarray:  # noqa: D102
        self.shapes.append(x.shape)
        if self.delay_s:
            time.sleep(self.delay_s)
        return np.full(x.shape[2:], x[0, 0].mean(), np.float32)

    def imap(self, items: Iterable) -> Iterator:  # noqa: D102
        window: deque = deque()
        for item in items:
            self.taken += 1
            window.append(item)
            if len(window) > self.ahead:
                tag, x = window.popleft()
                yield tag, self.infer(x)
        while window:
            tag, x = window.popleft()
            yield tag, self.infer(x)

    def close(self) -> None:  # noqa: D102
        self.closed += 1


def _flat(red: int, size_hw: tuple[int, int]) -> np.ndarray:
    """A flat RGB picture with red level ``red``."""
    rgb = np.zeros((*size_hw, 3), np.uint8)
    rgb[..., 0] = red
    rgb[..., 1] = 255 - red
    return rgb


def _code(red: int) -> float:
    """What :class:`EchoBackend` answers for a flat picture with red level ``red``."""
    return (red / 255.0 - float(MEAN_RGB[0])) / float(STD_RGB[0])


@pytest.mark.parametrize("size_hw", SIZES_HW)
def test_predict_gives_float32_depth_at_the_pictures_size(size_hw):
    backend = EchoBackend()
    depth, _ = DepthEstimator(backend).predict(_flat(200, size_hw))
    assert depth.dtype == np.float32
    assert depth.shape == size_hw
    # the network saw the keep-aspect, multiple-of-32 input, and its answer was resized
    assert backend.shapes == [(1, 3, *network_size(*size_hw))]
    np.testing.assert_allclose(depth, _code(200), rtol=1e-5)


def test_predict_net_gives_the_network_size_output():
    backend = EchoBackend()
    net = DepthEstimator(backend).predict_net(_flat(90, (480, 640)))
    assert net.shape == network_size(480, 640) == (192, 256)
    np.testing.assert_allclose(net, _code(90), rtol=1e-5)


def test_predict_answers_each_picture_with_its_own_depth():
    estimator = DepthEstimator(EchoBackend())
    for red in (0, 60, 255):
        depth, _ = estimator.predict(_flat(red, (48, 64)))
        np.testing.assert_allclose(depth, _code(red), rtol=1e-5, atol=1e-6)


def test_predict_times_at_least_the_network():
    _, ms = DepthEstimator(EchoBackend(delay_s=0.03)).predict(_flat(10, (48, 64)))
    assert isinstance(ms, float)
    assert ms >= 30.0


def test_predict_rejects_a_picture_that_is_not_rgb_uint8_before_the_network():
    backend = EchoBackend()
    estimator = DepthEstimator(backend)
    for bad in (np.zeros((48, 64, 3), np.float32), np.zeros((48, 64), np.uint8)):
        with pytest.raises(ConfigError, match="RGB uint8"):
            estimator.predict(bad)
    assert backend.shapes == []


@pytest.mark.parametrize("ahead", [0, 1, 3, 50])
def test_predict_many_keeps_order_tags_and_each_pictures_size(ahead):
    items = [(f"p{n}", _flat(20 * n, SIZES_HW[n % len(SIZES_HW)])) for n in range(9)]
    results = list(DepthEstimator(EchoBackend(ahead=ahead)).predict_many(items))
    assert [tag for tag, _ in results] == [tag for tag, _ in items]
    for (_, rgb), (_, depth) in zip(items, results):
        assert depth.dtype == np.float32
        assert depth.shape == rgb.shape[:2]
        np.testing.assert_allclose(depth, _code(int(rgb[0, 0, 0])), rtol=1e-5, atol=1e-6)


def test_predict_many_does_not_use_tags_as_keys():
    """Equal tags (here all ``None``) still get each their own picture's size and depth."""
    items = [(None, _flat(40 * n, (32 + 16 * n, 64))) for n in range(5)]
    results = list(DepthEstimator(EchoBackend(ahead=2)).predict_many(items))
    assert [depth.shape for _, depth in results] == [rgb.shape[:2] for _, rgb in items]
    assert [float(depth[0, 0]) for _, depth in results] == pytest.approx(
        [_code(40 * n) for n in range(5)], rel=1e-5, abs=1e-6)


def test_predict_many_reads_its_input_lazily():
    """Only as many pictures are read as the backend keeps in flight (a stream can be endless)."""
    backend = EchoBackend(ahead=3)
    many = ((n, _flat(n % 256, (24, 32))) for n in range(1000))
    stream = DepthEstimator(backend).predict_many(many)
    first = list(itertools.islice(stream, 5))
    assert [tag for tag, _ in first] == [0, 1, 2, 3, 4]
    assert backend.taken == 5 + 3
    stream.close()


def test_predict_many_of_nothing_yields_nothing():
    backend = EchoBackend()
    assert list(DepthEstimator(backend).predict_many([])) == []
    assert backend.shapes == []


def test_close_closes_the_backend():
    backend = EchoBackend()
    DepthEstimator(backend).close()
    assert backend.closed == 1


# --------------------------------------------------------------------------- submit


class _TimerJob:
    """TEST DOUBLE's job: its output is ready ``delay_s`` after it was made (a timer)."""

    def __init__(self, output: np.ndarray, delay_s: float) -> None:
        self.output = output
        self.ready = threading.Event()
        self.waits = 0
        timer = threading.Timer(delay_s, self.ready.set)
        timer.daemon = True
        timer.start()

    def wait(self) -> np.ndarray:
        self.ready.wait()
        self.waits += 1
        return self.output


class BackgroundEcho(EchoBackend):
    """TEST DOUBLE: :class:`EchoBackend` whose ``submit`` returns at once (a timer runs)."""

    submits_in_background = True

    def submit(self, x: np.ndarray) -> _TimerJob:  # noqa: D102
        self.shapes.append(x.shape)
        return _TimerJob(np.full(x.shape[2:], x[0, 0].mean(), np.float32), self.delay_s)


@pytest.mark.parametrize("size_hw", SIZES_HW)
def test_submit_result_equals_predict(size_hw):
    for estimator in (DepthEstimator(EchoBackend()), cheap_estimator()):
        rgb = _flat(150, size_hw)
        rgb[: size_hw[0] // 2, :, 2] = 200  # not flat: the cheap double's blur shows
        pending = estimator.submit(rgb)
        depth, ms = pending.result()
        want, _ = estimator.predict(rgb)
        assert depth.dtype == np.float32 and depth.shape == size_hw
        np.testing.assert_array_equal(depth, want)
        assert isinstance(ms, float) and ms >= 0.0
        assert pending.result()[0] is depth  # asked twice: the same answer, no second wait
        assert estimator.submits_in_background is False


def test_submit_returns_while_the_backend_works_and_times_from_the_submission():
    backend = BackgroundEcho(delay_s=0.1)
    estimator = DepthEstimator(backend)
    assert estimator.submits_in_background
    start = time.perf_counter()
    pending = estimator.submit(_flat(70, (48, 64)))
    assert time.perf_counter() - start < 0.08  # did not wait for the network
    depth, ms = pending.result()
    assert ms >= 100.0  # from the submission to the result, as predict's time
    assert depth.shape == (48, 64) and backend.shapes == [(1, 3, *network_size(48, 64))]
    np.testing.assert_allclose(depth, _code(70), rtol=1e-5, atol=1e-6)


def test_submit_rejects_a_bad_picture_before_the_network():
    backend = BackgroundEcho()
    with pytest.raises(ConfigError, match="RGB uint8"):
        DepthEstimator(backend).submit(np.zeros((48, 64), np.uint8))
    assert backend.shapes == []


def test_shared_submit_is_finished_and_does_not_keep_the_lock():
    shared = SharedEstimator(DepthEstimator(BackgroundEcho(delay_s=0.05)))
    assert shared.submits_in_background is False  # submit does the work, under the lock
    start = time.perf_counter()
    pending = shared.submit(_flat(30, (48, 64)))
    assert time.perf_counter() - start >= 0.05  # the work was done in submit
    taken = []
    other = threading.Thread(target=lambda: taken.append(shared.predict(_flat(5, (8, 8)))))
    other.start()
    other.join(timeout=5)
    assert taken, "another thread could not take the lock after submit returned"
    depth, ms = pending.result()
    np.testing.assert_allclose(depth, _code(30), rtol=1e-5, atol=1e-6)
    assert ms >= 50.0
