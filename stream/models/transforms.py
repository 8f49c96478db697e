"""Transforms: a network's official preprocessing and output resize, read from its spec.

Pure array-to-array functions; starts no threads, touches no files. ``preprocess``
equals the reference transform of the spec's :class:`~stream.models.spec.InputRule`:
RGB / 255 as float, a keep-aspect resize (MiDaS small: both sides fit in 256, multiples
of 32; Depth Anything V2: both sides at least 518, multiples of 14), bicubic on the float
picture, mean/std, HWC -> NCHW. :func:`resize_depth` resizes the output back the way the
spec's reference does (bicubic, or bilinear with aligned corners). Every function
defaults to MiDaS small. torch is imported only by :func:`preprocess`, so modules that
need :func:`to_rgb` alone stay light.
"""

from __future__ import annotations

import functools
import sys
from typing import TYPE_CHECKING

import cv2
import numpy as np

from stream.core.errors import ConfigError
from stream.models.registry import MIDAS_SMALL_SPEC
from stream.models.spec import InputRule, ModelSpec, OutputResize

if TYPE_CHECKING:
    import torch

__all__ = [
    "NET_SIDE",
    "MULTIPLE_OF",
    "MEAN_RGB",
    "STD_RGB",
    "linear_corner_taps",
    "network_size",
    "normalize",
    "scale_offset",
    "preprocess",
    "preprocess_array",
    "resize_depth",
    "to_rgb",
]

_MIDAS = MIDAS_SMALL_SPEC.input
#: MiDaS small's input rule, as numbers (kept for scripts that import them).
NET_SIDE = _MIDAS.side
MULTIPLE_OF = _MIDAS.multiple_of
MEAN_RGB = np.array(_MIDAS.mean_rgb, dtype=np.float32)
STD_RGB = np.array(_MIDAS.std_rgb, dtype=np.float32)


@functools.lru_cache(maxsize=8)
def scale_offset(rule: InputRule = _MIDAS) -> tuple[np.ndarray, np.ndarray]:
    """``(x / 255 - mean) / std`` as ``x * scale - offset``, per channel (float32).

    Applied after the resize, which is linear, so scaling before or after it is the same
    to float rounding. Made once per rule (every frame asks); read-only.
    """
    mean = np.array(rule.mean_rgb, dtype=np.float32)
    std = np.array(rule.std_rgb, dtype=np.float32)
    scale, offset = (1.0 / (255.0 * std)).astype(np.float32), (mean / std).astype(np.float32)
    scale.setflags(write=False)
    offset.setflags(write=False)
    return scale, offset


def network_size(height: int, width: int, side: int | None = None,
                 rule: InputRule = _MIDAS) -> tuple[int, int]:
    """Network input size ``(h, w)`` for a picture of ``height x width``.

    MiDaS small by default: both sides fit in ``side`` (256) and are multiples of 32,
    keeping the aspect ratio as closely as that allows ("upper_bound" rule of the
    reference); see :meth:`stream.models.spec.InputRule.network_size`.

    Example:
        >>> network_size(480, 640)
        (192, 256)
    """
    return rule.network_size(height, width, side)


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


def normalize(rgb: np.ndarray, size_hw: tuple[int, int],
              rule: InputRule = _MIDAS) -> np.ndarray:
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
        dtype = np.float64 if rule.float64 else np.float32
        img = cv2.resize(picture.astype(dtype), (w, h), interpolation=cv2.INTER_CUBIC)
    else:
        img = _resize_banded(picture, (h, w))
    scale, offset = scale_offset(rule)
    out = np.empty((3, h, w), np.float32)
    for c in range(3):
        np.multiply(img[:, :, 2 - c if reversed_view else c], scale[c], out=out[c])
        out[c] -= offset[c]
    return out


def preprocess_array(rgb: np.ndarray, spec: ModelSpec = MIDAS_SMALL_SPEC,
                     side: int | None = None) -> np.ndarray:
    """Float32 ``[1, 3, h, w]`` numpy network input for an RGB uint8 ``[H, W, 3]`` picture.

    Args:
        rgb: the picture.
        spec: the network whose input rule applies (default MiDaS small).
        side: the input side instead of the spec's default (``--input-size``).
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ConfigError(f"expected an RGB uint8 [H, W, 3] picture, got {rgb.dtype} {rgb.shape}")
    rule = spec.input
    return normalize(rgb, rule.network_size(*rgb.shape[:2], side), rule)[None]


def preprocess(rgb: np.ndarray, spec: ModelSpec = MIDAS_SMALL_SPEC,
               side: int | None = None) -> torch.Tensor:
    """Float32 ``[1, 3, h, w]`` tensor: the official transform of an RGB uint8 picture."""
    import torch

    return torch.from_numpy(preprocess_array(rgb, spec, side))


@functools.lru_cache(maxsize=32)
def linear_corner_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower source index, upper index and upper weight of a 1-d align-corners resize.

    Positions are computed in float32 as torch computes them (float64 positions differ
    from torch's output by up to about 1e-5 of the range). Read-only, cached.
    """
    scale = np.float32(n_in - 1) / np.float32(n_out - 1) if n_out > 1 else np.float32(0.0)
    src = np.arange(n_out, dtype=np.float32) * scale
    lo = np.minimum(np.floor(src).astype(np.intp), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    weight = np.clip(src - lo.astype(np.float32), 0.0, 1.0).astype(np.float32)
    for a in (lo, hi, weight):
        a.setflags(write=False)
    return lo, hi, weight


def _resize_linear_corners(a: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize with corners aligned (``align_corners=True``), rows then columns."""
    lo, hi, wy = linear_corner_taps(a.shape[0], size_hw[0])
    rows = a[lo] * (1.0 - wy)[:, None] + a[hi] * wy[:, None]
    lo, hi, wx = linear_corner_taps(a.shape[1], size_hw[1])
    return np.ascontiguousarray(rows[:, lo] * (1.0 - wx) + rows[:, hi] * wx, dtype=np.float32)


def resize_depth(net: torch.Tensor | np.ndarray, size_hw: tuple[int, int],
                 resize: OutputResize = OutputResize.CUBIC) -> np.ndarray:
    """Resize network output ``[h, w]`` / ``[1, h, w]`` to ``size_hw`` as float32.

    ``OutputResize.CUBIC`` (MiDaS): equal (within the tolerances of
    ``tests/models/test_transforms.py`` and the golden test in ``tests/models/test_midas.py``)
    to the reference's ``F.interpolate(mode="bicubic", align_corners=False)``: OpenCV's
    INTER_CUBIC uses the same kernel (a = -0.75) and pixel-centre mapping, and is much
    cheaper than torch's, which would also compete for the threads the network needs.
    Bicubic overshoot is kept (not clipped). ``OutputResize.LINEAR_CORNERS`` (Depth
    Anything): ``F.interpolate(mode="bilinear", align_corners=True)``, computed in numpy.
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
    if resize is OutputResize.LINEAR_CORNERS:
        return _resize_linear_corners(a, (h, w))
    return cv2.resize(a, (w, h), interpolation=cv2.INTER_CUBIC)
