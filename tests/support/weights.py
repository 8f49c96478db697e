"""Synthetic weights: a seeded MiDaS v2.1 small checkpoint (reads tests/data/schema.json).

The official checkpoint cannot be downloaded in an offline test run, so tests fill a state
dict of exactly the official key names and shapes (``tests/data/schema.json``) with
reproducible random values and compare the network's output against golden outputs made
with the reference implementation from the same values. The benchmarks time the network
with the same checkpoint (speed does not depend on the values); they import this module as
``tests.support.weights``, so this is the recipe's only copy.

Recipe, in schema order, one numpy PCG64 generator seeded once:
  * a module is a batch norm when "<prefix>.running_mean" is in the schema:
      weight ~ U(0.3, 1.0), bias ~ N(0, 0.1), running_mean ~ N(0, 0.1),
      running_var ~ U(0.05, 1.0), num_batches_tracked = 0
  * any other 4-d "weight" is a convolution: N(0, sqrt(1 / fan_in)),
    fan_in = in_channels_per_group * kh * kw
  * any other "bias": N(0, 0.05)
Values are drawn in float64 and stored as float32 (num_batches_tracked as int64).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .golden import SCHEMA

__all__ = ["synthetic_state_dict", "synthetic_torch_state_dict"]


def synthetic_state_dict(seed: int, schema_path: str | Path = SCHEMA) -> dict[str, np.ndarray]:
    """The synthetic checkpoint as numpy arrays.

    Args:
        seed: the generator's seed (the golden data uses 0).
        schema_path: ``[key, shape, dtype]`` list of the checkpoint, in order.

    Returns:
        ``{key: array}`` with the official key names, shapes and dtypes.

    Raises:
        ValueError: a schema entry no rule of the recipe covers.
    """
    schema = json.loads(Path(schema_path).read_text())
    keys = {k for k, _, _ in schema}
    rng = np.random.Generator(np.random.PCG64(seed))
    out = {}
    for key, shape, _ in schema:
        prefix, name = key.rsplit(".", 1)
        is_bn = f"{prefix}.running_mean" in keys
        if name == "num_batches_tracked":
            out[key] = np.zeros(shape, dtype=np.int64)
            continue
        if is_bn and name == "weight":
            v = rng.uniform(0.3, 1.0, size=shape)
        elif is_bn and name == "bias":
            v = rng.normal(0.0, 0.1, size=shape)
        elif is_bn and name == "running_mean":
            v = rng.normal(0.0, 0.1, size=shape)
        elif is_bn and name == "running_var":
            v = rng.uniform(0.05, 1.0, size=shape)
        elif name == "weight" and len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            v = rng.normal(0.0, np.sqrt(1.0 / fan_in), size=shape)
        elif name == "bias":
            v = rng.normal(0.0, 0.05, size=shape)
        else:
            raise ValueError(f"no rule for {key} {shape}")
        out[key] = np.asarray(v, dtype=np.float64).astype(np.float32)
    return out


def synthetic_torch_state_dict(seed: int = 0) -> dict:
    """:func:`synthetic_state_dict` as torch tensors, ready for ``load_state_dict``."""
    import torch

    return {k: torch.from_numpy(v) for k, v in synthetic_state_dict(seed).items()}
