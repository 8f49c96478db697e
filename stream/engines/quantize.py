"""Quantize: an int8 copy of the OpenVINO model (NNCF), checked and timed against fp32.

Post-training quantization with NNCF on deterministic calibration frames that ship inside
the package (``stream/engines/calibration/``: no source checkout needed), made once per
checkpoint and cached with the recipe, the self-check and the timings
(:mod:`stream.engines.cache`). The frames, 270 pixels on their shorter side (JPEG quality
85, about 400 KB in all), come from the bundled samples: ``calibrate-*`` are frames 0, 30,
..., 330 of ``clip.mp4``, ``astronaut.jpg`` and ``coffee.jpg``; ``check-*`` (held out,
never calibrated with) are clip frames 15, 105, 195 and 285 (halfway between calibration
frames), ``chelsea.jpg`` and ``rocket.jpg``, each at its own aspect ratio.

The self-check runs the fp32 and int8 models on the held-out frames, aligns each int8
output to the fp32 one by least-squares scale and shift in inverse depth (as depth is
evaluated, :mod:`stream.geometry.align`; a metric network's metres are compared as they
are), and reports AbsRel and the fraction of pixels within a factor 1.25 (delta1). Then
fp32 and int8 are timed on this machine at the spec's example shape (interleaved rounds,
medians, :func:`measure_speed`). :func:`int8_verdict` is the rule of ``auto``: int8 only
where it passes the self-check and is faster than fp32 here.

Which layers gain from int8 depends on the CPU: with VNNI (or AMX) OpenVINO has fast int8
matrix products, without it a transformer's linear layers run slower in int8 than in
fp32 and only convolutions gain. So a recipe lists the variants to try (:class:`Layers`;
per network by :func:`variants_for`): each is quantized and checked, and the fastest one
that passes is kept.

Threshold: AbsRel at most 0.02 and delta1 at least 0.98. MiDaS v2.1's own AbsRel
against ground truth is about 0.1 or more on the zero-shot benchmarks of its paper, so
an int8 model within 0.02 of fp32 adds at most a fifth of the error the network already
has; delta1 >= 0.98 keeps a mean from hiding one region gone wrong (at most 2 % of the
pixels may be off by more than 25 %).

Starts no threads of its own (OpenVINO and NNCF use their thread pools); touches files:
reads the shipped frames and ``/proc/cpuinfo`` (:func:`machine_id`), writes the int8
cache entry.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import logging
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from stream.core.errors import ConfigError
from stream.engines.base import PerformanceHint
from stream.engines.cache import CacheEntry, CheckpointId, int8_entry, package_version
from stream.geometry.align import fit_scale_shift
from stream.models.registry import MIDAS_SMALL_SPEC
from stream.models.spec import ModelSpec

__all__ = [
    "ABS_REL_MAX",
    "DELTA1_MIN",
    "FRAMES_DIR",
    "SPEED_ROUNDS",
    "variants_for",
    "Agreement",
    "Int8Model",
    "Layers",
    "Recipe",
    "Speed",
    "agreement",
    "agreement_passes",
    "calibration_inputs",
    "find_cached",
    "held_out_inputs",
    "int8_verdict",
    "load_or_quantize",
    "machine_id",
    "measure_speed",
    "recipe_for",
]

ABS_REL_MAX = 0.02
"""Largest mean AbsRel of int8 against fp32 that ``auto`` accepts (see module docstring)."""
DELTA1_MIN = 0.98
"""Smallest mean fraction of pixels within 1.25 of fp32 that ``auto`` accepts."""

FRAMES_DIR = Path(__file__).resolve().with_name("calibration")
"""The calibration (``calibrate-*.jpg``) and held-out (``check-*.jpg``) frames shipped."""

SPEED_ROUNDS = 5
"""Interleaved rounds of :func:`measure_speed` (two inferences per model in each)."""
_RUNS_PER_ROUND = 2

# Relative depth is meaningless where the inverse depth is (near) zero: the sky, or
# what the network puts at infinity. Pixels below this fraction of a frame's largest
# fp32 value (farther than 100x the nearest point) are left out of the check.
_VALID_FRACTION = 0.01

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Layers:
    """One int8 variant: which layers NNCF leaves in fp32 (an ``nncf.IgnoredScope``).

    Attributes:
        name: how ``info`` and the cache entry name the variant.
        skip_types: operation types left in fp32 (``MatMul``).
        skip_patterns: regular expressions of node names left in fp32.
    """

    name: str
    skip_types: tuple[str, ...] = ()
    skip_patterns: tuple[str, ...] = ()

    def ignored_scope(self, nncf: Any) -> Any:
        """The ``nncf.IgnoredScope`` of this variant (``None``: every layer is quantized)."""
        if not (self.skip_types or self.skip_patterns):
            return None
        return nncf.IgnoredScope(types=list(self.skip_types), patterns=list(self.skip_patterns))


ALL_LAYERS = Layers("all")
"""Every layer NNCF quantizes (convolutions and matrix products)."""


def variants_for(spec: ModelSpec) -> tuple[Layers, ...]:
    """The int8 variants to try for ``spec``: all layers, and maybe a part of them.

    Where the spec names node patterns it may leave in fp32, also a variant that does
    (Depth Anything: the DPT head alone, the ViT backbone fp32).
    """
    if not spec.int8_fp32_patterns:
        return (ALL_LAYERS,)
    return ALL_LAYERS, Layers("dpt-head", skip_patterns=spec.int8_fp32_patterns)


@dataclass(frozen=True)
class Recipe:
    """How int8 is made and checked: shipped frames, NNCF preset, variants (deterministic).

    Attributes:
        calibration_frames: how many of the shipped ``calibrate-*`` frames calibrate
            (evenly spread over them in name order; all 14 by default).
        check_frames: how many of the shipped ``check-*`` frames the self-check runs on
            (evenly spread; all 6 by default).
        preset: NNCF's quantization preset.
        variants: the layer choices to quantize, check and time; the fastest that passes
            the self-check is kept.
    """

    calibration_frames: int = 14
    check_frames: int = 6
    preset: str = "mixed"
    variants: tuple[Layers, ...] = (ALL_LAYERS,)

    def digest(self, frames: Path | None = None) -> str:
        """A short hash of the recipe and its frames' bytes (the int8 cache key)."""
        h = hashlib.sha256(repr(asdict(self)).encode())
        for path in _frames(self, frames):
            h.update(path.name.encode())
            h.update(path.read_bytes())
        return h.hexdigest()[:10]


