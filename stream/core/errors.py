"""Errors: one root, ``StreamError``; each subclass also inherits the built-in that fits.

The CLI maps these to exit codes in one place (``cli.py``); library users catch them by
the built-in type (``OSError``, ``ValueError``) or by ``StreamError``.
"""

from __future__ import annotations

__all__ = [
    "StreamError",
    "SourceError",
    "SinkError",
    "WeightsError",
    "ConfigError",
    "PipelineError",
]


class StreamError(Exception):
    """Root of every error depthstream raises on purpose."""


class SourceError(StreamError, OSError):
    """An input (picture, video file, camera, URL) cannot be opened or decoded."""


class SinkError(StreamError, OSError):
    """An output (file, folder, window, socket) cannot be opened or written."""


class WeightsError(StreamError):
    """The checkpoint is missing, cannot be downloaded, or is not the MiDaS small checkpoint."""


class ConfigError(StreamError, ValueError):
    """A setting is out of range or settings contradict each other."""


class PipelineError(StreamError):
    """A pipeline thread failed while running (not a user mistake: exit code 1)."""
