"""Inference: picture in, depth at the picture's size out (transform, backend, resize).

The one place that chains :mod:`stream.models.transforms` and a
:class:`stream.engines.base.Backend`, used alike by the ``image`` command, the pipeline's
inference thread, the Python API and the web server. The backend's model spec decides
the preprocessing and the output resize. :class:`SharedEstimator` lets several threads
share one model (the web server's job worker and its live viewers). Starts no threads;
touches no files itself (:func:`create_estimator` reads the weights through
:mod:`stream.models.weights`).
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from stream.core.errors import ConfigError
from stream.models.registry import MIDAS_SMALL_SPEC, get_spec
from stream.models.spec import ModelSpec, OutputResize
from stream.models.transforms import preprocess_array, resize_depth

if TYPE_CHECKING:  # the backends import engines lazily; this module stays light
    from stream.engines.base import Backend, Job

__all__ = ["DepthEstimator", "Pending", "SharedEstimator", "TurnLock", "create_estimator"]

T = TypeVar("T")


class Pending:
    """A picture given to :meth:`DepthEstimator.submit`; :meth:`result` waits for its depth.

    Args:
        job: the backend's job for the picture's network input.
        size_hw: the picture's size, which the depth is resized to.
        start: ``time.perf_counter()`` when the submission began.
    """

    def __init__(self, job: Job | None, size_hw: tuple[int, int], start: float,
                 resize: OutputResize = OutputResize.CUBIC) -> None:
        self._job, self._size_hw, self._start = job, size_hw, start
        self._resize = resize
        self._result: tuple[np.ndarray, float] | None = None

    @classmethod
    def finished(cls, depth: np.ndarray, inference_ms: float) -> Pending:
        """A pending picture whose result is already there."""
        pending = cls(None, depth.shape[:2], 0.0)
        pending._result = depth, inference_ms
        return pending

    def result(self) -> tuple[np.ndarray, float]:
        """``(depth, inference_ms)`` as :meth:`DepthEstimator.predict` gives (waits once)."""
        if self._result is None:
            depth = resize_depth(self._job.wait(), self._size_hw, self._resize)
            self._result = depth, (time.perf_counter() - self._start) * 1000.0
            self._job = None
        return self._result


class DepthEstimator:
    """Run the network on RGB uint8 pictures; return float32 depth at each picture's size.

    The backend's model spec (``backend.spec``; MiDaS small for a backend without one)
    decides the preprocessing and the output resize.

    Args:
        backend: runs the network.
        input_size: the input side instead of the spec's default (``--input-size``).

    Example:
        >>> est = DepthEstimator(create_backend("auto", load_state_dict()))  # doctest: +SKIP
        >>> depth, ms = est.predict(rgb)  # doctest: +SKIP
    """

    is_view = False
    """Whether this is a view (:meth:`at_input_size`) on another estimator's backend."""

    def __init__(self, backend: Backend, input_size: int | None = None) -> None:
        self.backend = backend
        self.spec: ModelSpec = getattr(backend, "spec", None) or MIDAS_SMALL_SPEC
        self.input_size = input_size
        if input_size is not None:
            self.spec.input.check_side(input_size)

    def network_input(self, rgb: np.ndarray) -> np.ndarray:
        """The network input ``[1, 3, h, w]`` of an RGB uint8 picture (the spec's rule)."""
        return preprocess_array(rgb, self.spec, self.input_size)

    @property
    def submits_in_background(self) -> bool:
        """Whether :meth:`submit` returns while the network runs (else it does the work)."""
        return bool(getattr(self.backend, "submits_in_background", False))

    def predict_net(self, rgb: np.ndarray) -> np.ndarray:
        """Network-size output float32 ``[h, w]`` for an RGB uint8 picture."""
        return self.backend.infer(self.network_input(rgb))

    def predict(self, rgb: np.ndarray) -> tuple[np.ndarray, float]:
        """``(depth, inference_ms)``: float32 ``[H, W]`` depth and the time it took.

        ``inference_ms`` covers pre-processing, the network and the resize to the
        picture's size, as :attr:`stream.core.stats.RunStats.inference_ms_mean` does.
        """
        return self.submit(rgb).result()

    def submit(self, rgb: np.ndarray) -> Pending:
        """Pre-process ``rgb`` now and start the network on it; ``result()`` gives the depth.

        One picture in flight at a time: take the result before submitting the next.
        ``result()`` gives what :meth:`predict` gives, its time counted from this call.
        """
        start = time.perf_counter()
        job = self.backend.submit(self.network_input(rgb))
        return Pending(job, rgb.shape[:2], start, self.spec.resize)

    def predict_many(self, items: Iterable[tuple[T, np.ndarray]]) -> Iterator[tuple[T, np.ndarray]]:
        """Yield ``(tag, depth)`` for ``(tag, rgb)`` in order, letting the backend pipeline."""
        sizes: dict[int, tuple[int, int]] = {}

        def inputs() -> Iterator[tuple[tuple[int, T], np.ndarray]]:
            for n, (tag, rgb) in enumerate(items):
                sizes[n] = rgb.shape[:2]
                yield (n, tag), self.network_input(rgb)

        for (n, tag), net in self.backend.imap(inputs()):
            yield tag, resize_depth(net, sizes.pop(n), self.spec.resize)

    def describe(self) -> dict[str, Any]:
        """What runs: engine, device, precision and why, int8's self-check (JSON-ready)."""
        describe = getattr(self.backend, "describe", None)
        return describe() if describe is not None else {"backend": self.backend.name}

    @property
    def side(self) -> int:
        """The input side it runs at: :attr:`input_size`, else the spec's picture side."""
        return self.spec.input.check_side(self.input_size)

    def sized_for(self, *, live: bool = False, video: bool = False) -> DepthEstimator:
        """This estimator at the model's default input side for live input or video files.

        An input size chosen at construction stays; without one, the spec's
        :meth:`~stream.models.spec.ModelSpec.default_side` for the use is taken (see
        :meth:`at_input_size`).
        """
        if self.input_size is not None:
            return self
        return self.at_input_size(self.spec.default_side(live=live, video=video))

    def at_input_size(self, input_size: int) -> DepthEstimator:
        """This estimator at another input side: a view on the same backend.

        The view is a copy of this estimator (a subclass keeps its own behaviour) that
        closes nothing: close this one, not the view. At the side it runs at already,
        this estimator itself.

        Raises:
            ConfigError: the model cannot take ``input_size``.
        """
        if self.spec.input.check_side(input_size) == self.side:
            return self
        view = copy.copy(self)
        view.input_size, view.is_view = input_size, True
        return view

    def close(self) -> None:
        """Close the backend (a view made by :meth:`at_input_size` closes nothing)."""
        if not self.is_view:
            self.backend.close()


