"""Models: the networks a job may ask for, each built on first use and then shared.

Starts no threads. Touches files only through the callables it is given: ``locate``
looks for a model's checkpoint (never downloads: a job must not make the server fetch
100 MB), ``build`` reads it and builds the estimator.

The server's default model (``serve --model``) is built at start; another one is built
the first time a job asks for it (on that job's lane), then kept: one
:class:`~stream.engines.estimator.SharedEstimator` per model, shared by both lanes (and,
for the default model, the live view). A model whose checkpoint is not here is refused
when the upload arrives (:class:`ModelUnavailableError`, a 400 that says why), before
anything waits in a queue.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from stream.core.errors import StreamError
from stream.engines.estimator import DepthEstimator, SharedEstimator
from stream.models.registry import DEFAULT_MODEL, MODELS, get_spec

__all__ = ["ModelChoice", "ModelUnavailableError", "is_metric", "model_facts",
           "precision_warning"]

_LOCATE_TTL_S = 10.0  # how long an answer of ``locate`` is reused (the page asks on load)


class ModelUnavailableError(StreamError):
    """A job asked for a model this server cannot run (its checkpoint is not here)."""


def is_metric(name: str) -> bool:
    """Whether the model's depth is in metres (a metric fine-tune)."""
    return get_spec(name).output.value == "metric"


def model_facts(name: str) -> dict[str, str]:
    """What a job's status says of its model: name, title, and the depth's unit."""
    spec = get_spec(name)
    return {"model": spec.name, "model_title": spec.title,
            "units": "m" if is_metric(name) else "relative"}


def precision_warning(described: Mapping[str, Any]) -> str | None:
    """The warning for an estimator that runs int8 where ``auto`` would run fp32.

    That is: int8's self-check failed, or it was timed slower than fp32 on this machine.

    Args:
        described: the estimator's :meth:`~stream.engines.estimator.DepthEstimator.describe`.
    """
    if described.get("precision") != "int8":
        return None
    from stream.engines.quantize import Agreement, Speed, agreement_passes

    passed, why = agreement_passes(Agreement.from_dict(described.get("int8_agreement")))
    problems = [] if passed else [why]
    speed = Speed.from_dict(described.get("int8_speed"))
    if speed is not None and not speed.faster:
        problems.append(speed.slower_note())
    return f"{'; '.join(problems)}; serve --precision auto would use fp32" if problems else None


class ModelChoice:
    """The models jobs may ask for; each is built once, on first use, and shared.

    Args:
        build: builds a model's estimator from its ``--model`` name (on a worker lane).
        default: the model jobs run unless they ask for another (built at start).
        locate: returns a model's cache tag (what identifies its weights and engine, for
            the result cache), or raises :class:`ModelUnavailableError` when it cannot
            run here; ``None``: every registered model is available, with an empty tag.

    Example:
        >>> choice = ModelChoice.single(lambda: cheap_estimator(), "midas-small")  # doctest: +SKIP
        >>> choice.tag("dav2-small")  # doctest: +SKIP
        Traceback (most recent call last):
        ModelUnavailableError: this server runs midas-small only
    """

    def __init__(self, build: Callable[[str], DepthEstimator], default: str = DEFAULT_MODEL,
                 locate: Callable[[str], str] | None = None) -> None:
        self.default = get_spec(default).name
        self._build = build
        self._locate = locate
        self._lock = threading.Lock()
        self._shared: dict[str, SharedEstimator] = {}
        self._warnings: dict[str, str | None] = {}
        self._located: dict[str, tuple[float, str | StreamError]] = {}

    @classmethod
    def single(cls, factory: Callable[[], DepthEstimator], default: str = DEFAULT_MODEL,
               tag: str = "") -> ModelChoice:
        """Only ``default``, built by ``factory``; asking for another model is refused."""
        name = get_spec(default).name

        def locate(asked: str) -> str:
            if asked != name:
                raise ModelUnavailableError(f"this server runs {name} only")
            return tag

        return cls(lambda _name: factory(), name, locate)

    def tag(self, name: str | None = None) -> tuple[str, str]:
        """``(name, tag)`` of the model a job asks for (``None``: the default).

        Raises:
            ConfigError: not a model name.
            ModelUnavailableError: it cannot run here.
        """
        name = get_spec(name or self.default).name
        if self._locate is None:
            return name, ""
        now = time.monotonic()
        found = self._located.get(name)
        if found is None or now - found[0] > _LOCATE_TTL_S:
            try:
                found = now, self._locate(name)
            except StreamError as exc:
                found = now, exc
            self._located[name] = found
        if isinstance(found[1], StreamError):  # a fresh one: a kept one's traceback grows
            raise type(found[1])(*found[1].args)
        return name, found[1]

    def choices(self) -> list[dict[str, Any]]:
        """Every registered model for the page: name, title, summary, metric, available."""
        out = []
        for name, spec in MODELS.items():
            try:
                self.tag(name)
                why = None
            except StreamError as exc:
                why = str(exc)
            out.append({"name": name, "title": spec.title, "summary": spec.summary,
                        "metric": is_metric(name), "available": why is None, "why": why})
        return out

    def estimator(self, name: str | None = None) -> SharedEstimator:
        """The shared estimator of ``name`` (``None``: the default), built now if need be.

        Raises:
            StreamError: (``WeightsError``, ``ConfigError``...) it could not be built; a
                later call tries again.
        """
        name = get_spec(name or self.default).name
        shared = self._shared.get(name)
        if shared is not None:  # built: no wait behind another model's build
            return shared
        with self._lock:
            shared = self._shared.get(name)
            if shared is None:
                shared = SharedEstimator(self._build(name))
                self._warnings[name] = precision_warning(shared.describe())
                self._shared[name] = shared
            return shared

    def loaded(self, name: str | None = None) -> SharedEstimator | None:
        """The estimator of ``name`` if it is built, else ``None`` (builds nothing)."""
        return self._shared.get(get_spec(name or self.default).name)

    def warning(self, name: str | None = None) -> str | None:
        """What a job on ``name`` must carry: int8 runs although its self-check failed."""
        return self._warnings.get(get_spec(name or self.default).name)

    def close(self) -> None:
        """Close every built estimator (safe to call twice)."""
        with self._lock:
            shared, self._shared = list(self._shared.values()), {}
        for estimator in shared:
            estimator.close()
