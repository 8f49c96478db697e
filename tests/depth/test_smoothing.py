"""Tests for stream.depth.smoothing: TemporalSmoother, and the temporal benchmark's goals."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from stream.core.errors import ConfigError
from stream.depth.smoothing import DEFAULT_STRENGTH, TemporalSmoother

H, W = 96, 128


def _floor_and_boxes() -> np.ndarray:
    """Inverse depth of a static scene: a floor receding upwards and two boxes."""
    depth = np.repeat(np.linspace(0.2, 0.6, H, dtype=np.float32)[:, None], W, axis=1)
    depth[50:80, 10:40] = 0.85
    depth[30:60, 85:110] = 0.75
    return depth


def _smooth_noise(rng: np.random.Generator, cell: int = 16) -> np.ndarray:
    coarse = rng.standard_normal((H // cell, W // cell)).astype(np.float32)
    return cv2.resize(coarse, (W, H), interpolation=cv2.INTER_CUBIC)


def _picture(depth: np.ndarray, seed: int = 0) -> np.ndarray:
    """A textured BGR picture whose colours follow the depth (so movers move in it too)."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 40, (H // 4, W // 4)).astype(np.float32)
    texture = cv2.resize(texture, (W, H), interpolation=cv2.INTER_NEAREST)
    gray = np.clip(40 + 180 * depth + texture, 0, 255)
    return np.stack([gray, 0.8 * gray, 0.6 * gray], axis=-1).astype(np.uint8)


def _affine(rng: np.random.Generator, truth: np.ndarray) -> tuple[float, float]:
    """A per-frame scale in 0.8..1.25 and shift within 10% of the mean, as MiDaS drifts."""
    scale = math.exp(rng.uniform(math.log(0.8), math.log(1.25)))
    return scale, rng.uniform(-0.1, 0.1) * float(truth.mean())


# -- settings and plain behaviour ------------------------------------------------------


def test_default_strength_is_a_valid_strength():
    assert 0.0 < DEFAULT_STRENGTH <= 1.0
    assert TemporalSmoother().strength == DEFAULT_STRENGTH


@pytest.mark.parametrize(("strength", "weight"), [(0.0, 1.0), (0.5, 0.525), (1.0, 0.05)])
def test_static_weight_follows_strength(strength, weight):
    assert TemporalSmoother(strength).static_weight == pytest.approx(weight)


@pytest.mark.parametrize("strength", [-0.1, 1.5, float("nan"), "strong", None])
def test_rejects_bad_strength(strength):
    with pytest.raises(ConfigError):
        TemporalSmoother(strength)


@pytest.mark.parametrize("shape", [(H,), (H, W, 1), (0, W)])
def test_rejects_depth_that_is_not_a_2d_map(shape):
    with pytest.raises(ConfigError):
        TemporalSmoother().update(np.zeros(shape, np.float32))


def test_strength_zero_returns_the_input_bit_identical():
    rng = np.random.default_rng(0)
    smoother = TemporalSmoother(0.0)
    truth = _floor_and_boxes()
    for t in range(6):
        scale, shift = _affine(rng, truth)
        depth = (scale * truth + shift + 0.02 * _smooth_noise(rng)).astype(np.float32)
        depth[0, t] = np.nan  # even NaN payloads come back untouched
        frame = _picture(truth) if t % 2 else None
        out = smoother.update(depth, frame)
        assert out.dtype == np.float32
        assert out.shape == depth.shape
        assert out.tobytes() == depth.tobytes()


def test_first_frame_comes_back_as_is_and_is_marked_a_start():
    smoother = TemporalSmoother()
    depth = _floor_and_boxes()
    out = smoother.update(depth)
    assert smoother.scene_cut
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, depth)
    with pytest.raises(ValueError, match="read-only"):
        out[:] = 0  # the output is the smoother's state, shared: nobody may change it
    second = smoother.update(depth)
    assert not smoother.scene_cut
    np.testing.assert_allclose(second, depth, atol=1e-5)


def test_float64_input_gives_float32_output():
    smoother = TemporalSmoother()
    depth = _floor_and_boxes().astype(np.float64)
    for _ in range(3):
        out = smoother.update(depth)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, depth, atol=1e-5)


def test_non_finite_pixels_do_not_spread():
    smoother = TemporalSmoother()
    depth = _floor_and_boxes()
    holes = depth.copy()
    holes[10:20, 10:20] = np.nan
    holes[30, 30] = np.inf
    holes[31, 31] = -np.inf
    for sequence in ([holes, depth, depth], [depth, holes, depth]):
        smoother.reset()
        outputs = [smoother.update(d) for d in sequence]
        assert all(np.isfinite(out).all() for out in outputs)
        # The healthy part is untouched, and the holes heal once real values come back.
        np.testing.assert_allclose(outputs[1][50:], depth[50:], atol=2e-4)
        np.testing.assert_allclose(outputs[2], depth, atol=2e-4)


