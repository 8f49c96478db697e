"""Colormap: near (large inverse depth) is warm and bright; range and options."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from stream.core.errors import ConfigError
from stream.depth.colormap import colorize, minmax, normalize_depth


def _square_scene() -> np.ndarray:
    depth = np.full((64, 64), 0.2, np.float32)  # far background
    depth[20:44, 20:44] = 0.9  # near square (inverse depth: larger = nearer)
    return depth


def _brightness_and_warmth(bgr: np.ndarray) -> tuple[float, float]:
    b, g, r = (float(c) for c in bgr.reshape(-1, 3).mean(axis=0))
    return (b + g + r) / 3, r - b


def test_near_square_is_brighter_and_warmer() -> None:
    depth = _square_scene()
    out = colorize(depth, *minmax(depth))
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    near_l, near_w = _brightness_and_warmth(out[25:40, 25:40])
    far_l, far_w = _brightness_and_warmth(out[:10, :10])
    assert near_l > far_l + 100
    assert near_w > far_w


def test_hi_maps_to_bright_end_and_lo_to_dark_end_of_inferno() -> None:
    depth = np.array([[0.0, 1.0, -5.0, 7.0]], np.float32)
    out = colorize(depth, 0.0, 1.0)
    lut = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[None], cv2.COLORMAP_INFERNO)[0]
    assert (out[0, 0] == lut[0]).all() and (out[0, 2] == lut[0]).all()  # lo and below
    assert (out[0, 1] == lut[255]).all() and (out[0, 3] == lut[255]).all()  # hi and above


def test_invert_swaps_ends() -> None:
    depth = _square_scene()
    out = colorize(depth, *minmax(depth), invert=True)
    assert out[30, 30].astype(int).sum() < out[0, 0].astype(int).sum()


def test_normalize_depth_linear_and_flat() -> None:
    depth = np.linspace(0, 1, 256, dtype=np.float32)[None]
    np.testing.assert_array_equal(normalize_depth(depth, 0, 1)[0], np.arange(256))
    assert (normalize_depth(np.ones((3, 3), np.float32), 1.0, 1.0) == 0).all()
    nan = np.array([[np.nan, np.inf]], np.float32)
    assert normalize_depth(nan, 0, 1).tolist() == [[0, 255]]


@pytest.mark.parametrize("cmap", ["inferno", "magma", "turbo", "gray"])
def test_every_cmap_is_brighter_for_near(cmap: str) -> None:
    depth = _square_scene()
    out = colorize(depth, *minmax(depth), cmap=cmap)
    assert _brightness_and_warmth(out[30:35, 30:35])[0] > _brightness_and_warmth(out[:5, :5])[0]


def test_errors() -> None:
    with pytest.raises(ConfigError, match="colormap"):
        colorize(_square_scene(), 0, 1, cmap="nope")
    with pytest.raises(ConfigError):
        colorize(np.zeros((2, 2, 2), np.float32), 0, 1)


def test_minmax_ignores_non_finite() -> None:
    assert minmax(np.array([np.nan, 1.0, 3.0, np.inf], np.float32)) == (1.0, 3.0)


@pytest.mark.parametrize("invert", [False, True])
def test_large_maps_are_scaled_in_bands_with_the_same_result(monkeypatch, invert) -> None:
    import stream.depth.colormap as colormap

    rng = np.random.default_rng(2)
    depth = rng.normal(1.0, 0.5, (37, 50)).astype(np.float32)
    depth[3, 4], depth[20, 7], depth[36, 49] = np.nan, np.inf, -np.inf
    whole = normalize_depth(depth, 0.2, 1.8, invert)
    monkeypatch.setattr(colormap, "_BAND_PIXELS", 50 * 4 + 3)  # bands of 4 rows
    banded = normalize_depth(depth, 0.2, 1.8, invert)
    np.testing.assert_array_equal(banded, whole)
    assert banded.dtype == np.uint8 and whole[3, 4] == (255 if invert else 0)
