"""Model cache: converted (fp32) and quantized (int8) OpenVINO models on disk, per checkpoint.

Touches files (the cache folder); starts no threads; imports nothing heavy, so a warm
start finds its model without torch, timm or OpenVINO's converter. Layout under
``default_cache_dir() / "openvino"``:

* ``checkpoints.json``: per checkpoint file (by resolved path) its size, modification
  time, SHA-256 and, once it was loaded, the digest of its tensors, so a file that has
  not changed is recognised by one ``stat``; a changed size or time means the file is
  hashed again (a new hash: loaded again, new entries);
* ``<model>-<weights>-ov<version>-<code>[-int8-<recipe>]/`` (``midas-small-...``): ``model.xml``,
  ``model.bin`` and ``meta.json`` (what the entry was made from; for int8 also the
  self-check, and fp32 and int8 timed on the machine that made or last used it).
  ``<weights>`` is the digest of the checkpoint's tensors
  (:func:`stream.models.weights.state_dict_digest`), so a file and the same weights given in
  memory (the web server) share one entry; ``<code>`` hashes our model code, the IR
  format and the torch/timm versions (read from the installed packages' metadata, not
  imported);
* ``compiled/``: OpenVINO's own ``CACHE_DIR`` of compiled blobs, so that compiling a
  cached model is mostly a file read.

Entries are written to a temporary folder and renamed into place whole
(:func:`stream.core.files.atomic_dir`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from stream.core.files import atomic_dir, write_json_atomic
from stream.models.spec import ModelSpec

__all__ = [
    "ENV_CACHE",
    "IR_FORMAT",
    "CheckpointId",
    "CacheEntry",
    "default_cache_dir",
    "openvino_cache_dir",
    "compiled_cache_dir",
    "fingerprint",
    "remember",
    "fp32_entry",
    "int8_entry",
    "package_version",
]

ENV_CACHE = "DEPTHSTREAM_CACHE"
IR_FORMAT = 2
"""Bump when the conversion recipe changes in a way the other key parts do not capture."""

_INDEX = "checkpoints.json"
_HASH_CHUNK = 1 << 20

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    r"""Root of depthstream's caches: ``$DEPTHSTREAM_CACHE``, else the platform's user cache.

    Linux and others: ``$XDG_CACHE_HOME/depthstream`` (``~/.cache/depthstream``); macOS:
    ``~/Library/Caches/depthstream``; Windows: ``%LOCALAPPDATA%\depthstream\Cache``.
    """
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env).expanduser()
    home = Path.home()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA")
        return (Path(base) if base else home / "AppData" / "Local") / "depthstream" / "Cache"
    if sys.platform == "darwin":
        return home / "Library" / "Caches" / "depthstream"
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else home / ".cache") / "depthstream"


def openvino_cache_dir() -> Path:
    """Where converted and quantized models live: ``default_cache_dir() / "openvino"``."""
    return default_cache_dir() / "openvino"


def compiled_cache_dir(root: Path | None = None) -> Path:
    """OpenVINO's ``CACHE_DIR`` for compiled blobs, inside the model cache ``root``."""
    return (root or openvino_cache_dir()) / "compiled"