# -- stabilisation ---------------------------------------------------------------------


@pytest.mark.parametrize("with_picture", [False, True])
def test_static_scene_with_per_frame_scale_and_shift_is_held_in_one_scale(with_picture):
    rng = np.random.default_rng(1)
    truth = _floor_and_boxes()
    frame = _picture(truth) if with_picture else None
    smoother = TemporalSmoother()
    outputs, inputs = [], []
    for _ in range(12):
        scale, shift = _affine(rng, truth)
        inputs.append((scale * truth + shift).astype(np.float32))
        outputs.append(smoother.update(inputs[-1], frame))
    # The input jumps by up to a quarter of its range from frame to frame ...
    assert max(np.abs(b - a).max() for a, b in zip(inputs, inputs[1:])) > 0.02
    # ... the output stays where the first frame put it.
    for out in outputs[1:]:
        np.testing.assert_allclose(out, outputs[0], atol=2e-4)


def test_static_scene_noise_is_averaged_over_time():
    rng = np.random.default_rng(2)
    truth = _floor_and_boxes()
    smoother = TemporalSmoother()
    raw_steps, our_steps = [], []
    previous_raw = previous_ours = None
    for _ in range(30):
        scale, shift = _affine(rng, truth)
        depth = (scale * (truth + 0.02 * _smooth_noise(rng)) + shift).astype(np.float32)
        out = smoother.update(depth)
        # Raw predictions at their best: each one fitted to the truth on its own.
        s, b = np.polyfit(depth.ravel(), truth.ravel(), 1)
        raw = s * depth + b
        s, b = np.polyfit(out.ravel(), truth.ravel(), 1)
        ours = s * out + b
        if previous_raw is not None:
            raw_steps.append(np.abs(raw - previous_raw).mean())
            our_steps.append(np.abs(ours - previous_ours).mean())
        previous_raw, previous_ours = raw, ours
    # Beyond undoing the scale and shift, the noise itself flickers less.
    assert np.mean(our_steps[5:]) < 0.5 * np.mean(raw_steps[5:])


def _square_scene(left: int, top: int = 30, side: int = 24) -> tuple[np.ndarray, np.ndarray]:
    truth = _floor_and_boxes()
    truth[top : top + side, left : left + side] = 1.0
    mask = np.zeros(truth.shape, bool)
    mask[top : top + side, left : left + side] = True
    return truth, mask


@pytest.mark.parametrize("with_picture", [False, True])
def test_moving_square_leaves_no_ghost(with_picture):
    rng = np.random.default_rng(3)
    smoother = TemporalSmoother(1.0)  # the strongest blend has the most to lose
    first_scale = first_shift = None
    previous_mask = None
    for t in range(12):
        truth, mask = _square_scene(left=8 + 7 * t)
        scale, shift = _affine(rng, truth)
        if t == 0:
            first_scale, first_shift = scale, shift
        depth = (scale * truth + shift).astype(np.float32)
        out = smoother.update(depth, _picture(truth) if with_picture else None)
        # The output stays in the first frame's scale: map it back to the truth.
        seen = (out - first_shift) / first_scale
        if previous_mask is not None:
            vacated = previous_mask & ~mask
            assert vacated.sum() >= 7 * 24
            np.testing.assert_allclose(seen[vacated], truth[vacated], atol=5e-3)
            np.testing.assert_allclose(seen[mask], 1.0, atol=5e-3)
        np.testing.assert_allclose(seen, truth, atol=5e-3)
        previous_mask = mask


@pytest.mark.parametrize("band_pixels", [W * 4, W * 9 + 1])
def test_blending_in_bands_equals_blending_the_whole_map(monkeypatch, band_pixels):
    """Bands of one or a few cell rows give what one band gives.

    Large maps are blended in bands of rows; here bands are forced on a small one.
    """
    import stream.depth.smoothing as smoothing

    rng = np.random.default_rng(5)
    frames = []
    for t in range(8):
        truth, _ = _square_scene(left=8 + 9 * t)
        scale, shift = _affine(rng, truth)
        noise = 0.01 * rng.standard_normal(truth.shape).astype(np.float32)
        frames.append(((scale * truth + shift + noise).astype(np.float32), _picture(truth)))
    whole = TemporalSmoother(0.9)
    expected = [whole.update(depth, picture) for depth, picture in frames]
    assert len(whole._row_bands) == 1
    monkeypatch.setattr(smoothing, "_BAND_PIXELS", band_pixels)
    banded = TemporalSmoother(0.9)
    for (depth, picture), want in zip(frames, expected):
        got = banded.update(depth, picture)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert len(banded._row_bands) > 3
    rows = [row for top, bottom in banded._row_bands for row in range(top, bottom)]
    assert rows == list(range(H))  # the bands cover every row once


