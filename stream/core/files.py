"""Files: the one way depthstream puts a file (or cache folder) at its final path.

Touches files; starts no threads. Every output is first written to a temporary in the
same folder, named ``<name>.ds<host>-<pid>-<token>.part``, flushed and renamed into place, and
removed on every failure path, so a final path holds either nothing or a whole file.
Temporaries are created with the mode the umask gives (like any file the user makes),
not ``mkstemp``'s 0600. A temporary left by a process that died (``kill -9``) is
removed by the next run that writes into the same folder: the pid in the name tells
whether its writer is still alive.

An output checked free with :func:`check_output_path` (no ``overwrite``) is *claimed*:
publishing it later never replaces a file that appeared there meanwhile (another run
writing the same path). The rename is then a no-replace one (``renameat2`` with
``RENAME_NOREPLACE``, else a hard link), the finished file is kept under the first free
name next to it (``out-2.mp4``) and :class:`OutputTaken` says where, in one line.
Long writers that must end their file to make it usable (a video's index) write through
a :class:`ReservedFile`, which keeps some disk space aside for that ending.

Example:
    >>> with atomic_open(Path("out.csv"), "w") as f:  # doctest: +SKIP
    ...     f.write("index,timestamp")
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
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
    "OutputTaken",
    "PartFile",
    "ReservedFile",
    "atomic_dir",
    "atomic_open",
    "check_output_path",
    "check_not_input",
    "check_writable_folder",
    "disk_full",
    "keep_beside",
    "part_name",
    "rename_no_replace",
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
_claimed: set[str] = set()  # outputs checked free without overwrite, not published yet
_claimed_lock = threading.Lock()
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
# renameat2's flag and "the current folder" (Linux); other systems use a hard link.
_RENAME_NOREPLACE, _AT_FDCWD = 1, -100


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


def part_name(target: Path) -> Path:
    """A temporary name beside ``target`` that the sweep of dead writers recognises."""
    tag = f"ds{_host_tag()}-{os.getpid()}-{secrets.token_hex(4)}"
    return target.with_name(f"{target.name}.{tag}{PART_SUFFIX}")


class OutputTaken(SinkError):
    """The output appeared while this run wrote it; the finished file was kept elsewhere.

    Attributes:
        target: the output path, now holding someone else's file.
        kept: where this run's finished file is.
    """

    def __init__(self, target: Path, kept: Path) -> None:
        super().__init__(f"{target} appeared while this run was writing it (another run?); "
                         f"the finished output was kept in {kept}")
        self.target, self.kept = target, kept


def disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or an error it was raised from) says the disk or quota is full."""
    seen = 0
    while exc is not None and seen < 16:
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _claim_key(path: str | os.PathLike) -> str:
    return os.path.normcase(os.path.abspath(path))


def _claim(path: Path, claimed: bool) -> None:
    with _claimed_lock:
        (_claimed.add if claimed else _claimed.discard)(_claim_key(path))


def _is_claimed(path: Path) -> bool:
    with _claimed_lock:
        return _claim_key(path) in _claimed