class TurnLock:
    """A lock handed over in the order it was asked for (first come, first served).

    ``threading.Lock`` is not fair: the thread that releases it can take it again
    before a waiting thread wakes, so a stream of calls can keep another caller
    waiting for the whole stream.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._next_ticket = 0
        self._serving = 0

    def __enter__(self) -> TurnLock:
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
            while ticket != self._serving:
                self._cond.wait()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._serving += 1
            self._cond.notify_all()


class SharedEstimator(DepthEstimator):
    """A :class:`DepthEstimator` that several threads share: it owns a lock, one user at a time.

    Every call runs the wrapped estimator under :attr:`lock` (a :class:`TurnLock`, so
    callers take turns in arrival order), and two inferences never split the cores
    between them. :meth:`predict_many` takes the lock per item, not for the whole
    stream: a video being converted holds the network for one frame at a time, and a
    live viewer's frame waits for at most one video frame. (The price: a backend does
    not keep several of the stream's frames in flight.)

    Args:
        estimator: the estimator to share; closing either closes its backend.

    Example:
        >>> shared = SharedEstimator(create_estimator())  # doctest: +SKIP
        >>> depth, ms = shared.predict(rgb)  # from any thread  # doctest: +SKIP
    """

    def __init__(self, estimator: DepthEstimator) -> None:
        super().__init__(estimator.backend, estimator.input_size)
        self.inner = estimator
        self.lock = TurnLock()

    def predict_net(self, rgb: np.ndarray) -> np.ndarray:
        """Network-size output float32 ``[h, w]`` for an RGB uint8 picture."""
        with self.lock:
            return self.inner.predict_net(rgb)

    def predict(self, rgb: np.ndarray) -> tuple[np.ndarray, float]:
        """``(depth, inference_ms)``; the time includes any wait for another thread's turn."""
        with self.lock:
            return self.inner.predict(rgb)

    @property
    def submits_in_background(self) -> bool:
        """False: :meth:`submit` runs under the lock, which is never held across calls."""
        return False

    def submit(self, rgb: np.ndarray) -> Pending:
        """A finished :class:`Pending`: :meth:`predict` runs now, under the lock."""
        return Pending.finished(*self.predict(rgb))

    def predict_many(self, items: Iterable[tuple[T, np.ndarray]]) -> Iterator[tuple[T, np.ndarray]]:
        """Yield ``(tag, depth)`` for ``(tag, rgb)`` in order, taking the lock per item."""
        for tag, rgb in items:  # the next item is read outside the lock (it may block)
            with self.lock:
                depth, _ = self.inner.predict(rgb)
            yield tag, depth

    def at_input_size(self, input_size: int) -> DepthEstimator:
        """A view at another input side that takes turns on this estimator's lock."""
        view = super().at_input_size(input_size)
        if view is not self:
            view.inner = self.inner.at_input_size(input_size)
        return view

    def close(self) -> None:
        """Close the wrapped estimator (after a call in progress ends); a view: nothing."""
        if not self.is_view:
            with self.lock:
                self.inner.close()


