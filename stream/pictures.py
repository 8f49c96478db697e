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
from .files import check_output_path
from .inference import DepthEstimator
from .settings import RenderSettings
from .sinks import write_depth_raw, write_image
from .sources import find_images, read_image
from .transforms import to_rgb

__all__ = ["PictureSettings", "PictureResult", "render_picture", "plan_outputs", "run_pictures"]


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


def plan_outputs(inputs: list[str | os.PathLike], out: str | os.PathLike | None,
                 overwrite: bool = False) -> list[tuple[Path, Path]]:
    """Pair each input picture with its colour PNG path, checking both before any work.

    One picture and ``out`` ending in an image extension: that file. Otherwise ``out`` is a
    folder (created if missing) holding ``<stem>.png`` per picture; no ``out``: the
    current folder, ``<stem>_depth.png``.

    Raises:
        SourceError: missing inputs or empty folders.
        SinkError: outputs that exist (without ``overwrite``) or collide.
    """
    pictures = find_images(inputs)
    if out is not None and len(pictures) == 1 and Path(out).suffix.lower() == ".png":
        pairs = [(pictures[0], Path(out))]
    elif out is not None and Path(out).suffix.lower() in (".jpg", ".jpeg", ".bmp", ".webp"):
        raise SinkError(f"output must be a .png file or a folder, got {out}")
    else:
        folder = Path(out) if out is not None else Path.cwd()
        suffix = ".png" if out is not None else "_depth.png"
        if folder.exists() and not folder.is_dir():
            raise SinkError(f"output is a file, but several pictures need a folder: {folder}")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkError(f"cannot create output folder {folder}: {exc.strerror}") from exc
        pairs = [(p, folder / f"{p.stem}{suffix}") for p in pictures]
    seen: dict[Path, Path] = {}
    for src, dst in pairs:
        if dst in seen:
            raise SinkError(f"{src} and {seen[dst]} would both be written to {dst}")
        seen[dst] = src
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
            stem = dst.with_name(dst.stem.removesuffix("_depth") + "_depth16")
            written += write_depth_raw(stem, depth, lo, hi, npy=True)
        results.append(PictureResult(src, tuple(written), lo, hi, ms))
    return results