def test_a_consumed_depth_map_holds_the_result_and_changes_nothing_else():
    rng = np.random.default_rng(6)
    frames = []
    for t in range(6):
        truth, _ = _square_scene(left=8 + 9 * t)
        scale, shift = _affine(rng, truth)
        frames.append((scale * truth + shift).astype(np.float32))
    kept, consumed = TemporalSmoother(0.9), TemporalSmoother(0.9)
    for depth in frames:
        mine = depth.copy()
        want = kept.update(depth)
        np.testing.assert_array_equal(depth, mine)  # not consumed: left as it was
        got = consumed.update(mine, consume=True)
        np.testing.assert_array_equal(got, want)
        assert np.shares_memory(got, mine)  # the result went into the given map
        assert not got.flags.writeable


def test_slow_square_with_noise_leaves_no_ghost():
    # One pixel a frame: each trailing edge is a sliver of a working-grid cell.
    rng = np.random.default_rng(4)
    smoother = TemporalSmoother()
    errors_vacated, errors_static = [], []
    outputs, truths = [], []
    for t in range(30):
        truth, mask = _square_scene(left=20 + t)
        scale, shift = _affine(rng, truth)
        depth = (scale * (truth + 0.01 * _smooth_noise(rng)) + shift).astype(np.float32)
        outputs.append(smoother.update(depth))
        truths.append(truth)
    s, b = np.polyfit(np.ravel(outputs), np.ravel(truths), 1)
    for t in range(1, 30):
        _, mask = _square_scene(left=20 + t)
        _, before = _square_scene(left=20 + t - 1)
        seen = s * outputs[t] + b
        errors_vacated.append(np.abs(seen - truths[t])[before & ~mask].mean())
        errors_static.append(np.abs(seen - truths[t])[~(before | mask)].mean())
    # A ghost would leave an error of a good part of the square's contrast (~0.5).
    assert max(errors_vacated) < 0.05
    assert np.mean(errors_static) < 0.02


# -- restarts --------------------------------------------------------------------------


def _unrelated_scene(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.5 + 0.2 * _smooth_noise(rng, cell=12)).astype(np.float32)


@pytest.mark.parametrize("with_picture", [False, True])
def test_scene_cut_restarts_from_the_new_scene(with_picture):
    rng = np.random.default_rng(5)
    smoother = TemporalSmoother()
    old = _floor_and_boxes()
    for t in range(8):
        scale, shift = _affine(rng, old)
        smoother.update(scale * old + shift, _picture(old) if with_picture else None)
        assert smoother.scene_cut == (t == 0)
    new = _unrelated_scene(6)
    picture = _picture(new, seed=9) if with_picture else None
    first = (1.1 * new + 0.03).astype(np.float32)
    out = smoother.update(first, picture)
    assert smoother.scene_cut
    np.testing.assert_array_equal(out, first)
    # Afterwards it tracks the new scene in the new scene's first scale, no trace of the old.
    for _ in range(5):
        scale, shift = _affine(rng, new)
        out = smoother.update(scale * new + shift, picture)
        assert not smoother.scene_cut
        np.testing.assert_allclose(out, first, atol=2e-4)


def test_an_unrelated_picture_alone_is_a_scene_cut():
    smoother = TemporalSmoother()
    depth = _floor_and_boxes()
    smoother.update(depth, _picture(depth, seed=0))
    other = 255 - _picture(_unrelated_scene(7), seed=7)
    smoother.update(depth, other)
    assert smoother.scene_cut


def test_a_global_brightness_change_is_not_a_scene_cut():
    smoother = TemporalSmoother()
    depth = _floor_and_boxes()
    picture = _picture(depth)
    smoother.update(depth, picture)
    brighter = np.clip(picture.astype(np.int16) + 40, 0, 255).astype(np.uint8)
    out = smoother.update(0.9 * depth + 0.05, brighter)
    assert not smoother.scene_cut
    np.testing.assert_allclose(out, depth, atol=2e-4)


def test_a_large_near_object_entering_is_not_a_scene_cut():
    smoother = TemporalSmoother()
    truth = _floor_and_boxes()
    smoother.update(truth)
    entered = truth.copy()
    entered[:, : int(0.4 * W)] = 1.3  # 40% of the picture
    out = smoother.update(1.2 * entered - 0.05)
    assert not smoother.scene_cut
    # The object shows in full at once, nearest of all; the rest keeps its shape. (The
    # alignment keeps the estimate's range, so the background may shift a little.)
    obj, rest = out[:, : int(0.4 * W)], out[:, int(0.4 * W):]
    assert obj.min() > rest.max()
    assert np.corrcoef(out.ravel(), entered.ravel())[0, 1] > 0.999


