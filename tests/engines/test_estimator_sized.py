"""Tests for DepthEstimator.sized_for: the model's input side for live input and video files.

An estimator built without an input size runs pictures at the model's picture side; the web
server shares it with its video jobs and its live view, which take the model's own default
sides through a view on the same backend.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from engines.test_estimator import EchoBackend
from stream.core.errors import ConfigError
from stream.engines.estimator import DepthEstimator, SharedEstimator
from stream.models.registry import DAV2_SMALL_SPEC, MIDAS_SMALL_SPEC

FRAME = np.full((480, 640, 3), 90, np.uint8)


class SpecEcho(EchoBackend):
    """TEST DOUBLE: :class:`EchoBackend` that says which model it runs."""

    def __init__(self, spec) -> None:
        super().__init__()
        self.spec = spec


def _input_hw(side: int) -> tuple[int, int]:
    return DAV2_SMALL_SPEC.input.network_size(480, 640, side)


def test_video_and_live_views_run_at_the_models_sides_on_the_same_backend():
    backend = SpecEcho(DAV2_SMALL_SPEC)
    estimator = DepthEstimator(backend)
    video, live = estimator.sized_for(video=True), estimator.sized_for(live=True)
    assert (video.input_size, live.input_size) == (364, 196)
    assert (video.backend, live.backend) == (backend, backend)
    for view in (estimator, video, live):
        depth, _ = view.predict(FRAME)
        assert depth.shape == (480, 640)
    assert [s[2:] for s in backend.shapes] == [_input_hw(518), _input_hw(364), _input_hw(196)]
    assert estimator.sized_for() is estimator  # pictures: the model's picture side
    video.close()
    live.close()
    assert backend.closed == 0  # a view closes nothing: the estimator owns the backend
    estimator.close()
    assert backend.closed == 1


def test_an_input_size_chosen_at_construction_stays():
    estimator = DepthEstimator(SpecEcho(DAV2_SMALL_SPEC), input_size=266)
    assert estimator.sized_for(video=True) is estimator
    assert estimator.sized_for(live=True) is estimator


def test_a_model_with_one_side_for_every_use_gets_the_estimator_itself():
    estimator = DepthEstimator(SpecEcho(MIDAS_SMALL_SPEC))
    assert MIDAS_SMALL_SPEC.video_side is None and MIDAS_SMALL_SPEC.live_side is None
    assert estimator.sized_for(video=True) is estimator
    assert estimator.sized_for(live=True) is estimator


def test_a_shared_estimator_s_view_takes_turns_on_the_same_lock():
    backend = SpecEcho(DAV2_SMALL_SPEC)
    shared = SharedEstimator(DepthEstimator(backend))
    view = shared.sized_for(live=True)
    assert isinstance(view, SharedEstimator) and view.lock is shared.lock
    assert view.input_size == 196
    with shared.lock:  # held elsewhere: the view waits for its turn
        done = threading.Event()
        worker = threading.Thread(target=lambda: (view.predict(FRAME), done.set()))
        worker.start()
        assert not done.wait(0.3)
    worker.join(10)
    assert done.is_set()
    tags = [tag for tag, _ in view.predict_many([("a", FRAME), ("b", FRAME)])]
    assert tags == ["a", "b"]
    assert [s[2:] for s in backend.shapes] == [_input_hw(196)] * 3
    view.close()
    assert backend.closed == 0
    shared.close()
    assert backend.closed == 1


class _Counting(DepthEstimator):
    """A user's subclass that counts its pictures."""

    def __init__(self, backend, input_size=None) -> None:
        super().__init__(backend, input_size)
        self.count = 0

    def predict(self, rgb):  # noqa: D102
        self.count += 1
        return super().predict(rgb)


def test_a_subclass_s_view_keeps_its_behaviour_alone_or_shared():
    backend = SpecEcho(DAV2_SMALL_SPEC)
    counting = _Counting(backend)
    view = counting.sized_for(live=True)
    assert isinstance(view, _Counting) and view.input_size == 196
    view.predict(FRAME)
    assert view.count == 1 and counting.count == 0  # the view counts for itself
    shared = SharedEstimator(_Counting(backend))
    shared_view = shared.sized_for(video=True)
    shared_view.predict(FRAME)
    assert isinstance(shared_view.inner, _Counting) and shared_view.inner.count == 1
    assert [s[2:] for s in backend.shapes] == [_input_hw(196), _input_hw(364)]


def test_at_input_size_checks_the_size_and_keeps_the_estimator_at_its_own():
    estimator = DepthEstimator(SpecEcho(DAV2_SMALL_SPEC), input_size=266)
    assert estimator.at_input_size(266) is estimator
    with pytest.raises(ConfigError):
        estimator.at_input_size(5)
    view = estimator.at_input_size(280)
    assert view.input_size == 280 and view.is_view and not estimator.is_view
