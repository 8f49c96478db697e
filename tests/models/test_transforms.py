"""Transforms: network size rule, preprocessing details and the output resize."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from stream.core.errors import ConfigError
from stream.models.transforms import (
    network_size,
    preprocess,
    preprocess_array,
    resize_depth,
    to_rgb,
)


@pytest.mark.parametrize(
    ("hw", "expected"),
    [
        ((480, 640), (192, 256)),
        ((360, 640), (128, 256)),  # 144 rounds half to even: 4.5 * 32 -> 128, as the reference
        ((640, 480), (256, 192)),
        ((256, 256), (256, 256)),
        ((1080, 1920), (128, 256)),  # 144 again -> 128
        ((720, 1280), (128, 256)),
        ((48, 64), (192, 256)),  # small pictures are upscaled to fit 256
        ((10, 2000), (32, 256)),  # the reference would give 0 rows; the network needs 32
    ],
)
def test_network_size(hw: tuple[int, int], expected: tuple[int, int]) -> None:
    assert network_size(*hw) == expected


def test_network_size_rejects_empty() -> None:
    with pytest.raises(ConfigError):
        network_size(0, 10)


def test_preprocess_normalises_with_imagenet_stats() -> None:
    rgb = np.full((96, 128, 3), (124, 116, 104), np.uint8)  # ~ImageNet mean
    x = preprocess(rgb)
    assert tuple(x.shape) == (1, 3, 192, 256) and x.dtype == torch.float32
    expected = (np.array([124, 116, 104]) / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    np.testing.assert_allclose(x[0, :, 10, 10].numpy(), expected, atol=1e-5)


def test_preprocess_keeps_channel_order() -> None:
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[..., 0] = 255  # pure red
    x = preprocess_array(rgb)[0]
    assert x[0].mean() > 2.0 and x[1].mean() < -1.5 and x[2].mean() < -1.5


def test_preprocess_rejects_bgr_float() -> None:
    with pytest.raises(ConfigError):
        preprocess_array(np.zeros((10, 10, 3), np.float32))


@pytest.mark.parametrize(
    ("image", "order"),
    [
        (np.full((4, 5), 7, np.uint8), "bgr"),
        (np.full((4, 5, 1), 7, np.uint8), "bgr"),
        (np.dstack([np.full((4, 5), c, np.uint8) for c in (1, 2, 3, 9)]), "bgr"),
        (np.full((4, 5, 3), 7 * 256, np.uint16), "bgr"),
    ],
)
def test_to_rgb_handles_gray_alpha_16bit(image: np.ndarray, order: str) -> None:
    rgb = to_rgb(image, order)
    assert rgb.shape == (4, 5, 3) and rgb.dtype == np.uint8
    if image.ndim == 3 and image.shape[2] == 4:
        assert tuple(rgb[0, 0]) == (3, 2, 1)  # BGRA -> RGB drops alpha, swaps order
    else:
        assert (rgb == 7).all()


def test_resize_depth_bicubic_align_corners_false() -> None:
    net = torch.arange(12, dtype=torch.float32).reshape(1, 3, 4)
    out = resize_depth(net, (6, 8))
    ref = torch.nn.functional.interpolate(net[None], size=(6, 8), mode="bicubic",
                                          align_corners=False)[0, 0].numpy()
    assert out.dtype == np.float32 and out.shape == (6, 8)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5)
    # not bilinear, not align_corners=True
    for kw in ({"mode": "bilinear", "align_corners": False},
               {"mode": "bicubic", "align_corners": True}):
        other = torch.nn.functional.interpolate(net[None], size=(6, 8), **kw)[0, 0].numpy()
        assert np.abs(other - out).max() > 1e-3


def test_resize_depth_same_size_is_a_copy() -> None:
    net = np.random.default_rng(0).random((4, 4), dtype=np.float32)
    out = resize_depth(net, (4, 4))
    np.testing.assert_array_equal(out, net)
    out[0, 0] = -1
    assert net[0, 0] != -1


@pytest.mark.parametrize("banded", [False, True])
def test_a_bgr_frames_rgb_view_gives_the_input_of_the_rgb_picture(monkeypatch, banded) -> None:
    """The pipeline hands frames over as RGB views of BGR (no copy): same input, to 1e-6."""
    import stream.models.transforms as transforms

    if banded:
        monkeypatch.setattr(transforms, "_BANDED_PIXELS", 100)
    rng = np.random.default_rng(4)
    rgb = cv2.resize(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), (320, 240))
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    view = bgr[:, :, ::-1]
    assert view.strides[2] < 0
    got, want = preprocess_array(view), preprocess_array(rgb)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    # Channel 0 is red: brightest where the picture's red is.
    assert np.corrcoef(got[0, 0].ravel(), cv2.resize(rgb, (256, 192))[:, :, 0].ravel())[0, 1] > 0.9
