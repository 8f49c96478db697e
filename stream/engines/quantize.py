"""Quantize: an int8 copy of the OpenVINO model (NNCF), checked against fp32 on held-out frames.

Post-training quantization with NNCF on deterministic calibration frames from the
bundled ``samples/`` (frames of ``clip.mp4`` and two of its pictures), made once per
checkpoint and cached with the recipe and the self-check (:mod:`stream.engines.cache`).
The self-check runs the fp32 and int8 models on held-out frames that calibration never
saw (other frames of the clip, the other two pictures, at their own aspect ratios),
aligns each int8 output to the fp32 one by least-squares scale and shift in inverse
depth (as depth is evaluated, :mod:`stream.geometry.align`), and reports AbsRel and the fraction
of pixels within a factor 1.25 (delta1). :func:`agreement_passes` is the threshold
``auto`` precision uses.

Threshold: AbsRel at most 0.02 and delta1 at least 0.98. MiDaS v2.1's own AbsRel
against ground truth is about 0.1 or more on the zero-shot benchmarks of its paper, so
an int8 model within 0.02 of fp32 adds at most a fifth of the error the network already
has; delta1 >= 0.98 keeps a mean from hiding one region gone wrong (at most 2 % of the
pixels may be off by more than 25 %).

Starts no threads of its own (OpenVINO and NNCF use their thread pools); touches files:
reads the samples, writes the int8 cache entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stream.core.errors import ConfigError
from stream.engines.cache import CacheEntry, CheckpointId, int8_entry, package_version
from stream.geometry.align import fit_scale_shift
from stream.models.registry import MIDAS_SMALL_SPEC
from stream.models.spec import ModelSpec
from stream.models.transforms import preprocess_array

__all__ = [
    "ABS_REL_MAX",
    "DELTA1_MIN",
    "SAMPLES_DIR",
    "Agreement",
    "Int8Model",
    "Recipe",
    "agreement",
    "agreement_passes",
    "calibration_inputs",
    "find_cached",
    "held_out_inputs",
    "load_or_quantize",
]

ABS_REL_MAX = 0.02
"""Largest mean AbsRel of int8 against fp32 that ``auto`` accepts (see module docstring)."""
DELTA1_MIN = 0.98
"""Smallest mean fraction of pixels within 1.25 of fp32 that ``auto`` accepts."""

SAMPLES_DIR = Path(__file__).resolve().parents[2] / "samples"
"""The bundled samples (a source checkout's ``samples/``) that calibration reads."""

# Relative depth is meaningless where the inverse depth is (near) zero: the sky, or
# what the network puts at infinity. Pixels below this fraction of a frame's largest
# fp32 value (farther than 100x the nearest point) are left out of the check.
_VALID_FRACTION = 0.01

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    """How the calibration and check frames are drawn from the samples (deterministic).

    Attributes:
        clip: the sample clip.
        calibration_step: every n-th clip frame calibrates, starting at frame 0.
        calibration_frames: how many clip frames calibrate.
        calibration_pictures: still pictures that also calibrate.
        check_step: every n-th clip frame is checked, starting at ``check_offset``
            (never a calibration frame).
        check_offset: the first checked clip frame.
        check_frames: how many clip frames are checked.
        check_pictures: still pictures that are checked (never calibrated with).
        preset: NNCF's quantization preset.
    """

    clip: str = "clip.mp4"
    calibration_step: int = 9
    calibration_frames: int = 40
    calibration_pictures: tuple[str, ...] = ("astronaut.jpg", "coffee.jpg")
    check_step: int = 45
    check_offset: int = 4
    check_frames: int = 8
    check_pictures: tuple[str, ...] = ("chelsea.jpg", "rocket.jpg")
    preset: str = "mixed"

    def digest(self, samples: Path = SAMPLES_DIR) -> str:
        """A short hash of the recipe and the sample files' bytes (the int8 cache key)."""
        h = hashlib.sha256(repr(asdict(self)).encode())
        for name in (self.clip, *self.calibration_pictures, *self.check_pictures):
            h.update(name.encode())
            h.update((samples / name).read_bytes())
        return h.hexdigest()[:10]


DEFAULT_RECIPE = Recipe()


@dataclass(frozen=True)
class Agreement:
    """How closely int8 follows fp32 on the held-out frames (after scale-and-shift).

    Attributes:
        abs_rel: mean over frames of mean ``|d_int8 - d_fp32| / d_fp32`` (depth).
        delta1: mean over frames of the fraction of pixels with ratio below 1.25.
        abs_rel_worst: the largest frame AbsRel.
        delta1_worst: the smallest frame delta1.
        frames: frames checked.
    """

    abs_rel: float
    delta1: float
    abs_rel_worst: float
    delta1_worst: float
    frames: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready numbers."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Agreement | None:
        """The record from :meth:`to_dict` output; ``None`` when it is not one."""
        try:
            return cls(**{k: type_(data[k]) for k, type_ in
                          (("abs_rel", float), ("delta1", float), ("abs_rel_worst", float),
                           ("delta1_worst", float), ("frames", int))})
        except (KeyError, TypeError, ValueError):
            return None

    def summary(self) -> str:
        """``AbsRel 0.012, delta<1.25 0.995 on 10 held-out frames``."""
        return (f"AbsRel {self.abs_rel:.3f}, delta<1.25 {self.delta1:.3f} "
                f"on {self.frames} held-out frames")


@dataclass(frozen=True)
class Int8Model:
    """An int8 OpenVINO model with its self-check and cache entry.

    Attributes:
        model: the ``openvino.Model`` (dynamic H and W).
        agreement: its self-check against fp32 (``None`` if the entry has none).
        entry: where it is cached.
        fresh: quantized by this call (not read from the cache).
    """

    model: Any
    agreement: Agreement | None
    entry: CacheEntry
    fresh: bool


def agreement_passes(check: Agreement | None) -> tuple[bool, str]:
    """Whether int8 may be used by ``auto``, and one line saying why (not).

    Example:
        >>> agreement_passes(Agreement(0.01, 0.995, 0.02, 0.99, 10))[0]
        True
    """
    if check is None:
        return False, "int8 has no self-check"
    if not (check.abs_rel <= ABS_REL_MAX and check.delta1 >= DELTA1_MIN):
        return False, (f"int8 differs from fp32 on this checkpoint ({check.summary()}; "
                       f"needs AbsRel <= {ABS_REL_MAX} and delta<1.25 >= {DELTA1_MIN})")
    return True, f"int8 agrees with fp32 ({check.summary()})"


# -- sample frames ----------------------------------------------------------------------


def _clip_frames(path: Path, wanted: set[int]) -> dict[int, np.ndarray]:
    """The RGB frames of ``path`` at the indices ``wanted`` (decoding stops after the last)."""
    import av

    out: dict[int, np.ndarray] = {}
    last = max(wanted)
    with av.open(str(path)) as container:
        for n, frame in enumerate(container.decode(video=0)):
            if n in wanted:
                out[n] = frame.to_ndarray(format="rgb24")
            if n >= last:
                break
    return out


def _picture(path: Path) -> np.ndarray:
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ConfigError(f"cannot read the sample picture {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _check_samples(recipe: Recipe, samples: Path) -> None:
    names = (recipe.clip, *recipe.calibration_pictures, *recipe.check_pictures)
    missing = [n for n in names if not (samples / n).is_file()]
    if missing:
        raise ConfigError(f"--precision int8 calibrates on the bundled samples, and "
                          f"{samples} lacks {', '.join(missing)}; run from a source checkout "
                          f"(git clone) or use --precision fp32")


def _inputs(rgbs: list[np.ndarray], spec: ModelSpec) -> list[np.ndarray]:
    """Network inputs of the spec at its example side (the size the int8 model is timed at)."""
    return [preprocess_array(rgb, spec, spec.example_side) for rgb in rgbs]


def calibration_inputs(recipe: Recipe = DEFAULT_RECIPE, samples: Path = SAMPLES_DIR,
                       spec: ModelSpec = MIDAS_SMALL_SPEC) -> list[np.ndarray]:
    """The network inputs (float32 ``[1, 3, h, w]``) calibration runs on, always the same.

    Raises:
        ConfigError: a sample file is missing.
    """
    _check_samples(recipe, samples)
    indices = [recipe.calibration_step * k for k in range(recipe.calibration_frames)]
    frames = _clip_frames(samples / recipe.clip, set(indices))
    rgbs = [frames[n] for n in indices if n in frames]
    rgbs += [_picture(samples / name) for name in recipe.calibration_pictures]
    return _inputs(rgbs, spec)


def held_out_inputs(recipe: Recipe = DEFAULT_RECIPE, samples: Path = SAMPLES_DIR,
                    spec: ModelSpec = MIDAS_SMALL_SPEC) -> list[np.ndarray]:
    """Network inputs the self-check runs on: none of them calibrated the model.

    Raises:
        ConfigError: a sample file is missing, or the recipe checks a calibration frame.
    """
    _check_samples(recipe, samples)
    calibration = {recipe.calibration_step * k for k in range(recipe.calibration_frames)}
    indices = [recipe.check_offset + recipe.check_step * k for k in range(recipe.check_frames)]
    overlap = (calibration & set(indices)) or (set(recipe.calibration_pictures)
                                               & set(recipe.check_pictures))
    if overlap:
        raise ConfigError(f"the self-check would reuse calibration frames {sorted(overlap)}")
    frames = _clip_frames(samples / recipe.clip, set(indices))
    rgbs = [frames[n] for n in indices if n in frames]
    rgbs += [_picture(samples / name) for name in recipe.check_pictures]
    return _inputs(rgbs, spec)


# -- the check --------------------------------------------------------------------------


def frame_agreement(int8: np.ndarray, fp32: np.ndarray,
                    metric: bool = False) -> tuple[float, float]:
    """``(abs_rel, delta1)`` of one int8 output against the fp32 one.

    Relative output (inverse depth): the int8 output is first aligned to fp32 by
    least-squares scale and shift over the valid pixels (fp32 inverse depth above 1 % of
    its maximum); both are then turned into depth. Metric output (metres) is compared
    as it is, over the pixels the fp32 model puts beyond 1 % of its farthest.
    """
    ref = np.asarray(fp32, dtype=np.float64)
    top = float(ref.max())
    if not np.isfinite(top) or top <= 0:
        return 0.0, 1.0  # nothing to compare: both see no depth at all
    if metric:
        valid = ref > _VALID_FRACTION * top
        depth_ref = ref[valid]
        depth = np.maximum(np.asarray(int8, dtype=np.float64)[valid], _VALID_FRACTION * top)
        return _abs_rel_delta1(depth, depth_ref)
    valid = ref > _VALID_FRACTION * top
    s, b = fit_scale_shift(int8, ref, mask=valid)
    aligned = s * np.asarray(int8, dtype=np.float64) + b
    # As evaluations cap depth at a largest distance, the aligned inverse depth is
    # clipped at the valid range's far end (an aligned value at or below zero is farther
    # than anything the check looks at).
    aligned = np.maximum(aligned[valid], _VALID_FRACTION * top)
    return _abs_rel_delta1(1.0 / aligned, 1.0 / ref[valid])


def _abs_rel_delta1(depth: np.ndarray, depth_ref: np.ndarray) -> tuple[float, float]:
    abs_rel = float(np.mean(np.abs(depth - depth_ref) / depth_ref))
    ratio = np.maximum(depth / depth_ref, depth_ref / depth)
    return abs_rel, float(np.mean(ratio < 1.25))


def agreement(run_int8: Callable[[np.ndarray], np.ndarray],
              run_fp32: Callable[[np.ndarray], np.ndarray],
              inputs: list[np.ndarray], metric: bool = False) -> Agreement:
    """Compare two networks on ``inputs`` with :func:`frame_agreement`."""
    rows = [frame_agreement(run_int8(x), run_fp32(x), metric) for x in inputs]
    if not rows:
        raise ConfigError("the self-check has no frames")
    abs_rel = [r[0] for r in rows]
    delta1 = [r[1] for r in rows]
    return Agreement(float(np.mean(abs_rel)), float(np.mean(delta1)), float(max(abs_rel)),
                     float(min(delta1)), len(rows))


# -- quantization -----------------------------------------------------------------------


@contextlib.contextmanager
def _nncf_output(progress: bool) -> Iterator[None]:
    """NNCF's progress bars to stderr (stdout is for results), or nowhere."""
    target = sys.stderr if progress else io.StringIO()
    with contextlib.redirect_stdout(target):
        yield


def _import_nncf() -> Any:
    """``import nncf`` with its telemetry off and its start-up chatter silenced.

    Raises:
        ConfigError: NNCF is not installed.
    """
    from stream.core.privacy import disable_telemetry

    disable_telemetry()
    # NNCF imports torch when it is installed; torch then warns that it found no CUDA.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        with _nncf_output(False):
            import nncf
    except ImportError as exc:
        raise ConfigError(f"--precision int8 needs NNCF ({exc}); pip install nncf, "
                          "or use --precision fp32") from exc
    nncf.set_log_level(logging.WARNING)
    return nncf


def _quantize(nncf: Any, fp32: Any, inputs: list[np.ndarray], recipe: Recipe,
              progress: bool) -> Any:
    with _nncf_output(progress):
        preset = nncf.QuantizationPreset(recipe.preset)
        return nncf.quantize(fp32.clone(), nncf.Dataset(inputs), preset=preset,
                             subset_size=len(inputs), fast_bias_correction=True)


def _runner(core: Any, model: Any, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """Infer one input on ``model`` compiled with dynamic H and W (fp32 arithmetic)."""
    compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                 "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    return lambda x: request.infer({0: np.ascontiguousarray(x, np.float32)})[0][0].copy()


def self_check(core: Any, int8: Any, fp32: Any, threads: int,
               recipe: Recipe = DEFAULT_RECIPE, samples: Path = SAMPLES_DIR,
               spec: ModelSpec = MIDAS_SMALL_SPEC) -> Agreement:
    """Run :func:`agreement` of the int8 and fp32 OpenVINO models on the held-out frames."""
    inputs = held_out_inputs(recipe, samples, spec)
    return agreement(_runner(core, int8, threads), _runner(core, fp32, threads), inputs,
                     spec.metric)


def find_cached(core: Any, source: CheckpointId, root: Path, recipe: Recipe | None = None,
                samples: Path | None = None,
                spec: ModelSpec = MIDAS_SMALL_SPEC) -> Int8Model | None:
    """The cached int8 model for ``source``, or ``None`` (not made yet, samples missing).

    ``recipe`` and ``samples`` default to :data:`DEFAULT_RECIPE` and :data:`SAMPLES_DIR`
    (read when called). A damaged entry is removed (the next ``int8`` run makes it again).
    """
    recipe, samples = recipe or DEFAULT_RECIPE, samples or SAMPLES_DIR
    try:
        entry = int8_entry(source, spec, recipe.digest(samples), root)
    except OSError:  # no samples here: no int8 either
        return None
    if not entry.exists():
        return None
    try:
        model = core.read_model(str(entry.xml))
    except RuntimeError as exc:
        text = str(exc).strip()
        log.warning("int8 cache entry %s is unreadable (%s); removing it", entry.path,
                    text.splitlines()[-1][:160] if text else type(exc).__name__)
        entry.remove()
        return None
    return Int8Model(model, Agreement.from_dict(entry.meta().get("self_check")), entry,
                     fresh=False)


def load_or_quantize(ov: Any, core: Any, fp32: Any, source: CheckpointId, root: Path,
                     threads: int, progress: bool = True,
                     say: Callable[[str], None] | None = None,
                     recipe: Recipe | None = None,
                     samples: Path | None = None,
                     spec: ModelSpec = MIDAS_SMALL_SPEC) -> Int8Model:
    """The int8 model for ``source``: from the cache, else quantized, checked and cached.

    Args:
        ov: the ``openvino`` module.
        core: an ``openvino.Core``.
        fp32: the fp32 model (dynamic H and W).
        source: the checkpoint's id (the cache key).
        root: the model cache folder.
        threads: CPU threads for the self-check.
        progress: show NNCF's progress bars (on stderr).
        say: prints a one-line message (the one-time cost and the self-check numbers).
        recipe: calibration and check frames (default :data:`DEFAULT_RECIPE`).
        samples: the folder holding the samples (default :data:`SAMPLES_DIR`).
        spec: the network (its input rule and output kind).

    Returns:
        The model, its self-check, its cache entry, and whether it was made just now.

    Raises:
        ConfigError: NNCF is not installed, or the samples are missing.
    """
    recipe, samples = recipe or DEFAULT_RECIPE, samples or SAMPLES_DIR
    _check_samples(recipe, samples)
    cached = find_cached(core, source, root, recipe, samples, spec)
    if cached is not None:
        return cached
    entry = int8_entry(source, spec, recipe.digest(samples), root)
    nncf = _import_nncf()
    say = say or (lambda message: None)
    say("quantizing the network to int8 for this checkpoint, once "
        "(about a minute on 2 cores; cached)")
    start = time.perf_counter()
    model = _quantize(nncf, fp32, calibration_inputs(recipe, samples, spec), recipe, progress)
    check = self_check(core, model, fp32, threads, recipe, samples, spec)
    took = time.perf_counter() - start
    say(f"int8 ready in {took:.0f} s; agreement with fp32: {check.summary()}")
    meta = {"precision": "int8", "checkpoint": source.digest, "recipe": asdict(recipe),
            "nncf": package_version("nncf"), "openvino": package_version("openvino"),
            "self_check": check.to_dict(), "seconds": round(took, 1),
            "made": time.strftime("%Y-%m-%dT%H:%M:%S"), "pid": os.getpid()}
    entry.write(lambda folder: ov.save_model(model, str(folder / "model.xml"),
                                             compress_to_fp16=False), meta)
    return Int8Model(model, check, entry, fresh=True)
