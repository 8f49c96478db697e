"""Benchmark helpers: the checkpoint to time, timed child processes, the machine.

Shared by the scripts in ``benchmarks/`` (starts no threads; :func:`run_process` starts
and waits for a child process; reads the weights file it is given, the tests'
``schema.json`` and ``/proc/cpuinfo``; saves a synthetic checkpoint once). A script is run as
``python benchmarks/<name>.py``, so Python puts this folder first on ``sys.path`` and
``import common`` finds this module; pytest finds it through ``pythonpath`` in
``pyproject.toml`` when the tests check a benchmark's functions.

Importing this module puts the repository root on ``sys.path``, once, for two reasons:
``stream`` imports from a checkout whether or not the package is installed, and the
synthetic weights come from ``tests.support.weights``, the one copy of the recipe the
golden data was made with. The tests never import the benchmarks' helpers; the
benchmarks import the tests' recipe, as a plain package import (``tests/support`` is a
package; ``tests/`` itself is a namespace folder).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

__all__ = ["ROOT", "state_dict", "synthetic_state_dict", "saved_checkpoint", "run_process",
           "cpu_model", "machine"]

ROOT = Path(__file__).resolve().parents[1]
"""The repository root (the folder holding ``stream/``, ``tests/`` and ``benchmarks/``)."""

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# What a benchmark's numbers depend on: a name to print, and the distributions (as pip
# names them) that may provide it.
_VERSIONS = (
    ("torch", ("torch",)),
    ("OpenVINO", ("openvino",)),
    ("numpy", ("numpy",)),
    ("OpenCV", ("opencv-python", "opencv-python-headless", "opencv-contrib-python")),
    ("PyAV", ("av",)),
)


def synthetic_state_dict(seed: int = 0) -> dict:
    """The tests' synthetic checkpoint (official keys and shapes, seeded values) for torch.

    Speed does not depend on the weights' values, so timings can use it; accuracy
    numbers made with it are meaningless.
    """
    from tests.support.weights import synthetic_torch_state_dict

    return synthetic_torch_state_dict(seed)


def state_dict(weights: str | os.PathLike | None) -> tuple[dict, str]:
    """The checkpoint to run, and where it came from, for a script's ``--weights`` option.

    Args:
        weights: a checkpoint file, or ``None`` for the tests' synthetic checkpoint.

    Returns:
        ``(state_dict, origin)``: torch tensors ready for ``create_backend``, and a short
        description to print with the results.

    Raises:
        WeightsError: ``weights`` is missing or not a MiDaS v2.1 small checkpoint.
    """
    if weights is None:
        return synthetic_state_dict(0), "synthetic (tests/support/weights.py, seed 0)"
    from stream.models.weights import load_state_dict

    return load_state_dict(weights), str(weights)


def saved_checkpoint(weights: str | os.PathLike | None, file_name: str,
                     make: Callable[[], dict], recipe: str) -> tuple[Path, str]:
    """The checkpoint file to time, and where it came from.

    ``weights`` when given; else the synthetic checkpoint ``make()`` gives, saved once as
    ``<depthstream cache>/bench/<file_name>`` (so the model caches know it by its file).
    """
    if weights is not None:
        return Path(weights), str(weights)
    from stream.engines.cache import default_cache_dir

    path = default_cache_dir() / "bench" / file_name
    if not path.is_file():
        import torch

        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(make(), path)
    return path, f"synthetic ({recipe}), saved as {path}"


def run_process(args: list[str], env: dict, cwd: Path) -> float:
    """Seconds a child process takes from start to exit (it must succeed)."""
    start = time.perf_counter()
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True)
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{args[:3]} failed ({done.returncode}): {done.stderr[-2000:]}")
    return took


def cpu_model() -> str:
    """The CPU's model name (from ``/proc/cpuinfo`` on Linux, else what ``platform`` says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(distributions: tuple[str, ...]) -> str:
    for distribution in distributions:
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return "not installed"


def machine() -> str:
    """One line naming the machine and the versions a benchmark's numbers depend on.

    CPU model, logical cores (all of them, and those this process may use), operating
    system, Python, torch, OpenVINO, numpy, OpenCV and PyAV. Versions come from the
    installed distributions' metadata, so nothing heavy is imported to print them.

    Example:
        >>> print(machine())  # doctest: +SKIP
        Intel(R) Xeon(R) ..., 2 cores (2 usable), Linux 6.1, Python 3.11.9, torch 2.4.1, ...
    """
    cores = os.cpu_count() or 1
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    versions = ", ".join(f"{name} {_version(dist)}" for name, dist in _VERSIONS)
    return (f"{cpu_model()}, {cores} cores ({usable} usable), "
            f"{platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, {versions}")
