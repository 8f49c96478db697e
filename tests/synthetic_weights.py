"""Deterministic synthetic weights for the MiDaS v2.1 small (midas_v21_small_256) network.

The official checkpoint cannot be downloaded in an offline test run, so tests fill a state
dict of exactly the official key names and shapes (schema.json) with reproducible random
values and compare the network's output against golden outputs made with the reference
implementation from the same values.

Recipe, in schema order, one numpy PCG64 generator seeded once:
  * a module is a batch norm when "<prefix>.running_mean" is in the schema:
      weight ~ U(0.3, 1.0), bias ~ N(0, 0.1), running_mean ~ N(0, 0.1),
      running_var ~ U(0.05, 1.0), num_batches_tracked = 0
  * any other 4-d "weight" is a convolution: N(0, sqrt(1 / fan_in)),
    fan_in = in_channels_per_group * kh * kw
  * any other "bias": N(0, 0.05)
Values are drawn in float64 and stored as float32 (num_batches_tracked as int64).
"""
import json
from pathlib import Path

import numpy as np

SCHEMA = Path(__file__).parent / "data" / "schema.json"


def synthetic_state_dict(seed: int, schema_path: Path = SCHEMA) -> dict:
    """Return {key: numpy array} with the official key names, shapes and dtypes."""
    schema = json.loads(Path(schema_path).read_text())
    keys = {k for k, _, _ in schema}
    rng = np.random.Generator(np.random.PCG64(seed))
    out = {}
    for key, shape, dtype in schema:
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


if __name__ == "__main__":
    sd = synthetic_state_dict(0)
    print(len(sd), sum(v.size for v in sd.values()))
