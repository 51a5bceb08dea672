"""Atomic file and folder writes: a reader (or a crash) sees the old content or the new one, never a mix.

Every file hiersrec writes for others to read (run directories, prepared datasets, results, recommendations)
goes through these helpers: the bytes are written to a temporary name beside the target, flushed to disk, and
renamed into place; a folder is built next to its target and swapped in once complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


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


def replace_directory(new: str | Path, target: str | Path) -> None:
    """Move the complete folder ``new`` to ``target``; an existing ``target`` is replaced only now.

    The old folder is renamed aside first and restored if the second rename fails, so ``target`` always
    names a complete folder.
    """
    new, target = Path(new), Path(target)
    if not target.exists():
        new.rename(target)
    else:
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        target.rename(old)
        try:
            new.rename(target)
        except BaseException:
            old.rename(target)
            raise
        shutil.rmtree(old, ignore_errors=True)
    fsync_directory(target.parent)
