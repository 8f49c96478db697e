"""Tests for stream.depth.colormap.DisplayRange: the running display range used by streams."""

from __future__ import annotations

import numpy as np
import pytest

from stream.core.errors import ConfigError
from stream.depth.colormap import DisplayRange, colorize, minmax


def _ramp(lo: float, hi: float, shape: tuple[int, int] = (40, 50)) -> np.ndarray:
    """Values spread evenly over ``[lo, hi]``, shuffled so no stride picks a biased set."""
    values = np.linspace(lo, hi, shape[0] * shape[1], dtype=np.float32)
    np.random.default_rng(0).shuffle(values)
    return values.reshape(shape)


def test_first_update_gives_the_frames_robust_percentiles():
    depth = _ramp(0.0, 1.0)
    depth[0, 0] = 1e6  # a hot pixel: min-max would show everything else black
    lo, hi = DisplayRange().update(depth)
    expected = np.percentile(depth, (2, 98))
    assert (lo, hi) == pytest.approx(tuple(expected))
    assert minmax(depth)[1] == 1e6


def test_constant_stream_keeps_its_percentiles_exactly():
    display = DisplayRange(low_pct=5, high_pct=95)
    depth = _ramp(2.0, 6.0)
    expected = tuple(np.percentile(depth, (5, 95)))
    for _ in range(10):
        assert display.update(depth) == pytest.approx(expected)


@pytest.mark.parametrize("start", [(0.0, 10.0), (4.0, 5.0), (-3.0, 0.5)])
def test_constant_stream_converges_to_its_robust_percentiles(start):
    display = DisplayRange()
    display.update(_ramp(*start))
    depth = _ramp(1.0, 3.0, shape=(480, 640))  # large: the percentiles come from a subsample
    for _ in range(400):
        lo, hi = display.update(depth)
    full = np.percentile(depth, (2, 98))
    assert (lo, hi) == pytest.approx(display.percentiles(depth), abs=1e-6)
    assert (lo, hi) == pytest.approx(tuple(full), abs=0.01 * (full[1] - full[0]))


def test_widens_fast():
    display = DisplayRange(widen_rate=0.5, shrink_rate=0.05)
    for _ in range(5):
        display.update(_ramp(0.0, 1.0))
    target = display.percentiles(_ramp(-1.0, 3.0))
    lo, hi = display.update(_ramp(-1.0, 3.0))
    # Half the way out on the very first frame ...
    assert lo < 0.02 - 0.5 * (0.02 - target[0]) + 1e-6
    assert hi > 0.98 + 0.5 * (target[1] - 0.98) - 1e-6
    for _ in range(6):
        lo, hi = display.update(_ramp(-1.0, 3.0))
    # ... and within 1% of the new range after a handful.
    span = target[1] - target[0]
    assert (lo, hi) == pytest.approx(target, abs=0.01 * span)


def test_shrinks_slowly():
    display = DisplayRange(widen_rate=0.5, shrink_rate=0.05)
    wide = display.update(_ramp(-1.0, 3.0))
    narrow = display.percentiles(_ramp(0.0, 1.0))
    lo, hi = display.update(_ramp(0.0, 1.0))
    # One frame moves the bounds by 5% of the gap only: something that leaves the picture
    # for a moment does not repaint everything else.
    assert lo == pytest.approx(wide[0] + 0.05 * (narrow[0] - wide[0]))
    assert hi == pytest.approx(wide[1] + 0.05 * (narrow[1] - wide[1]))
    for _ in range(9):
        lo, hi = display.update(_ramp(0.0, 1.0))
    assert hi > narrow[1] + 0.5 * (wide[1] - narrow[1])  # still wider than needed
    for _ in range(300):
        lo, hi = display.update(_ramp(0.0, 1.0))
    assert (lo, hi) == pytest.approx(narrow, abs=1e-4)


def test_each_bound_widens_and_shrinks_on_its_own():
    display = DisplayRange(widen_rate=0.5, shrink_rate=0.05)
    display.update(_ramp(0.0, 1.0))
    shifted = display.percentiles(_ramp(0.5, 1.5))
    lo, hi = display.update(_ramp(0.5, 1.5))
    assert lo == pytest.approx(0.02 + 0.05 * (shifted[0] - 0.02))  # shrinking: slow
    assert hi == pytest.approx(0.98 + 0.5 * (shifted[1] - 0.98))  # widening: fast


def test_small_frame_to_frame_changes_move_colours_little():
    rng = np.random.default_rng(1)
    depth = _ramp(0.0, 1.0, shape=(120, 160))
    display = DisplayRange()
    ranges = [display.update(depth + rng.normal(0, 0.01, depth.shape)) for _ in range(50)]
    worst = max(
        max(abs(a[0] - b[0]), abs(a[1] - b[1])) / (a[1] - a[0]) for a, b in zip(ranges, ranges[1:])
    )
    assert worst < 0.02


def test_reset_takes_the_next_frame_as_it_is():
    display = DisplayRange()
    for _ in range(3):
        display.update(_ramp(-5.0, 5.0))
    display.reset()
    assert display.range is None
    depth = _ramp(0.0, 1.0)
    assert display.update(depth) == pytest.approx(tuple(np.percentile(depth, (2, 98))))


def test_non_finite_pixels_are_ignored_and_an_empty_frame_keeps_the_range():
    display = DisplayRange()
    assert display.update(np.full((4, 4), np.nan, np.float32)) == (0.0, 1.0)
    assert display.range is None
    depth = _ramp(0.0, 1.0)
    depth[::3] = np.inf
    first = display.update(depth)
    assert np.isfinite(first).all()
    assert display.update(np.full((4, 4), np.nan, np.float32)) == first


def test_subsamples_large_frames():
    display = DisplayRange(max_samples=1000)
    depth = np.zeros((1000, 1000), np.float32)
    depth[:, 500:] = 1.0
    lo, hi = display.update(depth)
    assert (lo, hi) == (0.0, 1.0)
    calls = []

    class Spy(np.ndarray):
        def __getitem__(self, key):
            result = super().__getitem__(key)
            calls.append(result.size)
            return result

    display.percentiles(depth.view(Spy))
    assert calls[0] <= 2 * 1000


def test_output_feeds_colorize():
    depth = _ramp(0.0, 1.0)
    lo, hi = DisplayRange().update(depth)
    assert colorize(depth, lo, hi).shape == (*depth.shape, 3)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"low_pct": 60, "high_pct": 40},
        {"low_pct": -1},
        {"high_pct": 101},
        {"widen_rate": 0.0},
        {"widen_rate": 1.5},
        {"shrink_rate": 0.0},
        {"widen_rate": 0.1, "shrink_rate": 0.2},
        {"max_samples": 0},
    ],
)
def test_rejects_bad_settings(kwargs):
    with pytest.raises(ConfigError):
        DisplayRange(**kwargs)
