"""Weights: a network's official checkpoint: its download, cache and checks.

Kept apart from the architecture (as timm keeps pretrained configs apart from models);
what a checkpoint is (:class:`~stream.models.spec.Checkpoint`) comes from its model spec.
``load_state_dict`` looks, in order, at an explicit path, ``$DEPTHSTREAM_WEIGHTS``, the
torch hub cache, then downloads the official release file (atomic write, progress bar).
Every file is read with ``torch.load(weights_only=True)`` and checked key by key and
shape by shape; a bad file is an error with one line saying what is wrong and what to
do, never a silent fallback to random weights. torch is imported only to read a file:
finding the file (and the OpenVINO model cache's warm start) does without it. Touches
files (the download, atomically); starts no threads.
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any

from stream.core.errors import WeightsError
from stream.core.files import PartFile
from stream.models.registry import MIDAS_SMALL_SPEC, spec_for_checkpoint
from stream.models.spec import Checkpoint

__all__ = [
    "Checkpoint",
    "MIDAS_SMALL",
    "ENV_WEIGHTS",
    "ENV_WEIGHTS_URL",
    "cache_path",
    "check_file",
    "check_state_dict",
    "download",
    "load_file",
    "load_state_dict",
    "resolve_path",
    "state_dict_digest",
]

ENV_WEIGHTS = "DEPTHSTREAM_WEIGHTS"
ENV_WEIGHTS_URL = "DEPTHSTREAM_WEIGHTS_URL"


#: The default network's checkpoint (kept under this name for scripts that import it).
MIDAS_SMALL: Checkpoint = MIDAS_SMALL_SPEC.checkpoint

_HOW_TO = (
    "download {url} by hand and pass --weights PATH (or set {env}=PATH)"
)


def _how_to(ckpt: Checkpoint) -> str:
    return _HOW_TO.format(url=ckpt.url, env=ENV_WEIGHTS)


def _hub_dir() -> Path:
    """``torch.hub.get_dir()`` without importing torch (when torch is not loaded yet).

    torch's rule: ``$TORCH_HOME/hub``, else ``$XDG_CACHE_HOME/torch/hub``, else
    ``~/.cache/torch/hub``; a program that changed it with ``torch.hub.set_dir`` has
    torch imported, and then torch is asked.
    """
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "hub"):
        return Path(torch.hub.get_dir())
    home = os.environ.get("TORCH_HOME")
    if not home:
        home = os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "torch")
    return Path(os.path.expanduser(home)) / "hub"


def cache_path(ckpt: Checkpoint = MIDAS_SMALL) -> Path:
    """Where the downloaded checkpoint is cached: ``<torch hub dir>/checkpoints/<file>``."""
    return _hub_dir() / "checkpoints" / ckpt.file_name


def check_state_dict(state: Any, ckpt: Checkpoint = MIDAS_SMALL,
                     origin: str = "checkpoint") -> dict:
    """Return ``state`` as a plain dict if it has exactly the checkpoint's keys and shapes.

    Raises:
        WeightsError: naming ``origin`` and the first few missing, unexpected or
            wrongly shaped keys.
    """
    import torch

    if isinstance(state, dict) and "model" in state and "optimizer" in state:
        state = state["model"]  # a training checkpoint, as the reference loader accepts
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{origin} is not a state dict of tensors; {_how_to(ckpt)}")
    schema = {k: s for k, s, _ in ckpt.schema()}
    missing = [k for k in schema if k not in state]
    unexpected = [k for k in state if k not in schema]
    wrong = [f"{k} {tuple(state[k].shape)} != {schema[k]}" for k in schema
             if k in state and tuple(state[k].shape) != schema[k]]
    problems = []
    for what, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if items:
            shown = ", ".join(items[:3]) + (", ..." if len(items) > 3 else "")
            problems.append(f"{len(items)} {what} ({shown})")
    if problems:
        other = _other_models(set(state), ckpt)
        if other:
            raise WeightsError(f"{origin} is the {other}, not the {ckpt.name} checkpoint: "
                               f"pick the model that matches the file, or {_how_to(ckpt)}")
        raise WeightsError(
            f"{origin} is not the {ckpt.name} checkpoint: {'; '.join(problems)}; {_how_to(ckpt)}"
        )
    return dict(state)


def _other_models(keys: set[str], ckpt: Checkpoint) -> str:
    """Which other registered models' checkpoints have exactly ``keys`` (words for an error)."""
    from stream.models.registry import MODELS

    names = [s.name for s in MODELS.values()
             if s.checkpoint != ckpt and {k for k, _, _ in s.checkpoint.schema()} == keys]
    if not names:
        return ""
    title = MODELS[names[0]].checkpoint.name.split(" metric")[0]
    return f"{title} checkpoint (--model {' or '.join(names)})"


def _check_file_name(path: Path, ckpt: Checkpoint) -> None:
    """Refuse another model's official file by its name (relative and metric share keys)."""
    spec = spec_for_checkpoint(path.name)
    if spec is not None and spec.checkpoint != ckpt:
        raise WeightsError(f"{path} is the official {spec.checkpoint.name} checkpoint "
                           f"(--model {spec.name}), not the {ckpt.name} one: use --model "
                           f"{spec.name}, or {_how_to(ckpt)}")


