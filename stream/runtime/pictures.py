"""Pictures: depth for single pictures and folders of pictures (the ``image`` command).

Reads with :mod:`stream.sources.capture`, writes through :mod:`stream.sinks.strips` (each
file whole or absent); starts no threads. A picture's colour range is its own min-max. A
picture of any size costs little more memory than its decoded pixels: only the rows and columns the
network's resize reads are gathered, and the full-size depth is computed, coloured and
written a band of rows at a time, never held whole.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stream.core.errors import ConfigError, SinkError, SourceError
from stream.core.files import check_not_input, check_output_path
from stream.core.settings import RenderSettings
from stream.depth.colormap import colorize, minmax
from stream.engines.estimator import DepthEstimator
from stream.models.registry import MIDAS_SMALL_SPEC
from stream.models.spec import ModelSpec, OutputResize
from stream.models.transforms import linear_corner_taps, resize_depth, scale_offset
from stream.sinks.base import depth_to_u16, metres_to_mm_u16
from stream.sinks.strips import NpyWriter, PngWriter, StripWriter
from stream.sources.capture import find_images, read_image

__all__ = [
    "PictureSettings",
    "PictureResult",
    "render_picture",
    "raw_paths",
    "plan_outputs",
    "run_pictures",
    "network_input",
    "estimate_bands",
    "DepthBands",
]

_CUBIC_A = -0.75  # OpenCV's INTER_CUBIC kernel, the reference's bicubic
_BAND_BYTES = 1 << 24  # rows per band: about 16 MB of float32 depth


@dataclass(frozen=True)
class PictureSettings:
    """How pictures are rendered and what is written next to the colour PNG."""

    cmap: str = "inferno"
    invert: bool = False
    side: bool = False
    raw: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        RenderSettings(cmap=self.cmap, invert=self.invert)  # checks the colormap once


@dataclass(frozen=True)
class PictureResult:
    """One processed picture: where it came from, what was written, its depth range."""

    source: Path
    outputs: tuple[Path, ...]
    lo: float
    hi: float
    inference_ms: float


def render_picture(bgr: np.ndarray, depth: np.ndarray, settings: PictureSettings,
                   metres: bool = False) -> np.ndarray:
    """The colour result: Inferno depth (min-max), or picture and depth side by side.

    Near is warm: relative depth is larger when nearer, ``metres`` smaller.
    """
    lo, hi = minmax(depth)
    colour = colorize(depth, lo, hi, cmap=settings.cmap, invert=settings.invert != metres)
    return np.hstack([bgr, colour]) if settings.side else colour


def raw_paths(colour_png: Path) -> tuple[Path, Path]:
    """Where ``--raw`` writes next to a colour PNG: ``<stem>_depth16.png`` and ``.npy``."""
    stem = colour_png.stem.removesuffix("_depth") + "_depth16"
    return colour_png.with_name(stem + ".png"), colour_png.with_name(stem + ".npy")


def plan_outputs(inputs: list[str | os.PathLike], out: str | os.PathLike | None,
                 overwrite: bool = False, raw: bool = False) -> list[tuple[Path, Path]]:
    """Pair each input picture with its colour PNG path, checking all outputs before any work.

    One picture and ``out`` ending in ``.png``: that file. Otherwise every picture gets
    ``<stem>_depth.png`` in the folder ``out`` (created if missing; the current folder
    without ``out``), so a folder can be its own output folder. With ``raw``,
    ``<stem>_depth16.png`` and ``.npy`` go next to each colour PNG.

    Raises:
        SourceError: missing inputs or empty folders.
        SinkError: an output is one of the inputs (never overwritten, not even with
            ``overwrite``), exists (without ``overwrite``), or two outputs collide.
    """
    pictures = find_images(inputs)
    if out is not None and len(pictures) == 1 and Path(out).suffix.lower() == ".png":
        pairs = [(pictures[0], Path(out))]
    elif out is not None and Path(out).suffix.lower() in (".jpg", ".jpeg", ".bmp", ".webp"):
        raise SinkError(f"output must be a .png file or a folder, got {out}")
    else:
        folder = Path(out) if out is not None else Path.cwd()
        if folder.exists() and not folder.is_dir():
            raise SinkError(f"output is a file, but several pictures need a folder: {folder}")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkError(f"cannot create output folder {folder}: {exc.strerror}") from exc
        pairs = [(p, folder / f"{p.stem}_depth.png") for p in pictures]
    written = [(dst, src) for src, dst in pairs]
    if raw:
        written += [(path, src) for src, dst in pairs for path in raw_paths(dst)]
    check_not_input([dst for dst, _ in written], pictures)
    seen: dict[Path, Path] = {}
    for dst, src in written:
        key = dst.resolve()
        if key in seen:
            raise SinkError(f"{src} and {seen[key]} would both be written to {dst}")
        seen[key] = src
        check_output_path(dst, overwrite=overwrite)
    return pairs


def run_pictures(
    pairs: list[tuple[Path, Path]],
    estimator: DepthEstimator,
    settings: PictureSettings,
    on_error: Callable[[SourceError], None] | None = None,
    on_result: Callable[[PictureResult], None] | None = None,
) -> list[PictureResult]:
    """Estimate and write depth for each ``(picture, output)`` pair.

    A picture that does not decode is passed to ``on_error`` and skipped (the others are
    still written); without ``on_error`` it raises. ``on_result`` hears of each picture
    as soon as its files are in place.
    """
    results = []
    for src, dst in pairs:
        try:
            bgr = read_image(src)
        except SourceError as exc:
            if on_error is None:
                raise
            on_error(exc)
            continue
        bands, ms = estimate_bands(estimator, bgr)
        lo, hi = bands.minmax()
        outputs = _write_outputs(bgr, bands, dst, lo, hi, settings, estimator.spec.metric)
        del bgr, bands  # before the next picture is decoded
        result = PictureResult(src, outputs, lo, hi, ms)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def network_input(bgr: np.ndarray, spec: ModelSpec = MIDAS_SMALL_SPEC,
                  side: int | None = None) -> np.ndarray:
    """The network input of a BGR uint8 picture, without a full-size float copy.

    Equal (to float rounding) to ``preprocess_array(to_rgb(bgr, "bgr"), spec, side)``: the same
    bicubic resize, but only the rows and columns its kernel reads (four per network
    pixel) are gathered and converted to float, so a 100-megapixel picture costs a few
    megabytes here instead of gigabytes.

    Raises:
        ConfigError: not a BGR uint8 ``[H, W, 3]`` picture.
    """
    if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
        raise ConfigError(f"expected a BGR uint8 [H, W, 3] picture, got {bgr.dtype} {bgr.shape}")
    h, w = spec.input.network_size(*bgr.shape[:2], side)
    rows, row_weights = _cubic_taps(bgr.shape[0], h)
    cols, col_weights = _cubic_taps(bgr.shape[1], w)
    picked = bgr[rows.ravel()][:, cols.ravel(), ::-1]  # [4h, 4w, 3] RGB
    rgb = picked.astype(np.float32)
    across = (rgb.reshape(4 * h, w, 4, 3) * col_weights[None, :, :, None]).sum(axis=2)
    resized = (across.reshape(h, 4, w, 3) * row_weights[:, :, None, None]).sum(axis=1)
    scale, offset = scale_offset(spec.input)
    normalized = resized * scale - offset
    return np.ascontiguousarray(normalized.transpose(2, 0, 1))[None]


def estimate_bands(estimator: DepthEstimator, bgr: np.ndarray) -> tuple[DepthBands, float]:
    """``(depth bands, inference_ms)`` for a BGR picture: the network run once.

    ``inference_ms`` covers the network input, the network and the first resize pass,
    as :meth:`DepthEstimator.predict` counts it. An estimator shared between threads
    (with a ``lock``) is used under its lock.
    """
    start = time.perf_counter()
    spec = estimator.spec
    x = network_input(bgr, spec, estimator.input_size)
    lock = getattr(estimator, "lock", None)
    with lock if lock is not None else contextlib.nullcontext():
        out = estimator.backend.infer(x)
    net = resize_depth(out, x.shape[2:])  # [h, w] float32 numpy, whatever the backend gave
    bands = DepthBands(net, bgr.shape[:2], spec.resize)
    return bands, (time.perf_counter() - start) * 1000.0


class DepthBands:
    """The network's depth resized to the picture's size, one band of rows at a time.

    Equal (to float rounding) to ``resize_depth(net, size_hw, resize)``: the resize along
    the rows first, then the same kernel down the columns for each band (bicubic as
    OpenCV's, or bilinear with corners aligned). Iterate for float32 bands ``[n, W]``,
    top to bottom; iterate again to recompute them.

    Args:
        net: the network's depth ``[h, w]``.
        size_hw: the picture's ``(height, width)``.
        resize: the network's output resize (its spec's).
    """

    def __init__(self, net: np.ndarray, size_hw: tuple[int, int],
                 resize: OutputResize = OutputResize.CUBIC) -> None:
        self.height, self.width = (int(v) for v in size_hw)
        net = np.asarray(net, dtype=np.float32)
        self._across = resize_depth(net, (net.shape[0], self.width), resize)
        if resize is OutputResize.LINEAR_CORNERS:
            self._rows, self._weights = _linear_corner_taps(net.shape[0], self.height)
        else:
            self._rows, self._weights = _cubic_taps(net.shape[0], self.height)
        self.band_rows = max(1, _BAND_BYTES // (4 * self.width))

    def __iter__(self) -> Iterator[np.ndarray]:
        for top in range(0, self.height, self.band_rows):
            rows = self._rows[top:top + self.band_rows]
            weights = self._weights[top:top + self.band_rows]
            band = self._across[rows[:, 0]] * weights[:, :1]
            for k in range(1, rows.shape[1]):
                band += self._across[rows[:, k]] * weights[:, k:k + 1]
            yield band

    def minmax(self) -> tuple[float, float]:
        """Finite min and max of the whole depth (as :func:`stream.depth.colormap.minmax`)."""
        lo, hi = np.inf, -np.inf
        for band in self:
            finite = band if np.isfinite(band).all() else band[np.isfinite(band)]
            if finite.size:
                lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
        return (lo, hi) if lo <= hi else (0.0, 1.0)

    def to_array(self) -> np.ndarray:
        """The whole depth ``[H, W]`` float32 (for small pictures and tests)."""
        return np.concatenate(list(self), axis=0)


def _cubic_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices and weights ``[dst, 4]`` of OpenCV's INTER_CUBIC along one axis.

    The same pixel-centre mapping, kernel (a = -0.75) and edge replication as
    ``cv2.resize``, so resampling with them equals it to float rounding.
    """
    scale = 1.0 / (dst / src)  # as OpenCV computes it
    position = ((np.arange(dst) + 0.5) * scale - 0.5).astype(np.float32)
    first = np.floor(position)
    x = position - first
    a = np.float32(_CUBIC_A)
    weights = np.empty((dst, 4), np.float32)
    weights[:, 0] = ((a * (x + 1) - 5 * a) * (x + 1) + 8 * a) * (x + 1) - 4 * a
    weights[:, 1] = ((a + 2) * x - (a + 3)) * x * x + 1
    weights[:, 2] = ((a + 2) * (1 - x) - (a + 3)) * (1 - x) * (1 - x) + 1
    weights[:, 3] = 1 - weights[:, 0] - weights[:, 1] - weights[:, 2]
    index = np.clip(first.astype(np.int64)[:, None] + np.arange(-1, 3), 0, src - 1)
    return index, weights


