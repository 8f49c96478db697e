"""Window control: the live window's requests to the inference thread (smoothing, reset).

The smoother and the colour range live on the inference thread; the window's keys are
read on the window thread. :class:`LiveControl` is the one thread-safe hand-off between
them (a lock around two values): the window asks (:meth:`LiveControl.step`,
:meth:`LiveControl.request_reset`), and :class:`ControlledSmoother` and
:class:`ControlledRange`, given to the pipeline in place of the plain stages, apply the
requests on the inference thread before their next frame. Starts no threads, touches no
files.
"""

from __future__ import annotations

import threading

import numpy as np

from stream.depth.colormap import DisplayRange
from stream.depth.smoothing import TemporalSmoother

__all__ = ["SMOOTH_STEP", "LiveControl", "ControlledSmoother", "ControlledRange"]

SMOOTH_STEP = 0.1
"""How much one ``+`` or ``-`` changes the smoothing strength."""


class LiveControl:
    """Smoothing strength and reset requests, shared by the window and inference threads.

    Args:
        strength: the smoothing strength the run starts with, 0..1.
        adjustable: whether the strength may change (False when smoothing is off: the
            pipeline then has no smoother to change).
    """

    def __init__(self, strength: float, adjustable: bool = True) -> None:
        self.adjustable = adjustable
        self._lock = threading.Lock()
        self._strength = float(strength)
        self._resets = 0

    @property
    def strength(self) -> float:
        """The strength asked for last."""
        with self._lock:
            return self._strength

    def step(self, steps: int) -> float:
        """Change the strength by ``steps`` x :data:`SMOOTH_STEP`, within 0..1; return it."""
        with self._lock:
            if self.adjustable:
                value = min(1.0, max(0.0, self._strength + steps * SMOOTH_STEP))
                self._strength = round(value, 6)
            return self._strength

    def request_reset(self) -> None:
        """Ask the smoother and the colour range to forget the past before their next frame."""
        with self._lock:
            self._resets += 1

    def state(self) -> tuple[float, int]:
        """``(strength, number of resets asked for so far)``, read together."""
        with self._lock:
            return self._strength, self._resets


class ControlledSmoother:
    """A :class:`~stream.depth.smoothing.TemporalSmoother` whose strength the window sets.

    A new strength starts a new smoother (the estimate restarts in the new frame's
    scale, and :attr:`scene_cut` tells the pipeline to reset the colour range); at
    strength 0 the network's depth passes through unchanged. Used only on the inference
    thread.

    Args:
        control: the window's requests.
        align: align each frame to the estimate (relative depth); ``False`` for metres.
    """

    def __init__(self, control: LiveControl, align: bool = True) -> None:
        self.control = control
        self.align = align
        self._strength, self._resets = control.state()
        self._smoother = TemporalSmoother(self._strength, align)
        self._scene_cut = False

    @property
    def strength(self) -> float:
        """The strength in use."""
        return self._strength

    @property
    def scene_cut(self) -> bool:
        """True when the last update started afresh (a reset, a new strength, a cut)."""
        return self._scene_cut

    def reset(self) -> None:
        """Forget the running estimate."""
        self._smoother.reset()

    def update(self, depth: np.ndarray, image_bgr: np.ndarray, *,
               consume: bool = False) -> np.ndarray:
        """Apply the window's requests, then smooth ``depth`` (``consume``: as the smoother's)."""
        strength, resets = self.control.state()
        restart = resets != self._resets or strength != self._strength
        if strength != self._strength:
            self._smoother = TemporalSmoother(strength, self.align)
            self._strength = strength
        elif resets != self._resets:
            self._smoother.reset()
        self._resets = resets
        smoothed = self._smoother.update(depth, image_bgr, consume=consume)
        self._scene_cut = restart or self._smoother.scene_cut
        return smoothed


class ControlledRange:
    """A :class:`~stream.depth.colormap.DisplayRange` that the window's reset requests reach.

    Needed when there is no smoother to pass a reset on (smoothing off). Used only on the
    inference thread.
    """

    def __init__(self, control: LiveControl, colour_range: DisplayRange | None = None) -> None:
        self.control = control
        self.colour_range = colour_range or DisplayRange()
        self._resets = control.state()[1]

    def reset(self) -> None:
        """Forget the range."""
        self.colour_range.reset()

    def update(self, depth: np.ndarray) -> tuple[float, float]:
        """Apply a reset request, then fold ``depth`` into the range."""
        resets = self.control.state()[1]
        if resets != self._resets:
            self._resets = resets
            self.colour_range.reset()
        return self.colour_range.update(depth)
