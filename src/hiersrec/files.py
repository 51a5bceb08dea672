"""Atomic file and folder writes: a reader (or a crash) sees the old content or the new one, never a mix.

Every file hiersrec writes for others to read (run directories, prepared datasets, results, recommendations)
goes through these helpers: the bytes are written to a temporary name beside the target, flushed to disk, and
renamed into place; a folder is built next to its target and swapped in once complete.

A folder writer also holds the target's *claim* (`claim_target`) while it works: a lock file
``.<name>.lock`` beside the target, so that a second writer of the same target fails at once instead of one
silently overwriting the other. Holding the claim, it may tidy what killed writers left beside the target
(``.<name>.tmp-*`` folders, and ``.<name>.old-*`` ones of an interrupted swap, see `replace_directory`).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from glob import escape
from pathlib import Path
from typing import Any

from hiersrec.errors import ArtifactError

logger = logging.getLogger(__name__)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file beside it, fsync, rename)."""
    with replacing_file(path) as partial, open(partial, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def write_json_atomic(path: str | Path, payload: Any) -> None:
    """Write ``payload`` as indented, key-sorted JSON to ``path`` atomically."""
    write_bytes_atomic(path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


def write_with_atomic(path: str | Path, write: Callable[[Path], None]) -> None:
    """Let ``write(temporary_path)`` produce the file, then move it to ``path`` atomically.

    For writers that take a path (``torch.save``, ``pyarrow.parquet.ParquetWriter``).
    """
    with replacing_file(path) as partial:
        write(partial)
        with open(partial, "rb") as written:
            os.fsync(written.fileno())


@contextmanager
def replacing_file(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path``; on a clean exit it replaces ``path``, on an error it is removed."""
    path = Path(path)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    os.close(handle)
    partial = Path(name)
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def fsync_directory(directory: str | Path) -> None:
    """Flush a folder's entries (new names, renames) to disk."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sibling_temp_dir(target: str | Path, purpose: str = "tmp") -> Path:
    """A new, empty hidden folder beside ``target`` (same file system, so it can be renamed onto it)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    directory = target.parent / f".{target.name}.{purpose}-{uuid.uuid4().hex[:8]}"
    directory.mkdir()
    return directory


def existing_entries(target: str | Path) -> list[str]:
    """The names in the folder ``target``, sorted; ``[]`` when it does not exist or is empty.

    For writers deciding whether an existing ``target`` is theirs to replace.

    Raises:
        ArtifactError: ``target`` exists and is not a folder.
    """
    target = Path(target)
    if not target.exists() and not target.is_symlink():
        return []
    if not target.is_dir():
        raise ArtifactError(f"{target}: exists and is not a folder; write elsewhere or remove it yourself")
    return sorted(entry.name for entry in target.iterdir())


def replace_directory(new: str | Path, target: str | Path) -> None:
    """Move the complete folder ``new`` to ``target``; an existing ``target`` is replaced only now.

    On Linux the two folders are exchanged in one atomic step, so ``target`` always names a complete folder,
    even if the process is killed. Where the system cannot exchange, the old folder is renamed aside to
    ``.<name>.old-*`` first and restored if the second rename fails; a kill between the two renames leaves
    ``target`` missing until `recover_directory` (or the next `claim_target` of it) puts the old one back.
    """
    new, target = Path(new), Path(target)
    if not target.exists():
        new.rename(target)
        fsync_directory(target.parent)
        return
    if _exchange(new, target):
        fsync_directory(target.parent)
        _remove(new)  # it now holds the previous folder (or the link that named it)
        return
    old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
    target.rename(old)
    try:
        new.rename(target)
    except BaseException:
        old.rename(target)
        raise
    fsync_directory(target.parent)
    shutil.rmtree(old, ignore_errors=True)


class TargetBusyError(ArtifactError):
    """Another writer holds the claim on the target (see `claim_target`)."""


# Claims this process holds: lock path -> [file descriptor, depth, owning thread]. A claim is re-entrant in
# its thread, so that a command can claim its output early and the library writer it calls claims it again.
_claims: dict[Path, list[int]] = {}
_claims_guard = threading.Lock()


@contextmanager
def claim_target(target: str | Path) -> Iterator[Path]:
    """Hold the write claim on ``target`` (a file or folder path) for the ``with`` block.

    The claim is an exclusive ``flock`` on ``.<name>.lock`` beside ``target``, holding the writer's pid; the
    kernel drops it when the process dies, so a lock file left by a killed writer is taken over (with a
    warning). Once claimed, a ``target`` missing after an interrupted swap is restored from its
    ``.<name>.old-*`` folder and the ``.<name>.tmp-*`` / ``.<name>.old-*`` folders of killed writers are
    removed. Re-entrant within one thread.

    Yields:
        ``target`` as a `Path`.

    Raises:
        TargetBusyError: another process (or thread) holds the claim.
        ArtifactError: the folder of ``target`` cannot be created or written (for example, a file is in its
            way).
    """
    target = Path(target)
    lock = _lock_path(target)
    with _claims_guard:
        held = _claims.get(lock)
        if held is not None and held[2] != threading.get_ident():
            raise TargetBusyError(f"{target}: being written by another thread of this process")
        if held is not None:
            held[1] += 1
    if held is not None:
        try:
            yield target
        finally:
            with _claims_guard:
                held[1] -= 1
        return
    fd = _acquire(lock, target)
    with _claims_guard:
        _claims[lock] = [fd, 1, threading.get_ident()]
    try:
        _tidy(target)
        yield target
    finally:
        with _claims_guard:
            del _claims[lock]
        # Unlinked before the lock is dropped: a writer that opened the old file notices (see _acquire).
        lock.unlink(missing_ok=True)
        os.close(fd)


def recover_directory(target: str | Path, *, wait_s: float = 10.0) -> None:
    """Restore ``target`` from its ``.<name>.old-*`` folder when a replacement was interrupted mid-swap.

    Does nothing when ``target`` exists or no such folder is beside it (the usual case: one ``stat``). Readers
    call it before opening a folder. When a writer holds the claim, this waits up to ``wait_s`` seconds for
    it to finish the swap; where the claim cannot be taken at all (a read-only folder) it leaves things as
    they are.
    """
    target = Path(target)
    deadline = time.monotonic() + wait_s
    while not target.exists() and _leftovers(target, "old"):
        try:
            with claim_target(target):
                return
        except TargetBusyError:
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)
        except ArtifactError:
            return


def _lock_path(target: Path) -> Path:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        blocking = next((p for p in target.parents if p.exists()), None)
        why = f"{blocking} is a file" if blocking is not None and not blocking.is_dir() else error.strerror
        raise ArtifactError(f"{target}: cannot create its folder {target.parent} ({why})") from error
    return target.parent.resolve() / f".{target.name}.lock"


def _acquire(lock: Path, target: Path) -> int:
    import fcntl  # POSIX only, as the folder writes themselves (fsync of a folder); importing hiersrec needs none

    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise ArtifactError(f"{target}: cannot write beside it ({lock}: {error.strerror})") from error
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise TargetBusyError(
                f"{target}: being written by another process ({f'pid {holder}' if holder else 'starting'}; lock "
                f"{lock}); wait for it to finish or write elsewhere"
            ) from None
        # The previous holder may have unlinked the file between our open and flock: we then hold a lock on
        # a file nobody else sees, and must lock the current one instead.
        try:
            current = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    stale = _read_pid(fd)
    if stale:
        logger.warning("%s: taking over the lock left by pid %s, which ended without releasing it", target, stale)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _read_pid(fd: int) -> str:
    return os.pread(fd, 32, 0).decode(errors="replace").strip()


def _leftovers(target: Path, purpose: str) -> list[Path]:
    """The ``.<name>.<purpose>-*`` folders beside ``target`` (see `sibling_temp_dir`)."""
    return [p for p in target.parent.glob(f".{escape(target.name)}.{purpose}-*") if p.is_dir()]


def _tidy(target: Path) -> None:
    # Runs with the claim held, so no live writer owns any of these folders.
    olds = _leftovers(target, "old")
    if olds and not target.exists():
        latest = max(olds, key=lambda p: p.stat().st_ctime)  # a rename updates ctime
        latest.rename(target)
        fsync_directory(target.parent)
        logger.warning("%s: was missing after an interrupted replacement; restored it from %s", target, latest.name)
    stale = _leftovers(target, "tmp") + _leftovers(target, "old")
    for path in stale:
        _remove(path)
    if stale:
        logger.warning("%s: removed %s, left by interrupted writes", target, ", ".join(p.name for p in stale))


def _remove(path: Path) -> None:
    # A link is removed, never what it points to.
    if path.is_symlink():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap the paths ``a`` and ``b`` in one atomic step; False where the system or file system cannot."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    # Linux's renameat2 (glibc >= 2.28) is the only portable-enough way to exchange two paths atomically.
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function
