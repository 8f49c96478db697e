"""Render: how a :class:`~stream.core.records.DepthFrame` becomes a BGR picture.

Pure array code on top of :mod:`stream.depth.colormap`; starts no threads, touches no files.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from stream.core.records import DepthFrame
from stream.core.settings import Layout, RenderSettings
from stream.depth.colormap import colorize

__all__ = ["Renderer"]


@dataclass(frozen=True)
class Renderer(RenderSettings):
    """:class:`RenderSettings` that can draw: colours from the frame's ``lo``/``hi`` range.

    Example:
        >>> Renderer("side").size_wh((640, 480))
        (1280, 480)
    """

    @classmethod
    def from_settings(cls, settings: RenderSettings) -> Renderer:
        """The renderer for ``settings``."""
        if isinstance(settings, Renderer):
            return settings
        return cls(**asdict(settings))

    def size_wh(self, size_wh: tuple[int, int]) -> tuple[int, int]:
        """Size of the rendered picture for frames of ``size_wh``."""
        width, height = size_wh
        return (2 * width if self.layout is Layout.SIDE else width), height

    def render(self, frame: DepthFrame) -> np.ndarray:
        """The picture to show or encode: BGR uint8, :meth:`size_wh` of the frame."""
        return self.render_rows(frame, 0, frame.image.shape[0])

    def render_rows(self, frame: DepthFrame, top: int, bottom: int) -> np.ndarray:
        """Rows ``top:bottom`` of :meth:`render`'s picture, made without the others.

        Large frames are rendered band by band, so no full-size temporary is needed.
        """
        image = frame.image[top:bottom]
        # Near is warm: relative depth is larger when nearer, metres smaller.
        colour = colorize(frame.depth[top:bottom], frame.lo, frame.hi, cmap=self.cmap,
                          invert=self.invert != frame.metric)
        if self.layout is Layout.SIDE:
            return np.hstack([image, colour])
        if self.layout is Layout.OVERLAY:
            return cv2.addWeighted(image, 1.0 - self.alpha, colour, self.alpha, 0.0)
        return colour