def _renameat2(src: Path, dst: Path) -> bool | None:
    """``renameat2(RENAME_NOREPLACE)``: True done, False ``dst`` exists, None unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.renameat2
    except (OSError, AttributeError):  # not Linux, or a C library without it
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                     ctypes.c_uint]
    if call(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
        return True
    code = ctypes.get_errno()
    if code == errno.EEXIST:
        return False
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return None  # this file system cannot do it
    raise OSError(code, os.strerror(code), str(dst))


def rename_no_replace(src: str | os.PathLike, dst: str | os.PathLike) -> bool:
    """Rename ``src`` to ``dst`` unless ``dst`` exists; False (nothing moved) if it does.

    Atomic where the system allows: ``renameat2`` with ``RENAME_NOREPLACE`` (Linux), else
    a hard link and unlink; on a file system with neither, a check then a rename.

    Raises:
        OSError: the rename failed otherwise.
    """
    src, dst = Path(src), Path(dst)
    done = _renameat2(src, dst)
    if done is not None:
        return done
    try:
        os.link(src, dst)
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV,
                             errno.EMLINK):
            raise
        if os.path.lexists(dst):  # no hard links here: the best that can be done
            return False
        os.rename(src, dst)
        return True
    os.unlink(src)
    return True


def keep_beside(src: str | os.PathLike, target: str | os.PathLike, tag: str = "") -> Path:
    """Rename ``src`` to the first free name beside ``target`` (``out-2.mp4``, ``out-3.mp4``...).

    With ``tag``: ``out.<tag>.mp4``, then ``out.<tag>-2.mp4``... Never replaces a file.

    Raises:
        OSError: the rename failed (other than a name being taken).
    """
    target = Path(target)
    stem = f"{target.stem}.{tag}" if tag else target.stem
    for number in range(1 if tag else 2, 10_000):
        name = stem if number == 1 else f"{stem}-{number}"
        candidate = target.with_name(name + target.suffix)
        if rename_no_replace(src, candidate):
            return candidate
    raise OSError(errno.EEXIST, "no free name", str(target))


class PartFile:
    """A temporary next to ``target`` that becomes ``target`` on :meth:`commit`.

    For writers that keep a file open for a long time (a video encoder): create, write to
    :attr:`path`, then :meth:`commit` or :meth:`discard` (both safe to call twice).

    Args:
        target: the final path.
        replace: replace a file at ``target`` when committing; ``False``: never (the
            finished file is kept beside it, :class:`OutputTaken`); default: replace
            unless ``target`` was claimed by :func:`check_output_path` without
            ``overwrite``.

    Raises:
        SinkError: the folder cannot be written (one line naming it).
    """

    def __init__(self, target: str | os.PathLike, replace: bool | None = None) -> None:
        self.target = Path(target)
        self.replace = not _is_claimed(self.target) if replace is None else replace
        folder = self.target.parent
        _sweep_once(folder)
        self.path = part_name(self.target)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except OSError as exc:
            raise SinkError(f"cannot write in {folder}: {_reason(exc)}") from exc
        os.close(fd)
        self._done = False

    def commit(self) -> Path:
        """Rename the temporary into place; return the final path.

        Raises:
            OutputTaken: without ``replace``, a file appeared at the target meanwhile;
                the temporary was kept beside it under a free name.
            SinkError: the rename failed (the temporary is removed).
        """
        if self._done:
            return self.target
        self._done = True
        try:
            if self.replace:
                os.replace(self.path, self.target)
            elif not rename_no_replace(self.path, self.target):
                raise OutputTaken(self.target, keep_beside(self.path, self.target))
        except OutputTaken:
            raise
        except OSError as exc:
            self._remove()
            raise SinkError(f"cannot write {self.target}: {_reason(exc)}") from exc
        finally:
            _claim(self.target, False)
        return self.target

    def keep_beside(self, tag: str) -> Path:
        """Keep the temporary under a free name beside the target (``out.<tag>.mp4``).

        For what must not stand at the final path but is worth keeping (the frames a
        full disk let a video keep).

        Raises:
            SinkError: the rename failed (the temporary is removed).
        """
        self._done = True
        _claim(self.target, False)
        try:
            return keep_beside(self.path, self.target, tag)
        except OSError as exc:
            self._remove()
            raise SinkError(f"cannot write beside {self.target}: {_reason(exc)}") from exc

    def discard(self) -> None:
        """Remove the temporary (nothing appears at the final path)."""
        if not self._done:
            self._done = True
            _claim(self.target, False)
            self._remove()

    def _remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()


class ReservedFile:
    """A binary file with disk space kept aside, so that its writer can end it on a full disk.

    A writer whose last bytes make its file usable (a video's index, written when it is
    closed) writes through this (PyAV takes it as a file object). ``reserve_bytes`` of
    the disk are held in a second temporary beside ``path``,
    ``<target>.reserve.<...>.part`` (the naming of :class:`PartFile`, so a dead run's
    reserve is swept too). When a write finds the disk full, the reserve is given back
    and the write tried again; :attr:`disk_full` then says so, and the writer should end
    its file now. Where a file system does not really hold preallocated space
    (compressed or copy-on-write ones), the reserve may not help. Touches files; starts
    no threads.

    Raises:
        SinkError: ``path`` cannot be opened, or not even the reserve fits on the disk.
    """

    def __init__(self, path: str | os.PathLike, target: str | os.PathLike,
                 reserve_bytes: int) -> None:
        self.path = Path(path)
        self.disk_full = False
        target = Path(target)
        self._reserve: Path | None = part_name(target.with_name(f"{target.name}.reserve"))
        self._reserved = 0
        self._file: Any = None
        try:
            self._file = open(self.path, "r+b", buffering=0)  # noqa: SIM115 - closed in close()
            if not self.grow_reserve(reserve_bytes):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
        except OSError as exc:
            self.close()
            raise SinkError(f"cannot write in {self.path.parent}: {_reason(exc)}") from exc

    def grow_reserve(self, reserve_bytes: int) -> bool:
        """Hold at least ``reserve_bytes`` aside; False when the disk has no room for it.

        After False (or once the reserve was given back) the writer should end its file.
        """
        if self._reserve is None:
            return False
        if reserve_bytes <= self._reserved:
            return True
        try:
            fd = os.open(self._reserve, os.O_WRONLY | os.O_CREAT, 0o666)
            try:
                _allocate(fd, reserve_bytes)
            finally:
                os.close(fd)
        except OSError as exc:
            if exc.errno not in _DISK_FULL:
                raise
            self.disk_full = True
            return False
        self._reserved = reserve_bytes
        return True

    def write(self, data: Any) -> int:
        """Write all of ``data``; on a full disk give the reserve back and go on once."""
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            try:
                done += self._file.write(view[done:]) or 0
            except OSError as exc:
                if exc.errno not in _DISK_FULL or not self._release():
                    raise
                self.disk_full = True
        return done

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:  # noqa: D102
        return self._file.seek(offset, whence)

    def tell(self) -> int:  # noqa: D102
        return self._file.tell()

    def close(self) -> None:
        """Close the file and give the reserve back (safe to call twice)."""
        if self._file is not None and not self._file.closed:
            self._file.close()
        self._release()

    def _release(self) -> bool:
        """Remove the reserve; False if there was none left."""
        if self._reserve is None:
            return False
        reserve, self._reserve = self._reserve, None
        with contextlib.suppress(OSError):
            reserve.unlink()
        return True


def _allocate(fd: int, size: int) -> None:
    """Make the file ``fd`` hold ``size`` bytes of disk (zeros where it cannot preallocate)."""
    if hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(fd, 0, size)
            return
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
    current = os.fstat(fd).st_size
    os.lseek(fd, current, os.SEEK_SET)
    chunk = bytes(min(1 << 20, max(0, size - current)))
    while current < size:
        current += os.write(fd, chunk[: size - current])
    os.fsync(fd)


@contextlib.contextmanager
def atomic_open(target: str | os.PathLike, mode: str = "wb", *, replace: bool | None = None,
                **kwargs: Any) -> Iterator[IO]:
    """Open a temporary for writing; on a clean exit flush, sync and rename it to ``target``.

    On any exception the temporary is removed and the exception propagates (an
    ``OSError`` as :class:`SinkError` naming the file). ``replace``: as for
    :class:`PartFile`.
    """
    part = PartFile(target, replace=replace)
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


def write_bytes_atomic(target: str | os.PathLike, data: bytes, *,
                       replace: bool | None = None) -> Path:
    """Write ``data`` to ``target`` atomically; return ``target`` as a Path.

    ``replace``: as for :class:`PartFile`.
    """
    with atomic_open(target, "wb", replace=replace) as f:
        f.write(data)
    return Path(target)


def write_text_atomic(target: str | os.PathLike, text: str, *,
                      replace: bool | None = None) -> Path:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    return write_bytes_atomic(target, text.encode("utf-8"), replace=replace)


def write_json_atomic(target: str | os.PathLike, obj: Any, *,
                      replace: bool | None = None) -> Path:
    """Write ``obj`` as indented JSON (with a final newline) to ``target`` atomically."""
    return write_text_atomic(target, json.dumps(obj, indent=2) + "\n", replace=replace)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder that is renamed to ``target`` on a clean exit (a cache entry).

    If another process put ``target`` in place first, that one is kept and ours is
    removed: both hold the same content by construction of the cache key.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _sweep_once(target.parent)
    tmp = part_name(target)
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

    Without ``overwrite`` the path is claimed: a :class:`PartFile` published there later
    does not replace a file that appeared meanwhile (:class:`OutputTaken`).

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
    _claim(target, not overwrite)
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
