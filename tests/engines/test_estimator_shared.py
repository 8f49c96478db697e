"""Tests for stream.engines.estimator's sharing: SharedEstimator and TurnLock take turns."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np

from stream.engines.base import Backend
from stream.engines.estimator import DepthEstimator, SharedEstimator, TurnLock


class _RecordingBackend(Backend):
    """Sleeps in ``infer`` and records who ran, and how many ran at once."""

    def __init__(self) -> None:
        self.active = 0
        self.most_active = 0
        self.calls: list[str] = []
        self._count = threading.Lock()

    def infer(self, x: np.ndarray) -> np.ndarray:
        with self._count:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
            self.calls.append(threading.current_thread().name)
        time.sleep(0.03)
        with self._count:
            self.active -= 1
        return np.zeros(x.shape[2:], np.float32)


def test_shared_estimator_takes_turns_frame_by_frame() -> None:
    backend = _RecordingBackend()
    shared = SharedEstimator(DepthEstimator(backend))
    rgb = np.zeros((48, 64, 3), np.uint8)
    started = threading.Event()

    def video() -> None:
        def frames() -> Iterator[tuple[int, np.ndarray]]:
            for i in range(12):
                if i == 1:
                    started.set()
                yield i, rgb

        assert [tag for tag, _ in shared.predict_many(frames())] == list(range(12))

    def live() -> None:
        started.wait(10)
        for _ in range(4):
            depth, _ = shared.predict(rgb)
            assert depth.shape == (48, 64)

    threads = [threading.Thread(target=video, name="video"),
               threading.Thread(target=live, name="live")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert backend.most_active == 1  # never two inferences at once
    assert backend.calls.count("video") == 12 and backend.calls.count("live") == 4
    # the live frames ran between video frames (turns in arrival order), not after the
    # whole video; a plain threading.Lock lets the video take it again and again
    order = "".join(name[0] for name in backend.calls)
    assert order.endswith("v") and "ll" not in order, order
    shared.close()


def test_turn_lock_hands_over_in_arrival_order() -> None:
    def waiter_position() -> int:
        lock, order, asked = TurnLock(), [], threading.Event()

        def busy() -> None:  # takes the lock again as soon as it lets go
            for i in range(40):
                with lock:
                    order.append("busy")
                    if i == 5:
                        asked.set()
                    time.sleep(0.002)

        def waiter() -> None:
            asked.wait(10)
            with lock:
                order.append("waiter")

        threads = [threading.Thread(target=busy), threading.Thread(target=waiter)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        return order.index("waiter")

    # It asked while the 6th turn ran: it gets the 7th or 8th, not whatever the busy
    # thread leaves (a plain threading.Lock often gives it the last turn).
    assert max(waiter_position() for _ in range(3)) <= 7