def test_a_long_noisy_stream_keeps_its_depth_range():
    """Least-squares alignment shrinks by the correlation every frame; ours must not."""
    rng = np.random.default_rng(3)
    truth = _floor_and_boxes()
    smoother = TemporalSmoother()
    span0 = None
    for _ in range(150):
        noise = cv2.GaussianBlur(rng.normal(0, 1, truth.shape).astype(np.float32), (0, 0), 3)
        pred = truth + 0.05 * float(np.ptp(truth)) * noise / float(noise.std())
        out = smoother.update(pred.astype(np.float32))
        lo, hi = np.percentile(out, (2, 98))
        span0 = span0 or float(hi - lo)
    assert not smoother.scene_cut
    assert 0.6 * span0 < float(hi - lo) < 1.6 * span0


def test_a_change_of_size_restarts():
    smoother = TemporalSmoother()
    smoother.update(_floor_and_boxes())
    smoother.update(_floor_and_boxes())
    smaller = cv2.resize(_floor_and_boxes(), (W // 2, H // 2)) * 2.0
    out = smoother.update(smaller)
    assert smoother.scene_cut
    np.testing.assert_array_equal(out, smaller)


def test_reset_returns_to_first_frame_behaviour():
    rng = np.random.default_rng(8)
    truth = _floor_and_boxes()
    frames = [
        (s * (truth + 0.02 * _smooth_noise(rng)) + b).astype(np.float32)
        for s, b in (_affine(rng, truth) for _ in range(6))
    ]
    used = TemporalSmoother()
    for depth in frames[::-1]:
        used.update(3.0 * depth)
    used.reset()
    fresh = TemporalSmoother()
    for depth in frames:
        expected = fresh.update(depth)
        np.testing.assert_array_equal(used.update(depth), expected)
        assert used.scene_cut == fresh.scene_cut


# -- the picture -----------------------------------------------------------------------


def test_a_change_in_the_picture_stops_the_blend_where_depth_barely_changes():
    # A change too small to tell from noise in depth (a flat, textured thing sliding over
    # a wall) still shows in the picture; there the output must follow the newest input.
    truth = _floor_and_boxes()
    region = (slice(20, 60), slice(40, 100))
    inner = (slice(28, 52), slice(48, 92))  # away from the mask's soft edge
    lags = {}
    for with_picture in (False, True):
        smoother = TemporalSmoother()
        rng = np.random.default_rng(10)
        lag = []
        for t in range(10):
            depth = truth.copy()
            depth[region] += 0.002 * (-1) ** t  # well under 1% of the range
            picture = _picture(truth)
            blocks = rng.integers(0, 256, (10, 15, 3), dtype=np.uint8)  # a new pattern
            picture[region] = cv2.resize(blocks, (60, 40), interpolation=cv2.INTER_NEAREST)
            out = smoother.update(depth, picture if with_picture else None)
            lag.append(np.abs(out - depth)[inner].mean())
        lags[with_picture] = np.mean(lag[3:])
    assert lags[True] < 1e-4
    # Without the picture the region is averaged over frames like everything else.
    assert lags[False] > 1e-3


# -- the benchmark's goals -------------------------------------------------------------


def _load_benchmark():
    import temporal  # benchmarks/ is on pytest's pythonpath (pyproject.toml)

    return temporal


def test_benchmark_goals_hold_on_a_short_run():
    bench = _load_benchmark()
    result = bench.run(frames=40, size_hw=(120, 160), seed=0)
    raw = result["raw"]
    for row in ("ours", "ours_frame"):
        ours = result[row]
        assert ours["flicker"] <= raw["flicker"] / 3, row
        assert ours["object_error"] <= 1.25 * raw["object_error"], row
        assert ours["range_jump"] <= 0.02, row
        assert all(bench.goals_met(result, row).values())
    # The measures can fail: per-frame min-max jumps, and a plain EMA leaves ghosts.
    assert raw["range_jump"] > 0.02
    assert result["ema"]["object_error"] > 1.25 * raw["object_error"]


@pytest.mark.parametrize("size", [1, 2, 3, 50, 4800, 4801])
def test_range_ends_are_numpys_2nd_and_98th_percentiles(size):
    from stream.depth.smoothing import _range_ends

    values = np.random.default_rng(size).normal(size=size).astype(np.float32)
    np.testing.assert_allclose(_range_ends(values), np.percentile(values, (2.0, 98.0)),
                               rtol=1e-6, atol=1e-7)