DEFAULT_RECIPE = Recipe()


def recipe_for(spec: ModelSpec) -> Recipe:
    """:data:`DEFAULT_RECIPE` (read when called) with the spec's variants."""
    variants = variants_for(spec)
    return DEFAULT_RECIPE if variants == (ALL_LAYERS,) else replace(DEFAULT_RECIPE,
                                                                  variants=variants)


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
class Speed:
    """fp32 and int8 timed against each other on one machine (:func:`measure_speed`).

    Attributes:
        fp32_ms: median milliseconds per inference in fp32.
        int8_ms: the same in int8.
        shape: the input shape timed, ``[1, 3, h, w]`` (the spec's example shape).
        machine: where they were timed (:func:`machine_id`).
        rounds: interleaved rounds timed.
    """

    fp32_ms: float
    int8_ms: float
    shape: tuple[int, ...]
    machine: str
    rounds: int

    @property
    def faster(self) -> bool:
        """Whether int8 ran faster than fp32."""
        return self.int8_ms < self.fp32_ms

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready numbers."""
        return {**asdict(self), "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: Any) -> Speed | None:
        """The record from :meth:`to_dict` output; ``None`` when it is not one."""
        try:
            return cls(float(data["fp32_ms"]), float(data["int8_ms"]),
                       tuple(int(n) for n in data["shape"]), str(data["machine"]),
                       int(data["rounds"]))
        except (KeyError, TypeError, ValueError):
            return None

    def summary(self) -> str:
        """``int8 30.1 ms, fp32 61.0 ms per 192x256 input``."""
        return (f"int8 {self.int8_ms:.1f} ms, fp32 {self.fp32_ms:.1f} ms per "
                f"{self.shape[-2]}x{self.shape[-1]} input")

    def slower_note(self) -> str:
        """The line that says int8 ran slower than fp32 on the machine this was timed on."""
        return f"int8 is slower than fp32 on this machine ({self.summary()})"


@dataclass(frozen=True)
class Int8Model:
    """An int8 OpenVINO model with its self-check, timing and cache entry.

    Attributes:
        model: the ``openvino.Model`` (dynamic H and W).
        agreement: its self-check against fp32 (``None`` if the entry has none).
        entry: where it is cached.
        fresh: quantized by this call (not read from the cache).
        speed: fp32 and int8 timed (``None`` if the entry has no timing).
        layers: the variant kept (:attr:`Layers.name`).
    """

    model: Any
    agreement: Agreement | None
    entry: CacheEntry
    fresh: bool
    speed: Speed | None = None
    layers: str = ALL_LAYERS.name


def agreement_passes(check: Agreement | None) -> tuple[bool, str]:
    """Whether int8's self-check passed, and one line saying why (not).

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