def package_version(name: str) -> str:
    """An installed distribution's version from its metadata (nothing is imported)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "none"


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._" else "-" for c in text)


@dataclass(frozen=True)
class CheckpointId:
    """What a checkpoint is, for the cache: its tensors' digest and where it came from.

    Attributes:
        digest: SHA-256 of the file's bytes (hex); for weights given in memory, the
            tensors' digest.
        weights: the digest of the tensors (:func:`stream.models.weights.state_dict_digest`),
            the cache key; ``None`` for a file not loaded since it last changed.
        size: the file's size in bytes (0 for weights given in memory).
        path: the resolved file, or ``None`` for weights given in memory.
    """

    digest: str
    weights: str | None = None
    size: int = 0
    path: Path | None = None

    @property
    def short(self) -> str:
        """The part of the cache key that names the checkpoint (its tensors' digest).

        Raises:
            ValueError: the file's tensors were not digested yet (:func:`remember`).
        """
        if self.weights is None:
            raise ValueError(f"{self.path} has not been loaded since it changed")
        return self.weights

    @classmethod
    def from_state_dict(cls, state: dict) -> CheckpointId:
        """The id of weights given in memory (their tensors' digest; needs torch)."""
        from stream.models.weights import state_dict_digest

        digest = state_dict_digest(state)
        return cls(digest=digest, weights=digest)


def _hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def fingerprint(path: str | os.PathLike, root: Path | None = None) -> CheckpointId:
    """The checkpoint file's id, hashing it only when its size or modification time changed.

    The last hash of each file is kept in ``root/checkpoints.json`` with the size and
    ``st_mtime_ns`` it was made at; a file rewritten in place (new time or size) is
    hashed again, so its old cache entries are no longer found.

    Raises:
        OSError: the file cannot be read.
    """
    file = Path(path).expanduser().resolve()
    st = file.stat()
    root = root or openvino_cache_dir()
    index_path = root / _INDEX
    index = _read_json(index_path)
    known = index.get(str(file))
    if (isinstance(known, dict) and known.get("size") == st.st_size
            and known.get("mtime_ns") == st.st_mtime_ns and isinstance(known.get("sha256"), str)):
        weights = known.get("weights")
        return CheckpointId(known["sha256"], weights if isinstance(weights, str) else None,
                            st.st_size, file)
    digest = _hash_file(file)
    # The same bytes seen at another path (a copy) were digested already.
    weights = next((v.get("weights") for v in index.values() if isinstance(v, dict)
                    and v.get("sha256") == digest and isinstance(v.get("weights"), str)), None)
    index[str(file)] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest,
                        "weights": weights}
    _write_index(index_path, index)
    return CheckpointId(digest, weights, st.st_size, file)


def remember(source: CheckpointId, weights: str, root: Path | None = None) -> CheckpointId:
    """``source`` with its tensors' digest, kept in the index for the next start."""
    if source.path is None:
        return CheckpointId(source.digest, weights, source.size, None)
    index_path = (root or openvino_cache_dir()) / _INDEX
    index = _read_json(index_path)
    known = index.get(str(source.path))
    if isinstance(known, dict) and known.get("sha256") == source.digest:
        known["weights"] = weights
        _write_index(index_path, index)
    return CheckpointId(source.digest, weights, source.size, source.path)


def _write_index(index_path: Path, index: dict) -> None:
    try:
        index_path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(index_path, index)
    except OSError as exc:  # a read-only cache costs a hash (and a load) per start
        log.debug("cannot update %s: %s", index_path, exc)


def _code_digest(spec: ModelSpec) -> str:
    """Hash of what shapes the converted graph besides the weights (no import of torch)."""
    h = hashlib.sha256()
    for source in spec.source_files:
        h.update(source.read_bytes())
    h.update(repr((spec.builder, spec.build_args)).encode())
    h.update(f"timm {package_version('timm')} torch {package_version('torch')} "
             f"format {IR_FORMAT}".encode())
    return h.hexdigest()[:8]


@dataclass(frozen=True)
class CacheEntry:
    """One cached model: a folder with ``model.xml``, ``model.bin`` and ``meta.json``."""

    path: Path

    @property
    def xml(self) -> Path:
        """The IR's graph file."""
        return self.path / "model.xml"

    def exists(self) -> bool:
        """Whether the entry is in place (its files may still be damaged)."""
        return self.xml.is_file() and (self.path / "model.bin").is_file()

    def meta(self) -> dict[str, Any]:
        """``meta.json`` as a dict (empty when missing or unreadable)."""
        return _read_json(self.path / "meta.json")

    def write(self, save: Callable[[Path], None], meta: dict[str, Any]) -> bool:
        """Make the entry: ``save(folder)`` writes the model files, then ``meta.json``.

        The folder appears whole or not at all. A failure to write costs only a later
        start the same work again, so it is logged, not raised.

        Returns:
            True when the entry is in place.
        """
        try:
            if self.path.exists():  # a damaged entry being replaced
                shutil.rmtree(self.path, ignore_errors=True)
            with atomic_dir(self.path) as tmp:
                save(tmp)
                (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        except (RuntimeError, OSError) as exc:
            log.warning("cannot write the model cache entry %s (%s)", self.path, exc)
            return False
        return True

    def update_meta(self, changes: dict[str, Any]) -> bool:
        """Merge ``changes`` into ``meta.json`` (replaced whole); logged, not raised, on failure.

        Returns:
            True when the new ``meta.json`` is in place.
        """
        try:
            write_json_atomic(self.path / "meta.json", {**self.meta(), **changes})
        except OSError as exc:
            log.warning("cannot update the model cache entry %s (%s)", self.path, exc)
            return False
        return True

    def remove(self) -> None:
        """Delete the entry (a damaged one)."""
        shutil.rmtree(self.path, ignore_errors=True)


def _base_name(source: CheckpointId, spec: ModelSpec) -> str:
    version = _safe(package_version("openvino"))
    return f"{_safe(spec.name)}-{source.short}-ov{version}-{_code_digest(spec)}"


def fp32_entry(source: CheckpointId, spec: ModelSpec, root: Path | None = None) -> CacheEntry:
    """The converted fp32 model's entry for ``source`` run as the network ``spec``."""
    return CacheEntry((root or openvino_cache_dir()) / _base_name(source, spec))


def int8_entry(source: CheckpointId, spec: ModelSpec, recipe: str,
               root: Path | None = None) -> CacheEntry:
    """The int8 model's entry for ``source`` made with calibration ``recipe`` (a digest)."""
    nncf = _safe(package_version("nncf"))
    return CacheEntry((root or openvino_cache_dir())
                      / f"{_base_name(source, spec)}-int8-nncf{nncf}-{recipe}")
