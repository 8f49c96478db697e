"""Sources: everything that reads pictures, video files, cameras and stream URLs.

Only this module (and :mod:`stream.sinks`) touches files, devices and PyAV.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .errors import SourceError

__all__ = ["IMAGE_EXTENSIONS", "read_image", "find_images"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a picture as BGR uint8 ``[H, W, 3]`` (gray, alpha and 16-bit pictures too).

    EXIF orientation is applied, as a photo viewer shows it.

    Raises:
        SourceError: the file is missing or does not decode as a picture.
    """
    path = Path(path)
    if not path.exists():
        raise SourceError(f"no such file: {path}")
    if not path.is_file():
        raise SourceError(f"not a file: {path}")
    # imdecode(fromfile) rather than imread: works with non-ASCII paths on every OS.
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise SourceError(f"cannot read {path} as a picture (supported: "
                          f"{', '.join(e.lstrip('.') for e in IMAGE_EXTENSIONS)})")
    return image


def find_images(inputs: list[str | os.PathLike]) -> list[Path]:
    """Expand files and folders (pictures directly inside, sorted by name) into picture paths.

    Raises:
        SourceError: an input is missing, or a folder holds no pictures.
    """
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            pictures = sorted(p for p in item.iterdir()
                              if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not pictures:
                raise SourceError(f"no pictures in folder {item}")
            found.extend(pictures)
        elif item.exists():
            found.append(item)
        else:
            raise SourceError(f"no such file or folder: {item}")
    return found