def _linear_corner_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices and weights ``[dst, 2]`` of a bilinear resize with corners aligned."""
    lo, hi, weight = linear_corner_taps(src, dst)
    return np.stack([lo, hi], axis=1), np.stack([1 - weight, weight], axis=1)


def _write_outputs(bgr: np.ndarray, bands: DepthBands, dst: Path, lo: float, hi: float,
                   settings: PictureSettings, metres: bool = False) -> tuple[Path, ...]:
    """Colour PNG (and with ``raw`` the 16-bit PNG and float32 .npy), band by band.

    ``metres``: the depth is in metres (near is warm: small), and the 16-bit PNG holds
    millimetres; relative depth's PNG maps ``lo..hi`` to 0..65535.
    """
    height, width = bgr.shape[:2]
    colour_wh = (2 * width if settings.side else width, height)
    writers: list[StripWriter] = []
    try:
        writers.append(PngWriter(dst, colour_wh))
        if settings.raw:
            png, npy = raw_paths(dst)
            writers.append(PngWriter(png, (width, height), channels=1, bit_depth=16))
            writers.append(NpyWriter(npy, (width, height)))
        top = 0
        for band in bands:
            colour = colorize(band, lo, hi, cmap=settings.cmap,
                              invert=settings.invert != metres)
            if settings.side:
                colour = np.hstack([bgr[top:top + band.shape[0]], colour])
            writers[0].write(colour)
            if settings.raw:
                writers[1].write(metres_to_mm_u16(band) if metres
                                 else depth_to_u16(band, lo, hi))
                writers[2].write(band)
            top += band.shape[0]
        return tuple(writer.close() for writer in writers)
    except BaseException:
        for writer in writers:
            writer.discard()
        raise