def create_estimator(
    weights: str | None = None,
    backend: str = "auto",
    device: str = "cpu",
    live: bool = False,
    progress: bool = True,
    *,
    state_dict: dict | None = None,
    precision: str = "auto",
    model: str | ModelSpec | None = None,
    input_size: int | None = None,
    threads: int | None = None,
) -> DepthEstimator:
    """Find the checkpoint and build a :class:`DepthEstimator` on the chosen backend.

    With OpenVINO and a cached model for this checkpoint file, the file is recognised
    by its size, time and hash and not loaded (torch is not imported); otherwise it is
    loaded and checked, and converted once.

    Args:
        weights: checkpoint path; ``None`` looks in the usual places.
        backend: ``auto``, ``openvino`` or ``torch``.
        device: ``cpu`` or ``cuda``.
        live: tune the backend for one frame at a time.
        progress: show a download's progress, one-time work (conversion, int8
            quantization) and the precision ``auto`` chose, on stderr.
        state_dict: weights already loaded with :func:`stream.models.weights.load_state_dict`
            (then ``weights`` must be ``None``): a caller that checked them early, or
            needs their digest, does not read them twice.
        precision: ``auto`` (int8 where its self-check against fp32 passed, else fp32),
            ``fp32`` or ``int8`` (OpenVINO on the cpu).
        model: the network, by ``--model`` name (:data:`stream.models.registry.MODELS`);
            default MiDaS v2.1 small.
        input_size: the network's input side instead of the model's default.
        threads: CPU threads for the network; default all cores this process may use.

    Raises:
        WeightsError: no usable checkpoint (one-line message says what to do).
        ConfigError: unknown or unavailable backend/device/precision, or both
            ``weights`` and ``state_dict``.
    """
    from stream.engines.base import ONE_SOURCE
    from stream.engines.factory import create_backend
    from stream.models.weights import check_file, resolve_path

    spec = get_spec(model)
    precision = getattr(precision, "value", precision)  # a settings.Precision is fine too
    options = {"device": device, "live": live, "precision": precision, "progress": progress,
               "model": spec, "threads": threads}
    if state_dict is None:
        path = check_file(resolve_path(weights, spec.checkpoint, progress=progress),
                          spec.checkpoint)
        return DepthEstimator(create_backend(backend, weights=path, **options), input_size)
    if weights is not None:
        raise ConfigError(ONE_SOURCE)
    return DepthEstimator(create_backend(backend, state_dict, **options), input_size)
