"""Units: what a depth map holds, relative inverse depth or metres (no heavy imports).

Every frame carries its :class:`DepthKind` (:class:`stream.core.records.DepthFrame`), and
every model spec names the kind its network gives. Kept apart from the records so that
the command line's argument parser, which lists the models, imports no numpy.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["DepthKind"]


class DepthKind(Enum):
    """What a depth map holds: a network's output kind, carried by every frame."""

    RELATIVE = "relative"
    """Relative inverse depth: larger is nearer, unknown scale and shift (not metres)."""
    METRIC = "metric"
    """Depth in metres: larger is farther."""

    @property
    def unit(self) -> str:
        """``m`` for metres, ``relative`` otherwise (file headers, legends, messages)."""
        return "m" if self is DepthKind.METRIC else "relative"