def int8_verdict(check: Agreement | None, speed: Speed | None,
                 machine: str) -> tuple[bool, str]:
    """Whether ``auto`` uses int8 (self-check passed, faster on ``machine``), and one line why.

    Example:
        >>> fast = Speed(60.0, 30.0, (1, 3, 192, 256), "here", 5)
        >>> int8_verdict(Agreement(0.01, 0.995, 0.02, 0.99, 10), fast, "here")[0]
        True
    """
    passed, why = agreement_passes(check)
    problems = [] if passed else [why]
    if speed is None or speed.machine != machine:
        where = "" if speed is None else f" (it was timed on {speed.machine})"
        problems.append(f"int8 was not timed against fp32 on this machine{where}; "
                        "--precision int8 times it, once")
    elif not speed.faster:
        problems.append(speed.slower_note())
    if problems:
        return False, "; ".join(problems)
    return True, f"{why}; faster than fp32 here ({speed.summary()})"


@functools.lru_cache(maxsize=1)
def _cpu() -> str:
    """``model name, isa <hash>``: the CPU and its feature flags (Linux: ``/proc/cpuinfo``)."""
    name, flags = platform.processor() or platform.machine(), ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not flags:
                name = value.strip()
            elif key.strip() in ("flags", "Features"):
                flags = value.strip()
                break
    # oneDNN's ISA cap changes the kernels OpenVINO picks as much as the CPU does.
    isa = f"{flags} {os.environ.get('ONEDNN_MAX_CPU_ISA', '')}"
    return f"{name}, isa {hashlib.sha256(isa.encode()).hexdigest()[:8]}"


def machine_id(threads: int) -> str:
    """Where int8 is timed: this CPU, its features and the thread count, as one string."""
    return f"{_cpu()}, {threads} threads"


# -- shipped frames ---------------------------------------------------------------------


def _pick(paths: list[Path], n: int) -> list[Path]:
    """``n`` of ``paths`` spread evenly (first and last included), in order."""
    if n >= len(paths) or n <= 0:
        return paths[:max(n, 0)]
    return [paths[round(float(i))] for i in np.linspace(0, len(paths) - 1, n)]


def _role(role: str, n: int, frames: Path) -> list[Path]:
    paths = sorted(frames.glob(f"{role}-*.jpg"))
    if len(paths) < n:
        raise ConfigError(f"--precision int8 calibrates on frames shipped with depthstream, "
                          f"and {frames} holds {len(paths)} of the {n} {role}-*.jpg it "
                          f"needs; reinstall depthstream or use --precision fp32")
    return _pick(paths, n)


def _frames(recipe: Recipe, frames: Path | None = None) -> list[Path]:
    """Every file the recipe reads: its calibration frames, then its held-out frames."""
    frames = frames or FRAMES_DIR
    return (_role("calibrate", recipe.calibration_frames, frames)
            + _role("check", recipe.check_frames, frames))


def _inputs(paths: list[Path], spec: ModelSpec) -> list[np.ndarray]:
    """Network inputs of the spec at its example side (the size the int8 model is timed at)."""
    import cv2

    from stream.models.transforms import preprocess_array

    out = []
    for path in paths:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ConfigError(f"cannot read the calibration frame {path}; reinstall "
                              f"depthstream or use --precision fp32")
        out.append(preprocess_array(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), spec,
                                    spec.example_side))
    return out


def calibration_inputs(recipe: Recipe = DEFAULT_RECIPE, frames: Path | None = None,
                       spec: ModelSpec = MIDAS_SMALL_SPEC) -> list[np.ndarray]:
    """The network inputs (float32 ``[1, 3, h, w]``) calibration runs on, always the same.

    Raises:
        ConfigError: a shipped frame is missing or unreadable.
    """
    return _inputs(_role("calibrate", recipe.calibration_frames, frames or FRAMES_DIR), spec)


def held_out_inputs(recipe: Recipe = DEFAULT_RECIPE, frames: Path | None = None,
                    spec: ModelSpec = MIDAS_SMALL_SPEC) -> list[np.ndarray]:
    """Network inputs the self-check runs on: none of them calibrated the model.

    Raises:
        ConfigError: a shipped frame is missing or unreadable.
    """
    return _inputs(_role("check", recipe.check_frames, frames or FRAMES_DIR), spec)


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
    valid = ref > _VALID_FRACTION * top
    if metric:
        depth = np.maximum(np.asarray(int8, dtype=np.float64)[valid], _VALID_FRACTION * top)
        return _abs_rel_delta1(depth, ref[valid])
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


