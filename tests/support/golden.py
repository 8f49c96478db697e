"""Golden data: where the reference outputs live and which cases they hold (reads no file).

``tests/data`` holds, per case, an input picture (``<case>.png``) and what the reference
implementation made of it with the synthetic weights of :mod:`support.weights`, seed 0
(``<case>.npz``: the network input, the network output and the final depth at the
picture's size), plus the checkpoint's key schema (``schema.json``).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DATA", "CASES", "SCHEMA"]

DATA = Path(__file__).resolve().parent.parent / "data"
"""The folder of golden data (a copy kept with the tests)."""

CASES = ("case_4x3", "case_16x9", "case_portrait")
"""The golden cases: a 4:3, a 16:9 and a portrait picture."""

SCHEMA = DATA / "schema.json"
"""The official checkpoint's ``[key, shape, dtype]`` list, in checkpoint order."""
