"""Window keys: what each key of the live window does, as one table.

The window (:mod:`stream.window.sink`) dispatches on it, its ``h`` overlay and ``live --help``
list it. Starts no threads, touches no files, imports nothing heavy (the CLI reads it to
build its help).
"""

from __future__ import annotations

from enum import Enum

__all__ = ["Action", "KEYS", "key_action", "key_help"]


class Action(Enum):
    """What a key asks the window to do."""

    HELP = "show or hide this list of keys"
    PAUSE = "pause or resume the picture (the source keeps being read)"
    SNAPSHOT = "snapshot: colour PNG, depth PNG, 16-bit depth PNG, float32 .npy"
    LAYOUT = "next layout (depth, side by side, overlay)"
    COLORMAP = "next colormap"
    INVERT = "invert the colours (near dark / near bright)"
    SMOOTH_UP = "more temporal smoothing (+0.1)"
    SMOOTH_DOWN = "less temporal smoothing (-0.1)"
    RESET = "reset the smoother and the colour range"
    HUD = "show or hide the status line"
    FULLSCREEN = "fullscreen on or off"
    RECORD = "start or stop recording to depth_YYYYmmdd_HHMMSS.mp4"
    QUIT = "quit"


# (key names as shown, key codes): the first name is the one listed.
_TABLE: tuple[tuple[str, str, Action], ...] = (
    ("h", "h", Action.HELP),
    ("space", " ", Action.PAUSE),
    ("s", "s", Action.SNAPSHOT),
    ("o", "o", Action.RECORD),
    ("l", "l", Action.LAYOUT),
    ("c", "c", Action.COLORMAP),
    ("i", "i", Action.INVERT),
    ("+", "+=", Action.SMOOTH_UP),
    ("-", "-_", Action.SMOOTH_DOWN),
    ("r", "r", Action.RESET),
    ("d", "d", Action.HUD),
    ("f", "f", Action.FULLSCREEN),
    ("q / Esc", "q\x1b", Action.QUIT),
)

KEYS: dict[int, Action] = {
    ord(char): action for _, chars, action in _TABLE for char in chars + chars.upper()
}
"""Key code (as ``cv2.waitKeyEx`` returns it for plain keys) -> action; letters either case."""


def key_action(code: int) -> Action | None:
    """The action of a key code from ``cv2.waitKeyEx`` (``-1``: no key), or ``None``."""
    return KEYS.get(code) if 0 <= code < 256 else None


def key_help(click: bool = True) -> list[str]:
    """One line per key, ``"key  what it does"``, for the overlay and ``--help``."""
    width = max(len(name) for name, _, _ in _TABLE)
    lines = [f"{name.ljust(width)}  {action.value}" for name, _, action in _TABLE]
    if click:
        lines.append(f"{'click'.ljust(width)}  pin that pixel's depth (metres: metric model or "
                     "--known-distance)")
    return lines
