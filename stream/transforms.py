"""Transforms: the official MiDaS small preprocessing and the output resize.

Pure array-to-array functions; starts no threads, touches no files. ``preprocess``
equals the reference "small" transform: RGB / 255 as float, a keep-aspect resize so both
sides fit in 256 and are multiples of 32 (bicubic, on the float picture), ImageNet
mean/std, HWC -> NCHW. torch is imported only by :func:`preprocess`, so modules that
need :func:`to_rgb` alone stay light.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import cv2
import numpy as np

from .errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = [
    "NET_SIDE",
    "MULTIPLE_OF",
    "MEAN_RGB",
    "STD_RGB",
    "network_size",
    "normalize",
    "preprocess",
    "preprocess_array",
    "resize_depth",
    "to_rgb",
]

NET_SIDE = 256
MULTIPLE_OF = 32
MEAN_RGB = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD_RGB = np.array([0.229, 0.224, 0.225], dtype=np.float32)
# ``(x / 255 - mean) / std`` as ``x * _SCALE - _OFFSET``, applied after the resize (which is
# linear, so scaling before or after it is the same to float rounding).
_SCALE = (1.0 / (255.0 * STD_RGB)).astype(np.float32)
_OFFSET = (MEAN_RGB / STD_RGB).astype(np.float32)


def _multiple_of(x: float, max_val: int) -> int:
    # np.round rounds half to even, as the reference does (360x640 -> 128, not 160).
    y = int(np.round(x / MULTIPLE_OF) * MULTIPLE_OF)
    if y > max_val:
        y = int(np.floor(x / MULTIPLE_OF) * MULTIPLE_OF)
    # The reference allows 0 for very thin pictures; the network needs at least 32.
    return max(y, MULTIPLE_OF)


def network_size(height: int, width: int, side: int = NET_SIDE) -> tuple[int, int]:
    """Network input size ``(h, w)`` for a picture of ``height x width``.

    Both sides fit in ``side`` (256) and are multiples of 32, keeping the aspect ratio as
    closely as that allows ("upper_bound" rule of the reference).

    Example:
        >>> network_size(480, 640)
        (192, 256)
    """
    if height <= 0 or width <= 0:
        raise ConfigError(f"picture size must be positive, got {height}x{width}")
    scale = min(side / height, side / width)
    return _multiple_of(scale * height, side), _multiple_of(scale * width, side)


def to_rgb(image: np.ndarray, order: str = "bgr") -> np.ndarray:
    """Return an RGB uint8 ``[H, W, 3]`` copy of a gray, BGR(A)/RGB(A) or 16-bit picture."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ConfigError(f"pictures must be uint8 or uint16, got {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ConfigError(f"expected an [H, W, 3] picture, got shape {image.shape}")
    channels = image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if order == "bgr":
        code = cv2.COLOR_BGRA2RGB if channels == 4 else cv2.COLOR_BGR2RGB
        return cv2.cvtColor(image, code)
    return np.ascontiguousarray(image[:, :, :3])


_BANDED_PIXELS = 4096 * 4096
_BAND_ROWS = 256


def _resize_banded(rgb: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """The float (0..255) bicubic resize of a large uint8 picture without a full-size float copy.

    OpenCV's cubic resize is separable: the columns are resized band by band of rows (a
    band's float copy is small; the row scale of one leaves the rows as they are), then
    the narrow result is resized down the rows. Equal to the one-step resize to float
    rounding.
    """
    h, w = size_hw
    narrow = np.empty((rgb.shape[0], w, 3), np.float32)
    for top in range(0, rgb.shape[0], _BAND_ROWS):
        band = rgb[top:top + _BAND_ROWS].astype(np.float32)
        narrow[top:top + band.shape[0]] = cv2.resize(band, (w, band.shape[0]),
                                                     interpolation=cv2.INTER_CUBIC)
    return cv2.resize(narrow, (w, h), interpolation=cv2.INTER_CUBIC)


def normalize(rgb: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Float32 ``[3, h, w]`` network input from an RGB uint8 picture, resized to ``size_hw``.

    ``rgb`` may be a BGR picture's RGB view (``bgr[:, :, ::-1]``): it is then resized as
    the BGR picture it is (contiguous, so much faster) and its channels are taken in
    reverse on the small result.
    """
    h, w = size_hw
    reversed_view = rgb.strides[2] < 0
    picture = rgb[:, :, ::-1] if reversed_view else rgb
    # Resize the float picture, not the uint8 one: uint8 rounding and clipping of the
    # bicubic overshoot move the result visibly away from the reference.
    if picture.shape[0] * picture.shape[1] <= _BANDED_PIXELS:
        img = cv2.resize(picture.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    else:
        img = _resize_banded(picture, (h, w))
    out = np.empty((3, h, w), np.float32)
    for c in range(3):
        np.multiply(img[:, :, 2 - c if reversed_view else c], _SCALE[c], out=out[c])
        out[c] -= _OFFSET[c]
    return out


def preprocess_array(rgb: np.ndarray) -> np.ndarray:
    """Float32 ``[1, 3, h, w]`` numpy network input for an RGB uint8 ``[H, W, 3]`` picture."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ConfigError(f"expected an RGB uint8 [H, W, 3] picture, got {rgb.dtype} {rgb.shape}")
    return normalize(rgb, network_size(*rgb.shape[:2]))[None]


def preprocess(rgb: np.ndarray) -> torch.Tensor:
    """Float32 ``[1, 3, h, w]`` tensor: the official small transform of an RGB uint8 picture."""
    import torch

    return torch.from_numpy(preprocess_array(rgb))


def resize_depth(net: torch.Tensor | np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Resize network output ``[h, w]`` / ``[1, h, w]`` to ``size_hw``: float32, bicubic.

    Equal (within the tolerances of ``tests/test_transforms.py`` and the golden test in
    ``tests/test_model.py``) to the reference's
    ``F.interpolate(mode="bicubic", align_corners=False)``: OpenCV's INTER_CUBIC uses the
    same kernel (a = -0.75) and pixel-centre mapping, and is much cheaper than torch's,
    which would also compete for the threads the network needs. Bicubic overshoot is kept
    (not clipped).
    """
    # Without torch imported, ``net`` cannot be a tensor: no need to import it here.
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(net, torch.Tensor):
        a = net.detach().cpu().numpy()
    else:
        a = np.asarray(net)
    a = a.astype(np.float32, copy=False)
    while a.ndim > 2:
        if a.shape[0] != 1:
            raise ConfigError(f"expected one depth map, got shape {a.shape}")
        a = a[0]
    h, w = size_hw
    if a.shape == (h, w):
        return a.copy()
    return cv2.resize(a, (w, h), interpolation=cv2.INTER_CUBIC)
