"""Pictures: depth for single pictures and folders of pictures (the ``image`` command).

Reads with :mod:`stream.sources`, writes with :mod:`stream.sinks`; a picture's colour
range is its own min-max.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .colormap import colorize, minmax
from .errors import SinkError, SourceError
from .files import check_not_input, check_output_path
from .inference import DepthEstimator
from .settings import RenderSettings
from .sinks import write_depth_raw, write_image
from .sources import find_images, read_image
from .transforms import to_rgb

__all__ = [
    "PictureSettings",
    "PictureResult",
    "render_picture",
    "raw_stem",
    "plan_outputs",
    "run_pictures",
]


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


def render_picture(bgr: np.ndarray, depth: np.ndarray, settings: PictureSettings) -> np.ndarray:
    """The colour result: Inferno depth (min-max), or picture and depth side by side."""
    lo, hi = minmax(depth)
    colour = colorize(depth, lo, hi, cmap=settings.cmap, invert=settings.invert)
    return np.hstack([bgr, colour]) if settings.side else colour


def raw_stem(colour_png: Path) -> Path:
    """Where ``--raw`` writes next to a colour PNG: ``<stem>_depth16`` (+ ``.png``/``.npy``)."""
    return colour_png.with_name(colour_png.stem.removesuffix("_depth") + "_depth16")


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
        written += [(raw_stem(dst).with_suffix(ext), src)
                    for src, dst in pairs for ext in (".png", ".npy")]
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
) -> list[PictureResult]:
    """Estimate and write depth for each ``(picture, output)`` pair.

    A picture that does not decode is passed to ``on_error`` and skipped (the others are
    still written); without ``on_error`` it raises.
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
        depth, ms = estimator.predict(to_rgb(bgr, "bgr"))
        lo, hi = minmax(depth)
        written = [write_image(dst, render_picture(bgr, depth, settings))]
        if settings.raw:
            written += write_depth_raw(raw_stem(dst), depth, lo, hi, npy=True)
        results.append(PictureResult(src, tuple(written), lo, hi, ms))
    return results
