"""Synthetic weights: a seeded Depth Anything V2 Small checkpoint (reads tests/data/dav2).

The official checkpoints (``depth_anything_v2_vits.pth``, and the metric
``depth_anything_v2_metric_{hypersim,vkitti}_vits.pth``) cannot be downloaded in an offline
test run, so tests fill a state dict of exactly the official key names and shapes
(``tests/data/dav2/schema.json``; the relative and the metric checkpoints share it) with
reproducible values and compare the network's output against golden outputs that the
reference implementation made from the same values (``tests/data/dav2/case_*.npz``, seed 7).
The values must be byte for byte those of the recipe the golden data was made with.

Recipe, in schema order, one numpy PCG64 generator seeded once; values are drawn in float64
and stored as float32:
  * "pretrained.cls_token", "pretrained.pos_embed": N(0, 0.5)
  * "pretrained.mask_token": zeros (not used at inference; no draw)
  * a key ending in ".gamma" (layer scale): U(0.1, 1.0)
  * any other 1-d "weight" (a layer norm): U(0.5, 1.5)
  * a 4-d "weight" of "depth_head.resize_layers.0" or ".1" (transposed convolutions,
    [in, out, k, k]): N(0, sqrt(1 / in))
  * any other 4-d "weight" (a convolution, [out, in, kh, kw]): N(0, sqrt(1 / (in * kh * kw)))
  * a 2-d "weight" (a linear layer, [out, in]): N(0, sqrt(1 / in))
  * "depth_head.scratch.output_conv2.2.bias" (the last convolution): N(0.5, 0.05), so that
    the relative head's final ReLU keeps most pixels
  * any other "bias": N(0, 0.05)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["DATA", "SCHEMA", "CASES", "synthetic_state_dict", "synthetic_torch_state_dict"]

DATA = Path(__file__).resolve().parent.parent / "data" / "dav2"
"""Golden data of Depth Anything V2 Small (a copy kept with the tests)."""

SCHEMA = DATA / "schema.json"
"""The official checkpoints' ``[key, shape, dtype]`` list, in checkpoint order."""

CASES = ("case_4x3", "case_16x9", "case_portrait")
"""Golden pictures (480x640, 360x640, 640x480); each has ``<case>_266.npz``."""

_LAST_BIAS = "depth_head.scratch.output_conv2.2.bias"
_TRANSPOSED = ("depth_head.resize_layers.0.", "depth_head.resize_layers.1.")


def _draw(rng: np.random.Generator, key: str, shape: list[int]) -> np.ndarray:
    """One entry of the recipe (module docstring), in float64."""
    name = key.rsplit(".", 1)[1]
    if key == "pretrained.mask_token":
        return np.zeros(shape)
    if key in ("pretrained.cls_token", "pretrained.pos_embed"):
        return rng.normal(0.0, 0.5, size=shape)
    if name == "gamma":
        return rng.uniform(0.1, 1.0, size=shape)
    if name == "weight" and len(shape) == 1:
        return rng.uniform(0.5, 1.5, size=shape)
    if name == "weight" and len(shape) == 4 and key.startswith(_TRANSPOSED):
        return rng.normal(0.0, np.sqrt(1.0 / shape[0]), size=shape)
    if name == "weight" and len(shape) == 4:
        return rng.normal(0.0, np.sqrt(1.0 / (shape[1] * shape[2] * shape[3])), size=shape)
    if name == "weight" and len(shape) == 2:
        return rng.normal(0.0, np.sqrt(1.0 / shape[1]), size=shape)
    if key == _LAST_BIAS:
        return rng.normal(0.5, 0.05, size=shape)
    if name == "bias":
        return rng.normal(0.0, 0.05, size=shape)
    raise ValueError(f"no rule for {key} {shape}")


def synthetic_state_dict(seed: int, schema_path: str | Path = SCHEMA) -> dict[str, np.ndarray]:
    """The synthetic checkpoint as numpy arrays.

    Args:
        seed: the generator's seed (the golden data uses 7; see its ``weights_seed``).
        schema_path: ``[key, shape, dtype]`` list of the checkpoint, in order.

    Returns:
        ``{key: float32 array}`` with the official key names and shapes, in schema order.

    Raises:
        ValueError: a schema entry no rule of the recipe covers.
    """
    schema = json.loads(Path(schema_path).read_text())
    rng = np.random.Generator(np.random.PCG64(seed))
    return {
        key: np.asarray(_draw(rng, key, shape), dtype=np.float64).astype(np.float32)
        for key, shape, _dtype in schema
    }


def synthetic_torch_state_dict(seed: int = 7) -> dict:
    """:func:`synthetic_state_dict` as torch tensors, ready for ``load_state_dict``."""
    import torch

    return {k: torch.from_numpy(v) for k, v in synthetic_state_dict(seed).items()}