def agreement(int8: list[np.ndarray], fp32: list[np.ndarray],
              metric: bool = False) -> Agreement:
    """Compare int8 outputs with the fp32 outputs of the same inputs (:func:`frame_agreement`)."""
    rows = [frame_agreement(a, b, metric) for a, b in zip(int8, fp32, strict=True)]
    if not rows:
        raise ConfigError("the self-check has no frames")
    abs_rel = [r[0] for r in rows]
    delta1 = [r[1] for r in rows]
    return Agreement(float(np.mean(abs_rel)), float(np.mean(delta1)), float(max(abs_rel)),
                     float(min(delta1)), len(rows))


def _runner(core: Any, model: Any, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """Infer one input on ``model`` compiled with dynamic H and W (fp32 arithmetic)."""
    compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                 "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    return lambda x: request.infer({0: np.ascontiguousarray(x, np.float32)})[0][0].copy()


def self_check(core: Any, models: dict[str, Any], fp32: Any, threads: int,
               recipe: Recipe = DEFAULT_RECIPE, frames: Path | None = None,
               spec: ModelSpec = MIDAS_SMALL_SPEC) -> dict[str, Agreement]:
    """:func:`agreement` of each int8 model with fp32 on the held-out frames, by name.

    A metric network's outputs are compared in metres (``spec.metric``).
    """
    inputs = held_out_inputs(recipe, frames, spec)
    run = _runner(core, fp32, threads)
    reference = [run(x) for x in inputs]
    out = {}
    for name, model in models.items():
        run = _runner(core, model, threads)
        out[name] = agreement([run(x) for x in inputs], reference, spec.metric)
    return out


def measure_speed(core: Any, models: dict[str, Any], shape: tuple[int, ...], threads: int,
                  rounds: int = SPEED_ROUNDS) -> dict[str, float]:
    """Median milliseconds per inference of each model, timed here on one input of ``shape``.

    Each model is compiled as ``infer`` runs it (statically shaped, latency hint, one
    request, ``threads``) and run once untimed; then the models take turns for ``rounds``
    rounds of two inferences each, in alternating order, so that a change in the load
    of the machine falls on all of them alike.
    """
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    requests = {}
    for name, model in models.items():
        static = model.clone()
        static.reshape({0: list(shape)})
        config = {"PERFORMANCE_HINT": PerformanceHint.LATENCY.value,
                  "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"}
        requests[name] = core.compile_model(static, "CPU", config).create_infer_request()
        requests[name].infer({0: x})
    times: dict[str, list[float]] = {name: [] for name in models}
    for k in range(rounds):
        for name in (list(requests) if k % 2 == 0 else list(reversed(requests))):
            for _ in range(_RUNS_PER_ROUND):
                start = time.perf_counter()
                requests[name].infer({0: x})
                times[name].append((time.perf_counter() - start) * 1000.0)
    return {name: float(np.median(t)) for name, t in times.items()}


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


def _quantize(nncf: Any, fp32: Any, inputs: list[np.ndarray], recipe: Recipe, layers: Layers,
              progress: bool) -> Any:
    scope = layers.ignored_scope(nncf)
    with _nncf_output(progress):
        return nncf.quantize(fp32.clone(), nncf.Dataset(inputs),
                             preset=nncf.QuantizationPreset(recipe.preset),
                             subset_size=len(inputs), fast_bias_correction=True,
                             **({} if scope is None else {"ignored_scope": scope}))


def _rounded(times: dict[str, float]) -> dict[str, float]:
    """Milliseconds to 0.01 ms (what is kept in ``meta.json``)."""
    return {name: round(ms, 2) for name, ms in times.items()}


def _keep_variant(checks: dict[str, Agreement], times: dict[str, float]) -> str:
    """The variant kept: the fastest whose self-check passes, else the fastest of all."""
    return min(checks, key=lambda n: (not agreement_passes(checks[n])[0], times[n]))


def _entry_model(core: Any, entry: CacheEntry) -> Int8Model | None:
    """The cached int8 model of ``entry``; ``None`` when it is missing or damaged (removed)."""
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
    meta = entry.meta()
    return Int8Model(model, Agreement.from_dict(meta.get("self_check")), entry, fresh=False,
                     speed=Speed.from_dict(meta.get("speed")),
                     layers=str(meta.get("layers", ALL_LAYERS.name)))


def find_cached(core: Any, source: CheckpointId, root: Path, recipe: Recipe | None = None,
                frames: Path | None = None,
                spec: ModelSpec = MIDAS_SMALL_SPEC) -> Int8Model | None:
    """The cached int8 model for ``source``, or ``None`` (not made yet, frames missing).

    ``recipe`` defaults to :func:`recipe_for` the spec. A damaged entry is removed (the
    next ``int8`` run makes it again).
    """
    recipe = recipe or recipe_for(spec)
    try:
        entry = int8_entry(source, spec, recipe.digest(frames), root)
    except (OSError, ConfigError):  # no shipped frames here: no int8 either
        return None
    return _entry_model(core, entry)


def _retime(core: Any, made: Int8Model, fp32: Any, threads: int, spec: ModelSpec,
            say: Callable[[str], None]) -> Int8Model:
    """``made`` timed against fp32 on this machine, the timing kept in its entry."""
    shape = spec.example_shape()
    say(f"timing int8 against fp32 on this machine, once ({SPEED_ROUNDS} rounds)")
    times = _rounded(measure_speed(core, {"fp32": fp32, "int8": made.model}, shape, threads))
    speed = Speed(times["fp32"], times["int8"], shape, machine_id(threads), SPEED_ROUNDS)
    made.entry.update_meta({"speed": speed.to_dict()})
    return replace(made, speed=speed)


def load_or_quantize(ov: Any, core: Any, fp32: Any, source: CheckpointId, root: Path,
                     threads: int, progress: bool = True,
                     say: Callable[[str], None] | None = None,
                     recipe: Recipe | None = None,
                     frames: Path | None = None,
                     spec: ModelSpec = MIDAS_SMALL_SPEC) -> Int8Model:
    """The int8 model for ``source``: from the cache, else quantized, checked, timed, cached.

    Each of the recipe's variants is quantized and checked; all are timed with fp32 in
    one interleaved run; the fastest whose self-check passes is kept (none passes: the
    fastest). A cached model timed on another machine (or thread count) is timed again.

    Args:
        ov: the ``openvino`` module.
        core: an ``openvino.Core``.
        fp32: the fp32 model (dynamic H and W).
        source: the checkpoint's id (the cache key).
        root: the model cache folder.
        threads: CPU threads for the self-check and the timing.
        progress: show NNCF's progress bars (on stderr).
        say: prints a one-line message (the one-time cost and the self-check numbers).
        recipe: how int8 is made (default :func:`recipe_for` the spec).
        frames: the folder of shipped frames (default :data:`FRAMES_DIR`).
        spec: the network (its input rule, output kind and example shape).

    Returns:
        The model, its self-check and timing, its cache entry, and whether it was made now.

    Raises:
        ConfigError: NNCF is not installed, or the shipped frames are missing.
    """
    recipe, say = recipe or recipe_for(spec), say or (lambda message: None)
    entry = int8_entry(source, spec, recipe.digest(frames), root)
    cached = _entry_model(core, entry)
    if cached is not None:
        if cached.speed is None or cached.speed.machine != machine_id(threads):
            return _retime(core, cached, fp32, threads, spec, say)
        return cached
    nncf = _import_nncf()
    say(f"quantizing {spec.title} to int8 for this checkpoint, once (trying "
        f"{', '.join(v.name for v in recipe.variants)} layers; under a minute on 2 cores; "
        f"cached)")
    start = time.perf_counter()
    inputs = calibration_inputs(recipe, frames, spec)
    models = {v.name: _quantize(nncf, fp32, inputs, recipe, v, progress)
              for v in recipe.variants}
    checks = self_check(core, models, fp32, threads, recipe, frames, spec)
    shape = spec.example_shape()
    times = _rounded(measure_speed(core, {"fp32": fp32, **models}, shape, threads))
    keep = _keep_variant(checks, times)
    speed = Speed(times["fp32"], times[keep], shape, machine_id(threads), SPEED_ROUNDS)
    took = time.perf_counter() - start
    say(f"int8 ready in {took:.0f} s ({keep} layers); agreement with fp32: "
        f"{checks[keep].summary()}; {speed.summary()}")
    meta = {"precision": "int8", "checkpoint": source.digest, "recipe": asdict(recipe),
            "nncf": package_version("nncf"), "openvino": package_version("openvino"),
            "layers": keep, "self_check": checks[keep].to_dict(), "speed": speed.to_dict(),
            "variants": {n: {"self_check": checks[n].to_dict(), "int8_ms": times[n]}
                         for n in models},
            "seconds": round(took, 1), "made": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "pid": os.getpid()}
    entry.write(lambda folder: ov.save_model(models[keep], str(folder / "model.xml"),
                                             compress_to_fp16=False), meta)
    return Int8Model(models[keep], checks[keep], entry, True, speed, keep)