def load_file(path: str | os.PathLike, ckpt: Checkpoint = MIDAS_SMALL) -> dict:
    """Load and check one checkpoint file (safe ``torch.load(weights_only=True)``).

    Raises:
        WeightsError: the file is missing, unreadable, not a checkpoint, or not this one.
    """
    path = check_file(path, ckpt)
    _check_file_name(path, ckpt)
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. about pickle protocols: the error says it
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
        raise WeightsError(f"{path} is not a readable PyTorch checkpoint: "
                           f"{_what_is_wrong(path, exc)}; {_how_to(ckpt)}") from exc
    return check_state_dict(state, ckpt, origin=str(path))


def check_file(path: str | os.PathLike, ckpt: Checkpoint = MIDAS_SMALL) -> Path:
    """``path`` as a Path if it names a readable, non-empty file (nothing is loaded).

    Raises:
        WeightsError: missing, a folder, unreadable or empty.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise WeightsError(f"weights file not found: {path}; {_how_to(ckpt)}")
    if not path.is_file():
        raise WeightsError(f"weights path is not a file: {path}; {_how_to(ckpt)}")
    if not os.access(path, os.R_OK):
        raise WeightsError(f"cannot read the weights file {path}: permission denied")
    if path.stat().st_size == 0:
        raise WeightsError(f"{path} is empty (an interrupted copy or download?); "
                           f"{_how_to(ckpt)}")
    return path


def _what_is_wrong(path: Path, exc: BaseException) -> str:
    """What a failed ``torch.load`` says about the file, in words a user can act on.

    torch's own messages run to several lines, are meant for developers (a history of
    its ``weights_only`` default, a miniz internal error), so they are not shown.
    """
    with open(path, "rb") as f:
        head = f.read(4)
    pickled = type(exc).__name__ == "UnpicklingError"
    if head.startswith(b"PK\x03\x04"):  # torch's zip format
        if pickled:
            return ("it holds Python objects besides tensors, which are not loaded for "
                    "safety (not a plain MiDaS checkpoint)")
        return "the file is cut short or damaged (an incomplete download or copy?)"
    if head[:1] == b"\x80":  # a bare pickle (torch's legacy format, or plain pickle)
        if pickled:
            return ("it is a pickle of Python objects, not only tensors, which is not "
                    "loaded for safety")
        return "the file is cut short or damaged (an incomplete download or copy?)"
    return "it is not a PyTorch file at all (no zip or pickle header; text or HTML?)"


def download(url: str, dest: Path, ckpt: Checkpoint = MIDAS_SMALL, progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` atomically: a temporary file renamed into place when whole.

    The downloaded file is checked (:func:`load_file`) before it is renamed, so the cache
    never holds a partial or wrong file.

    Raises:
        WeightsError: the download fails or the file is not the checkpoint.
    """
    from tqdm.auto import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = PartFile(dest)
    try:
        try:
            request = urllib.request.Request(url, headers={"User-Agent": "depthstream"})
            with (urllib.request.urlopen(request, timeout=30) as response,
                  open(part.path, "wb") as out):
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                          desc=dest.name, disable=not progress, leave=False) as bar:
                    while chunk := response.read(1 << 20):
                        out.write(chunk)
                        bar.update(len(chunk))
                if total is not None and out.tell() != total:
                    raise WeightsError(
                        f"download of {url} stopped after {out.tell()} of {total} bytes; "
                        f"try again or {_how_to(ckpt)}"
                    )
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise WeightsError(
                f"cannot download the {ckpt.name} weights from {url} ({reason}); "
                f"{_how_to(ckpt)}"
            ) from exc
        load_file(part.path, ckpt)
        part.commit()
    finally:
        part.discard()
    return dest


def resolve_path(path: str | os.PathLike | None = None, ckpt: Checkpoint = MIDAS_SMALL,
                 download_missing: bool = True, progress: bool = True) -> Path:
    """The checkpoint file to use: ``path``, ``$DEPTHSTREAM_WEIGHTS``, the cache, a download."""
    if path is not None:
        return Path(path).expanduser()
    if os.environ.get(ENV_WEIGHTS):
        return Path(os.environ[ENV_WEIGHTS]).expanduser()
    cached = cache_path(ckpt)
    if cached.is_file() or not download_missing:
        return cached
    url = os.environ.get(ENV_WEIGHTS_URL) or ckpt.url
    return download(url, cached, ckpt, progress=progress)


def load_state_dict(path: str | os.PathLike | None = None, ckpt: Checkpoint = MIDAS_SMALL,
                    progress: bool = True) -> dict:
    """The checked state dict of a checkpoint (see the module docstring for the order).

    Args:
        path: an explicit checkpoint file; ``None`` to look further.
        ckpt: which checkpoint (a spec's ``checkpoint``; default MiDaS v2.1 small).
        progress: show a download progress bar.

    Returns:
        ``{key: tensor}`` with exactly the official keys and shapes.

    Raises:
        WeightsError: with a one-line message that says what to do.
    """
    return load_file(resolve_path(path, ckpt, progress=progress), ckpt)


def state_dict_digest(state: dict) -> str:
    """A short SHA-256 of a state dict's keys and bytes (for caches keyed by weights)."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(key.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]
