"""Deprecated shim: re-exports the test helpers that moved to the ``support`` package.

Import from ``support.clips``, ``support.fakes`` and ``support.mjpeg`` instead; this file
goes once no test imports it.
"""

from support.clips import (  # noqa: F401
    NTSC,
    audio_duration_s,
    make_audio_only,
    make_clip,
    pattern,
    read_video,
    truncate,
)
from support.fakes import CheapBackend, cheap_estimator  # noqa: F401
from support.mjpeg import MjpegServer  # noqa: F401
