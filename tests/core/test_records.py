"""Tests for stream/records.py: each record rejects a wrong hand-off where it is made."""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import numpy as np
import pytest

from stream.core.records import DepthFrame, Frame, VideoInfo

H, W = 6, 8


def _bgr(h: int = H, w: int = W) -> np.ndarray:
    return np.arange(h * w * 3, dtype=np.uint8).reshape(h, w, 3)


def _depth(h: int = H, w: int = W) -> np.ndarray:
    return np.linspace(0.0, 1.0, h * w, dtype=np.float32).reshape(h, w)


# Pictures that are not BGR uint8 [H, W, 3], each for a different reason.
BAD_IMAGES = {
    "float32": np.zeros((H, W, 3), np.float32),
    "uint16": np.zeros((H, W, 3), np.uint16),
    "gray 2-d": np.zeros((H, W), np.uint8),
    "one channel": np.zeros((H, W, 1), np.uint8),
    "four channels": np.zeros((H, W, 4), np.uint8),
    "batch 4-d": np.zeros((1, H, W, 3), np.uint8),
    "nested list": [[[0, 0, 0]] * W] * H,
    "None": None,
}


# -- VideoInfo ----------------------------------------------------------------------------


@pytest.mark.parametrize("width, height", [(0, 48), (64, 0), (-64, 48), (64, -1), (0, 0)])
def test_video_info_rejects_a_size_that_is_not_positive(width, height):
    with pytest.raises(ValueError, match="size must be positive"):
        VideoInfo(width=width, height=height)


@pytest.mark.parametrize("rate", [Fraction(0), Fraction(-30), Fraction(-30000, 1001)])
def test_video_info_rejects_a_rate_that_is_not_positive(rate):
    with pytest.raises(ValueError, match="rate must be positive"):
        VideoInfo(width=64, height=48, rate=rate)


@pytest.mark.parametrize("rate", [None, Fraction(30000, 1001), Fraction(1, 2)])
def test_video_info_accepts_positive_sizes_and_an_unknown_or_positive_rate(rate):
    info = VideoInfo(width=64, height=48, rate=rate)
    assert info.rate == rate
    assert info.size_wh == (64, 48)  # OpenCV's order, not numpy's
    assert (info.live, info.has_audio, info.frames, info.time_base) == (False, False, None, None)


def test_video_info_is_frozen():
    info = VideoInfo(64, 48)
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.width = 32


# -- Frame --------------------------------------------------------------------------------


@pytest.mark.parametrize("image", BAD_IMAGES.values(), ids=BAD_IMAGES.keys())
def test_frame_rejects_an_image_that_is_not_bgr_uint8(image):
    with pytest.raises(ValueError, match=r"Frame\.image must be BGR uint8"):
        Frame(index=0, timestamp=0.0, image=image)


@pytest.mark.parametrize("index", [-1, -100])
def test_frame_rejects_a_negative_index(index):
    with pytest.raises(ValueError, match="index must be >= 0"):
        Frame(index=index, timestamp=0.0, image=_bgr())


def test_frame_accepts_a_bgr_picture_and_keeps_it_as_given():
    image = _bgr()
    frame = Frame(index=0, timestamp=1.5, image=image, pts=45)
    assert frame.image is image  # no copy on the hand-off
    assert (frame.index, frame.timestamp, frame.pts) == (0, 1.5, 45)
    assert Frame(index=7, timestamp=0.0, image=_bgr(1, 1)).pts is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        frame.index = 1


# -- DepthFrame ---------------------------------------------------------------------------


@pytest.mark.parametrize("image", BAD_IMAGES.values(), ids=BAD_IMAGES.keys())
def test_depth_frame_rejects_an_image_that_is_not_bgr_uint8(image):
    with pytest.raises(ValueError, match=r"DepthFrame\.image must be BGR uint8"):
        DepthFrame(index=0, timestamp=0.0, image=image, depth=_depth(), inference_ms=1.0)


BAD_DEPTHS = {
    "float64": _depth().astype(np.float64),
    "float16": _depth().astype(np.float16),
    "uint8": np.zeros((H, W), np.uint8),
    "transposed": _depth().T.copy(),
    "network size": np.zeros((H + 2, W), np.float32),
    "with a channel axis": _depth()[:, :, None],
    "nested list": _depth().tolist(),
    "None": None,
}


@pytest.mark.parametrize("depth", BAD_DEPTHS.values(), ids=BAD_DEPTHS.keys())
def test_depth_frame_rejects_depth_that_is_not_float32_at_the_picture_size(depth):
    with pytest.raises(ValueError, match=r"DepthFrame\.depth must be float32"):
        DepthFrame(index=0, timestamp=0.0, image=_bgr(), depth=depth, inference_ms=1.0)


@pytest.mark.parametrize(
    "raw_depth",
    [_depth().astype(np.float64), np.zeros((H, W + 1), np.float32), _depth()[None]],
    ids=["float64", "other size", "3-d"],
)
def test_depth_frame_rejects_raw_depth_unlike_depth(raw_depth):
    with pytest.raises(ValueError, match=r"DepthFrame\.raw_depth must be float32"):
        DepthFrame(index=0, timestamp=0.0, image=_bgr(), depth=_depth(), inference_ms=1.0,
                   raw_depth=raw_depth)


def test_depth_frame_without_raw_depth_is_the_networks_own():
    image, depth = _bgr(), _depth()
    frame = DepthFrame(index=3, timestamp=0.1, image=image, depth=depth, inference_ms=12.5)
    assert frame.network_depth is depth
    assert frame.size_wh == (W, H)
    assert (frame.smoothed, frame.raw_depth, frame.pts) == (False, None, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        frame.depth = depth


def test_depth_frame_with_raw_depth_gives_it_as_the_networks_depth():
    smoothed, raw = _depth(), 2.0 * _depth() + 1.0
    frame = DepthFrame(index=0, timestamp=0.0, image=_bgr(), depth=smoothed, inference_ms=1.0,
                       smoothed=True, raw_depth=raw)
    assert frame.depth is smoothed
    assert frame.network_depth is raw


def test_depth_frame_accepts_a_one_pixel_picture():
    frame = DepthFrame(index=0, timestamp=0.0, image=_bgr(1, 1), depth=_depth(1, 1),
                       inference_ms=0.0)
    assert frame.size_wh == (1, 1)
