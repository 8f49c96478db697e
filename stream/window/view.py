"""Window view: what the live window shows (picture, status line, help, probe) and its state.

Pure drawing on arrays (OpenCV's drawing functions, no window): the window thread
(:mod:`stream.window.sink`) owns one :class:`WindowView`, feeds it frames, keys and clicks,
and shows :meth:`WindowView.compose`'s picture. Starts no threads, touches no files.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import cv2
import numpy as np

from stream.core.records import DepthFrame
from stream.core.settings import COLORMAP_NAMES, Layout
from stream.depth.render import Renderer
from stream.window.keys import key_help

__all__ = ["MIN_WIDTH", "MIN_HEIGHT", "WindowView"]

MIN_WIDTH = 640
"""Pictures narrower than this are shown enlarged by a whole factor (nearest neighbour)."""

MIN_HEIGHT = 360
"""... and pictures lower than this (room for the list of keys)."""

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_WHITE, _BLACK, _RED = (255, 255, 255), (0, 0, 0), (0, 0, 255)
_MESSAGE_S = 2.0  # how long a key's confirmation stays on screen


def _text_box(image: np.ndarray, lines: list[str], origin: tuple[int, int], scale: float,
              alpha: float = 1.0, colour: tuple[int, int, int] = _WHITE) -> None:
    """Draw ``lines`` on a dark box whose top-left corner is ``origin``.

    The box is kept inside the picture, its text made smaller when it would not fit.
    """
    height, width = image.shape[:2]
    for _ in range(2):
        sizes = [cv2.getTextSize(line, _FONT, scale, 1) for line in lines]
        line_h = max(h + base for (_, h), base in sizes) + 4
        box_w = max(w for (w, _), _ in sizes) + 12
        box_h = line_h * len(lines) + 6
        fit = min(1.0, (width - 2) / box_w, (height - 2) / box_h)
        if fit >= 1.0:
            break
        scale *= fit * 0.95
    x0 = max(0, min(origin[0], width - box_w))
    y0 = max(0, min(origin[1], height - box_h))
    x1, y1 = min(width, x0 + box_w), min(height, y0 + box_h)
    region = image[y0:y1, x0:x1]
    if alpha >= 1.0:
        region[:] = _BLACK
    else:
        region[:] = (region * (1.0 - alpha)).astype(np.uint8)
    for row, line in enumerate(lines):
        baseline = y0 + 3 + line_h * row + sizes[row][0][1] + 2
        cv2.putText(image, line, (x0 + 6, baseline), _FONT, scale, colour, 1, cv2.LINE_AA)


class WindowView:
    """The live window's state and picture; used on the window thread only.

    Args:
        renderer: the layout and colours to start with (keys change them).
        size_wh: the source's frame size (for the picture before the first frame).
        dropped: returns the frames dropped so far (for the status line).
        smoothing: returns the smoothing strength to show, or ``None`` when none is known.
    """

    def __init__(self, renderer: Renderer, size_wh: tuple[int, int],
                 dropped: Callable[[], int] = lambda: 0,
                 smoothing: Callable[[], float | None] = lambda: None) -> None:
        self.renderer = renderer
        self.size_wh = size_wh
        self.frame: DepthFrame | None = None
        self.paused = False
        self.hud = True
        self.help = False
        self.recording_since: float | None = None  # monotonic start of a recording
        self.probe: tuple[int, int] | None = None  # (x, y) in frame pixels
        self.pointer: tuple[int, int] | None = None  # the mouse, in frame pixels
        self._dropped = dropped
        self._smoothing = smoothing
        self._message: tuple[str, float] | None = None
        self._dirty = True
        self._factor = 1
        self._fps = 0.0
        self._inference_ms = 0.0
        self._last_frame_at: float | None = None

    # -- state -----------------------------------------------------------------

    @property
    def dirty(self) -> bool:
        """The picture changed since the last :meth:`compose` (or a message expired)."""
        if self._message is not None and time.monotonic() > self._message[1]:
            self._message = None
            self._dirty = True
        return self._dirty

    def touch(self) -> None:
        """Ask for a new :meth:`compose` (something drawn changed)."""
        self._dirty = True

    def show(self, frame: DepthFrame) -> bool:
        """Take ``frame`` as the picture; ignored (False) while paused."""
        if self.paused:
            return False
        now = time.monotonic()
        if self._last_frame_at is not None and now > self._last_frame_at:
            rate = 1.0 / (now - self._last_frame_at)
            self._fps = rate if self._fps == 0 else 0.9 * self._fps + 0.1 * rate
        self._last_frame_at = now
        self._inference_ms = (frame.inference_ms if self._inference_ms == 0
                              else 0.9 * self._inference_ms + 0.1 * frame.inference_ms)
        self.frame = frame
        self._dirty = True
        return True

    def flash(self, text: str, seconds: float = _MESSAGE_S) -> None:
        """Show ``text`` for a moment (a key's confirmation)."""
        self._message = (text, time.monotonic() + seconds)
        self._dirty = True

    def toggle(self, name: str) -> bool:
        """Flip the flag ``paused``, ``hud`` or ``help``; return its new value."""
        value = not getattr(self, name)
        setattr(self, name, value)
        if name == "paused":
            self._last_frame_at = None  # the pause is not a slow frame
        self._dirty = True
        return value

    def cycle_layout(self) -> Layout:
        """The next layout (depth, side, overlay)."""
        layouts = list(Layout)
        layout = layouts[(layouts.index(self.renderer.layout) + 1) % len(layouts)]
        self._set_renderer(layout=layout)
        return layout

    def cycle_colormap(self) -> str:
        """The next colormap of :data:`~stream.core.settings.COLORMAP_NAMES`."""
        names = list(COLORMAP_NAMES)
        cmap = names[(names.index(self.renderer.cmap) + 1) % len(names)]
        self._set_renderer(cmap=cmap)
        return cmap

    def invert(self) -> bool:
        """Swap near dark / near bright; return the new ``invert``."""
        self._set_renderer(invert=not self.renderer.invert)
        return self.renderer.invert

    def _set_renderer(self, **changes: object) -> None:
        self.renderer = dataclasses.replace(self.renderer, **changes)
        self._dirty = True

    # -- probe -----------------------------------------------------------------

    def _frame_pixel(self, x: int, y: int) -> tuple[int, int] | None:
        """The frame pixel under ``(x, y)`` of the composed picture (either half of side)."""
        if self.frame is None:
            return None
        width, height = self.frame.size_wh
        fx, fy = x // self._factor, y // self._factor
        if self.renderer.layout is Layout.SIDE:
            fx %= width
        return min(max(fx, 0), width - 1), min(max(fy, 0), height - 1)

    def click(self, x: int, y: int) -> tuple[int, int] | None:
        """Probe (pin) the frame pixel under ``(x, y)`` of the composed picture.

        Either half of the side-by-side layout probes the same pixel.

        Returns:
            The pixel ``(x, y)`` in the frame, or ``None`` before the first frame.
        """
        self.probe = self._frame_pixel(x, y)
        self._dirty = True
        return self.probe

    def hover(self, x: int, y: int) -> tuple[int, int] | None:
        """The mouse moved to ``(x, y)``: the status line shows the depth under it."""
        pointer = self._frame_pixel(x, y)
        if pointer != self.pointer:
            self.pointer = pointer
            self._dirty = True
        return pointer

    def clear_probe(self) -> None:
        """Stop showing a probed value."""
        self.probe = None
        self._dirty = True

    def probe_text(self, pixel: tuple[int, int] | None = None) -> str | None:
        """The value at ``pixel`` (default: the probe), or ``None`` when there is none.

        Metres for a metric model; else relative depth, its place in the colour range,
        and metres when the frame carries a metric fit (``--known-distance``).
        """
        pixel = self.probe if pixel is None else pixel
        if pixel is None or self.frame is None:
            return None
        frame = self.frame
        x, y = pixel
        if x >= frame.size_wh[0] or y >= frame.size_wh[1]:
            return None  # a probe from frames of another size
        value = float(frame.depth[y, x])
        if getattr(frame, "metric", False):
            return f"{value:.2f} m" if np.isfinite(value) and value > 0 else "no depth"
        span = frame.hi - frame.lo
        share = 100.0 * (value - frame.lo) / span if span > 0 else 0.0
        text = f"rel {value:.3g} ({min(max(share, 0.0), 100.0):.0f}% near)"
        metric = getattr(getattr(frame, "camera", None), "metric", None)
        if metric is not None:
            metres = float(metric.to_metres(np.array([[value]], np.float32))[0, 0])
            text = f"{metres:.2f} m, {text}"
        return text

    # -- picture ---------------------------------------------------------------

    def compose(self) -> np.ndarray:
        """The picture to show now.

        The frame in the current layout, enlarged below :data:`MIN_WIDTH` x
        :data:`MIN_HEIGHT`, with the status line, probe, messages and help drawn on.
        """
        self._dirty = False
        if self.frame is None:
            width, height = self.renderer.size_wh(self.size_wh)
            image = np.full((height, width, 3), 32, np.uint8)
        else:
            image = np.ascontiguousarray(self.renderer.render(self.frame))
        self._factor = max(1, -(-MIN_WIDTH // image.shape[1]), -(-MIN_HEIGHT // image.shape[0]))
        if self._factor > 1:
            image = cv2.resize(image, None, fx=self._factor, fy=self._factor,
                               interpolation=cv2.INTER_NEAREST)
        if self.frame is None:
            _text_box(image, ["waiting for the first frame..."], (10, image.shape[0] // 2), 0.6)
        self._draw_probe(image)
        if self.hud:
            _text_box(image, [self._status()], (0, 0), 0.5)
        if self.recording_since is not None:
            seconds = int(time.monotonic() - self.recording_since)
            _text_box(image, [f"REC {seconds // 60:02d}:{seconds % 60:02d}"],
                      (image.shape[1], 0), 0.5, colour=_RED)
        if self._message is not None:
            _text_box(image, [self._message[0]], (0, image.shape[0]), 0.6)
        if self.help:
            _text_box(image, key_help(), (20, 40), 0.45, alpha=0.75)
        return image

    def _status(self) -> str:
        parts = [f"{self._fps:4.1f} fps", f"inference {self._inference_ms:4.0f} ms",
                 f"dropped {self._dropped()}"]
        strength = self._smoothing()
        if strength is not None:
            parts.append(f"smooth {strength:.1f}")
        under = self.probe_text(self.pointer) if self.pointer is not None else None
        if under is not None:
            parts.append(f"pointer {under}")
        if self.paused:
            parts.append("PAUSED")
        parts.append("h: keys")
        return "   ".join(parts)

    def _draw_probe(self, image: np.ndarray) -> None:
        text = self.probe_text()
        if text is None or self.frame is None or self.probe is None:
            return
        f = self._factor
        x, y = self.probe
        cx, cy = x * f + f // 2, y * f + f // 2
        if self.renderer.layout is Layout.SIDE:
            cx += self.frame.size_wh[0] * f  # on the depth half
        cv2.drawMarker(image, (cx, cy), _BLACK, cv2.MARKER_CROSS, 17, 3)
        cv2.drawMarker(image, (cx, cy), _WHITE, cv2.MARKER_CROSS, 15, 1)
        _text_box(image, [text], (cx + 10, cy + 10), 0.5, alpha=0.6)
