"""Test support: clips, test doubles, a fake MJPEG camera, synthetic weights, golden data.

Plain modules the tests import (``from support.clips import make_clip``); the fixtures
stay in ``tests/conftest.py``. pytest puts ``tests/`` on ``sys.path`` (``pythonpath`` in
``pyproject.toml``). Modules here import each other relatively, so the benchmarks can
import them as ``tests.support.<name>`` as well.

Modules:
    clips: make, read and truncate test videos (writes files where it is told).
    fakes: ``CheapBackend`` and ``cheap_estimator``, a fast stand-in for the network.
    mjpeg: ``MjpegServer``, an MJPEG-over-HTTP camera on 127.0.0.1 (starts threads).
    weights: the synthetic-weights recipe behind the golden data (reads ``schema.json``).
    golden: where the golden data lives and which cases it holds.

This file imports none of them, so importing one module does not pay for the others.
"""
