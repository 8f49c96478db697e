"""Files: the one way depthstream puts a file (or cache folder) at its final path.

Touches files; starts no threads. Every output is first written to a temporary in the
same folder, named ``<name>.ds<host>-<pid>-<token>.part``, flushed and renamed into place, and
removed on every failure path, so a final path holds either nothing or a whole file.
Temporaries are created with the mode the umask gives (like any file the user makes),
not ``mkstemp``'s 0600. A temporary left by a process that died (``kill -9``) is
removed by the next run that writes into the same folder: the pid in the name tells
whether its writer is still alive.

Example:
    >>> with atomic_open(Path("out.csv"), "w") as f:  # doctest: +SKIP
    ...     f.write("index,timestamp")
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from stream.core.errors import SinkError

__all__ = [
    "PART_SUFFIX",
    "PartFile",
    "atomic_dir",
    "atomic_open",
    "check_output_path",
    "check_not_input",
    "check_writable_folder",
    "remove_stale_parts",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_text_atomic",
]

PART_SUFFIX = ".part"
_PART_RE = re.compile(
    r"^(?P<name>.+)\.ds(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-[0-9a-f]{8}\.part$")
_swept: set[Path] = set()
_swept_lock = threading.Lock()


def _host_tag() -> str:
    """A short tag of this machine's name.

    On storage shared between machines only this machine's dead writers are recognised
    as dead: a pid means nothing on another machine.
    """
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def remove_stale_parts(folder: str | os.PathLike) -> list[Path]:
    """Remove temporaries of our naming pattern in ``folder`` whose writer is dead.

    Returns:
        The paths removed (files, or cache folders left half-built).
    """
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _PART_RE.match(entry.name)
        if (match is None or match["host"] != _host_tag()
                or _pid_alive(int(match["pid"]))):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
        except OSError:
            pass  # another run got there first, or not ours to remove
    return removed


def _sweep_once(folder: Path) -> None:
    with _swept_lock:
        if folder in _swept:
            return
        _swept.add(folder)
    remove_stale_parts(folder)


def _part_name(target: Path) -> Path:
    tag = f"ds{_host_tag()}-{os.getpid()}-{secrets.token_hex(4)}"
    return target.with_name(f"{target.name}.{tag}{PART_SUFFIX}")


class PartFile:
    """A temporary next to ``target`` that becomes ``target`` on :meth:`commit`.

    For writers that keep a file open for a long time (a video encoder): create, write to
    :attr:`path`, then :meth:`commit` or :meth:`discard` (both safe to call twice).

    Raises:
        SinkError: the folder cannot be written (one line naming it).
    """

    def __init__(self, target: str | os.PathLike) -> None:
        self.target = Path(target)
        folder = self.target.parent
        _sweep_once(folder)
        self.path = _part_name(self.target)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except OSError as exc:
            raise SinkError(f"cannot write in {folder}: {_reason(exc)}") from exc
        os.close(fd)
        self._done = False

    def commit(self) -> Path:
        """Rename the temporary into place; return the final path."""
        if not self._done:
            self._done = True
            try:
                os.replace(self.path, self.target)
            except OSError as exc:
                self._remove()
                raise SinkError(f"cannot write {self.target}: {_reason(exc)}") from exc
        return self.target

    def discard(self) -> None:
        """Remove the temporary (nothing appears at the final path)."""
        if not self._done:
            self._done = True
            self._remove()

    def _remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()


@contextlib.contextmanager
def atomic_open(target: str | os.PathLike, mode: str = "wb", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary for writing; on a clean exit flush, sync and rename it to ``target``.

    On any exception the temporary is removed and the exception propagates (an
    ``OSError`` as :class:`SinkError` naming the file).
    """
    part = PartFile(target)
    try:
        with open(part.path, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        part.discard()
        if isinstance(exc, SinkError):
            raise
        raise SinkError(f"cannot write {part.target}: {_reason(exc)}") from exc
    except BaseException:
        part.discard()
        raise
    part.commit()


def write_bytes_atomic(target: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically; return ``target`` as a Path."""
    with atomic_open(target, "wb") as f:
        f.write(data)
    return Path(target)


def write_text_atomic(target: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    return write_bytes_atomic(target, text.encode("utf-8"))


def write_json_atomic(target: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (with a final newline) to ``target`` atomically."""
    return write_text_atomic(target, json.dumps(obj, indent=2) + "\n")


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder that is renamed to ``target`` on a clean exit (a cache entry).

    If another process put ``target`` in place first, that one is kept and ours is
    removed: both hold the same content by construction of the cache key.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _sweep_once(target.parent)
    tmp = _part_name(target)
    tmp.mkdir(mode=0o777)  # the umask decides, as for any folder the user makes
    try:
        yield tmp
        try:
            os.replace(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_output_path(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Check that ``path`` can be written: its folder exists and it is not there yet.

    Raises:
        SinkError: the folder is missing or not writable, the path is a folder, or it
            exists and ``overwrite`` is False.
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise SinkError(f"output folder does not exist: {folder}")
    if target.is_dir():
        raise SinkError(f"output is a folder: {target}")
    if target.exists() and not overwrite:
        raise SinkError(f"output exists: {target} (use --overwrite to replace it)")
    check_writable_folder(folder)
    return target


def check_writable_folder(folder: str | os.PathLike) -> Path:
    """Check that files can be made in ``folder`` (before any work starts).

    Raises:
        SinkError: it is missing, not a folder, on a read-only file system, or not
            writable by this user (one line naming it).
    """
    folder = Path(folder) if str(folder) else Path(".")
    if not folder.is_dir():
        raise SinkError(f"output folder does not exist: {folder}")
    if not os.access(folder, os.W_OK | os.X_OK):
        try:
            read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
        except (AttributeError, OSError):
            read_only = False
        reason = "read-only file system" if read_only else "permission denied"
        raise SinkError(f"cannot write in {folder}: {reason}")
    return folder


def _identity(path: Path) -> tuple[int, int] | None:
    """``(device, inode)`` of an existing file (the same for every hard link), else None."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: compare it as written
        return path.absolute()


def check_not_input(outputs: Iterable[str | os.PathLike],
                    inputs: Iterable[str | os.PathLike]) -> None:
    """Refuse to write onto an input: same path, a symlink to it, or a hard link of it.

    Paths are compared resolved (``./a.png``, ``dir/../a.png`` and a symlink to ``a.png``
    are ``a.png``) and, for files that exist, by device and inode (hard links). Linear
    in the number of paths, so a folder of thousands of pictures is checked at once.

    Raises:
        SinkError: an output is one of the inputs (one line naming both).
    """
    by_path: dict[Path, Path] = {}
    by_inode: dict[tuple[int, int], Path] = {}
    for src in map(Path, inputs):
        by_path.setdefault(_resolved(src), src)
        identity = _identity(src)
        if identity is not None:
            by_inode.setdefault(identity, src)
    for out in map(Path, outputs):
        src = by_path.get(_resolved(out))
        if src is None:
            identity = _identity(out)
            src = by_inode.get(identity) if identity is not None else None
        if src is not None:
            raise SinkError(f"output {out} would replace the input {src}; "
                            "choose another output (inputs are never overwritten)")
