"""The on-disk form of a `PreparedDataset`: Parquet files plus ``manifest.json``, written atomically.

A prepared dataset folder holds::

    manifest.json        format ("hiersrec-prepared"), format_version, name, counts, options, provenance,
                         per-file sha256 (files), fingerprint
    train.parquet        one row per session: session_idx, item_idx (list<int64>)[, timestamp (list<int64>)]
    test.parquet         same columns
    valid.parquet        same columns, only when the source gave a validation split
    items.parquet        item_idx, item_id, category_idx, then metadata: ``categorical.<name>`` (int64 codes,
                         0 = missing), ``numeric.<name>`` (float32, NaN = missing), ``text`` (string)
    categories.parquet   category_idx, category_id

Session files hold row groups of `ROW_GROUP_SESSIONS` sessions, so that a split can be written chunk by chunk
(`prepared_writer`) and read a row group at a time (`iter_sessions`). Row 0 (padding) is not stored; it is
rebuilt on load. The fingerprint is the sha256 over the data files'
names and sha256 digests, so two folders with the same fingerprint hold byte-identical data files (for one
pyarrow version); `load_prepared` checks every file against its digest and puts the fingerprint in
``provenance["fingerprint"]``.

A folder is a prepared dataset when its ``manifest.json`` says ``"format": "hiersrec-prepared"``. Folders
written before that field existed (format_version 1) are recognised by their manifest's own layout: a
``files`` table of ``*.parquet`` digests and a ``fingerprint``; anything else (a web app's manifest.json, an
unparsable one) is foreign, and `save_prepared` refuses to replace it.

Writes never leave a half-written folder behind: everything goes into a temporary folder next to the target,
each file is fsynced, and the folder is swapped into place (`hiersrec.files.replace_directory`); an existing
target is replaced only once the new one is complete, and only by the writer holding its claim
(`hiersrec.files.claim_target`): a second concurrent writer fails.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hiersrec._version import __version__
from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.messages import one_line
from hiersrec.data.prepared import PreparedDataset
from hiersrec.data.sessions import SessionData
from hiersrec.data.vocab import PAD_TOKEN, Vocab
from hiersrec.errors import ArtifactError
from hiersrec.files import (
    claim_target,
    existing_entries,
    fsync_directory,
    recover_directory,
    replace_directory,
    sibling_temp_dir,
    write_bytes_atomic,
)

logger = logging.getLogger(__name__)

FORMAT = "hiersrec-prepared"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_SPLITS = ("train", "test", "valid")
# Sessions per row group of a split's file: pyarrow's default row-group size (whole tables were written so).
ROW_GROUP_SESSIONS = 1024 * 1024
_CATEGORICAL, _NUMERIC, _TEXT = "categorical.", "numeric.", "text"


def save_prepared(dataset: PreparedDataset, out_dir: str | Path) -> Path:
    """Write ``dataset`` to ``out_dir`` atomically and return the folder's path.

    An existing prepared dataset at ``out_dir`` is replaced only after the new one is complete. The
    fingerprint of the written files is not stored back into ``dataset`` (it is frozen); `load_prepared`
    returns it.

    Raises:
        ArtifactError: ``out_dir`` exists and is neither empty nor a prepared dataset (`require_replaceable`;
            nothing is changed), or it is being written by another process.
    """
    with prepared_writer(out_dir) as writer:
        for split in _SPLITS:
            sessions = getattr(dataset, split)
            if sessions is not None:
                writer.append(split, sessions)
        writer.finish(
            name=dataset.name,
            vocab=dataset.vocab,
            catalog=dataset.catalog,
            options=dataset.options,
            provenance=dataset.provenance,
        )
    return Path(out_dir)


class PreparedWriter:
    """Writes the files of a prepared dataset into a folder, sessions chunk by chunk (see `prepared_writer`).

    Sessions are stored in row groups of `ROW_GROUP_SESSIONS` sessions whatever the chunks appended, so that
    the same sessions give the same bytes however they arrive (one `SessionData` or many pieces).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._splits: dict[str, _SessionFileWriter] = {}
        self.manifest: dict[str, Any] | None = None

    def append(self, split: str, sessions: SessionData) -> None:
        """Append ``sessions`` to ``split`` (``"train"``, ``"test"`` or ``"valid"``), after those appended before."""
        assert split in _SPLITS and self.manifest is None
        if split not in self._splits:
            self._splits[split] = _SessionFileWriter(self.directory / f"{split}.parquet", sessions.timestamps)
        self._splits[split].append(sessions)

    def finish(
        self, *, name: str, vocab: Vocab, catalog: ItemCatalog, options: dict[str, Any], provenance: dict[str, Any]
    ) -> dict[str, Any]:
        """Close the session files, write the item and category tables and the manifest; return the manifest."""
        digests, counts = {}, {"items": vocab.n_items, "categories": vocab.n_categories}
        for split in _SPLITS:
            if split in self._splits:
                written = self._splits[split]
                digests[f"{split}.parquet"] = written.close()
                counts[f"{split}_sessions"], counts[f"{split}_clicks"] = written.n_sessions, written.n_clicks
        tables = {"items": _items_table(vocab, catalog), "categories": _categories_table(vocab)}
        for stem, table in tables.items():
            digests[f"{stem}.parquet"] = _write_table(table, self.directory / f"{stem}.parquet")
        self.manifest = _manifest(name, counts, digests, options, provenance)
        write_bytes_atomic(
            self.directory / MANIFEST, json.dumps(self.manifest, indent=2, default=_json_default).encode()
        )
        return self.manifest

    def abort(self) -> None:
        """Close the session files without finishing (the folder is then removed)."""
        for written in self._splits.values():
            written.abort()


@contextmanager
def prepared_writer(out_dir: str | Path) -> Iterator[PreparedWriter]:
    """Write a prepared dataset to ``out_dir`` piece by piece, atomically: what `save_prepared` does in one call.

    The files go to a temporary folder beside ``out_dir``; when the block ends after `PreparedWriter.finish`,
    the folder replaces ``out_dir``. A block left by an exception (or without ``finish``) leaves ``out_dir``
    as it was.

    Raises:
        ArtifactError: as `save_prepared`, before anything is written.
    """
    out_dir = Path(out_dir)
    with claim_target(out_dir):
        require_replaceable(out_dir)
        tmp = sibling_temp_dir(out_dir)
        writer = PreparedWriter(tmp)
        try:
            yield writer
            if writer.manifest is None:
                raise ArtifactError(f"{out_dir}: the prepared dataset was not finished; nothing was written")
            fsync_directory(tmp)
            replace_directory(tmp, out_dir)
        except BaseException:
            writer.abort()
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    logger.info(
        "wrote prepared dataset %r to %s (fingerprint %s)",
        writer.manifest["name"],
        out_dir,
        writer.manifest["fingerprint"],
    )


def load_prepared(directory: str | Path) -> PreparedDataset:
    """Read a folder written by `save_prepared`, checking its format version and file digests.

    Raises:
        ArtifactError: the manifest is missing or unreadable, of another format version, or a data file is
            missing or does not match its digest.
    """
    directory = Path(directory)
    manifest, vocab, catalog = read_prepared_catalog(directory)
    splits = {
        split: _read_sessions(directory / f"{split}.parquet")
        for split in _SPLITS
        if f"{split}.parquet" in manifest["files"]
    }
    provenance = {**manifest["provenance"], "fingerprint": manifest["fingerprint"]}
    return PreparedDataset(
        name=manifest["name"],
        train=splits["train"],
        test=splits["test"],
        valid=splits.get("valid"),
        vocab=vocab,
        catalog=catalog,
        options=manifest["options"],
        provenance=provenance,
    )


def read_prepared_catalog(directory: str | Path) -> tuple[dict[str, Any], Vocab, ItemCatalog]:
    """The manifest, vocabulary and catalogue of a prepared dataset folder, without its sessions.

    Every data file is checked against its digest first, as `load_prepared` does; the sessions can then be
    read a row group at a time (`iter_sessions`) when they do not fit in memory.

    Raises:
        ArtifactError: as `load_prepared`.
    """
    directory = Path(directory)
    recover_directory(directory)
    manifest = read_manifest(directory)
    for filename, digest in manifest["files"].items():
        path = directory / filename
        if not path.is_file():
            raise ArtifactError(f"{path}: listed in {MANIFEST} but missing; prepare the dataset again")
        if sha256_file(path) != digest:
            raise ArtifactError(f"{path}: content does not match its sha256 in {MANIFEST}; prepare the dataset again")
    categories = pq.read_table(directory / "categories.parquet")
    items = pq.read_table(directory / "items.parquet")
    vocab = Vocab(
        item_ids=(PAD_TOKEN, *items.column("item_id").to_pylist()),
        category_ids=(PAD_TOKEN, *categories.column("category_id").to_pylist()),
    )
    return manifest, vocab, _catalog_from_table(items, vocab.n_categories)


def iter_sessions(directory: str | Path, split: str, *, with_timestamps: bool = True) -> Iterator[SessionData]:
    """The sessions of one split of a prepared dataset folder, one row group (`ROW_GROUP_SESSIONS`) at a time.

    Digests are not checked here (`read_prepared_catalog` does).
    """
    handle = pq.ParquetFile(Path(directory) / f"{split}.parquet")
    columns = (
        ["item_idx", "timestamp"] if with_timestamps and "timestamp" in handle.schema_arrow.names else ["item_idx"]
    )
    for group in range(handle.num_row_groups):
        yield _sessions_from_table(handle.read_row_group(group, columns=columns))


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The parsed ``manifest.json`` of a prepared dataset folder (format and format version checked).

    Raises:
        ArtifactError: the manifest is missing, unreadable, not a prepared dataset's (module docstring), or of
            another format version.
    """
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ArtifactError(
            f"{path}: not found; is {path.parent} a prepared dataset ('hiersrec data prepare')?"
        ) from error
    except (OSError, ValueError) as error:
        raise ArtifactError(f"{path}: unreadable ({one_line(error)}); prepare the dataset again") from error
    if not _is_prepared_manifest(manifest):
        raise ArtifactError(
            f'{path}: not the manifest of a hiersrec prepared dataset (no "format": "{FORMAT}"); '
            f"is {path.parent} a prepared dataset ('hiersrec data prepare')?"
        )
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: format_version {version!r}, this hiersrec reads {FORMAT_VERSION}; prepare the dataset again"
        )
    return manifest


def is_prepared_dir(directory: str | Path) -> bool:
    """Whether ``directory`` holds a manifest that marks it as a prepared dataset (of any format version)."""
    try:
        return _is_prepared_manifest(json.loads((Path(directory) / MANIFEST).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return False


def require_replaceable(out_dir: str | Path) -> None:
    """Raise unless ``out_dir`` may be replaced by a prepared dataset: absent, an empty folder, or one.

    A prepared dataset that also holds files of its user (not listed in its manifest) is not replaced either,
    so that nothing but our own files is ever removed; hidden files (``.DS_Store``) do not count.

    Raises:
        ArtifactError: naming why ``out_dir`` is not replaceable (nothing is changed).
    """
    out_dir = Path(out_dir)
    entries = existing_entries(out_dir)
    if not entries:
        return
    refuse = f"choose another --out or remove {out_dir} yourself"
    if MANIFEST not in entries:
        raise ArtifactError(f"{out_dir}: exists and is not a prepared dataset (no {MANIFEST}); {refuse}")
    try:
        manifest = json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ArtifactError(
            f"{out_dir / MANIFEST}: unreadable ({one_line(error)}), so {out_dir} is not known to be a prepared "
            f"dataset; {refuse}"
        ) from error
    if not _is_prepared_manifest(manifest):
        raise ArtifactError(
            f'{out_dir / MANIFEST}: not the manifest of a hiersrec prepared dataset (no "format": "{FORMAT}"); {refuse}'
        )
    ours = {MANIFEST, *manifest["files"]}
    foreign = sorted(name for name in entries if name not in ours and not name.startswith("."))
    if foreign:
        raise ArtifactError(
            f"{out_dir}: a prepared dataset that also holds other files ({', '.join(foreign[:5])}); {refuse}"
        )


def _is_prepared_manifest(manifest: object) -> bool:
    if not isinstance(manifest, dict):
        return False
    if "format" in manifest:
        return manifest["format"] == FORMAT and isinstance(manifest.get("files"), dict)
    # Written before the "format" field: format_version 1 and the digest layout no other tool writes.
    files = manifest.get("files")
    return (
        manifest.get("format_version") == 1
        and isinstance(manifest.get("fingerprint"), str)
        and isinstance(files, dict)
        and bool(files)
        and all(isinstance(name, str) and name.endswith(".parquet") for name in files)
    )


class _SessionFileWriter:
    # One split's Parquet file, written one row group of ROW_GROUP_SESSIONS sessions at a time.

    def __init__(self, path: Path, timestamps: np.ndarray | None) -> None:
        self.path = path
        self.with_timestamps = timestamps is not None
        self.n_sessions = self.n_clicks = 0
        self._pending: list[SessionData] = []
        self._pending_sessions = 0
        self._writer: pq.ParquetWriter | None = None

    def append(self, sessions: SessionData) -> None:
        assert (sessions.timestamps is not None) == self.with_timestamps, "every chunk has timestamps, or none"
        self._pending.append(sessions)
        self._pending_sessions += sessions.n_sessions
        while self._pending_sessions >= ROW_GROUP_SESSIONS:
            self._write_pending(ROW_GROUP_SESSIONS)

    def close(self) -> str:
        if self._pending_sessions or self._writer is None:  # an empty split is still a file (with no rows)
            self._write_pending(self._pending_sessions)
        assert self._writer is not None
        self._writer.close()
        with open(self.path, "rb+") as handle:
            os.fsync(handle.fileno())
        return sha256_file(self.path)

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def _write_pending(self, n_sessions: int) -> None:
        joined = concat_sessions(self._pending)
        group, rest = _slice(joined, 0, n_sessions), _slice(joined, n_sessions, joined.n_sessions)
        self._pending, self._pending_sessions = [rest], rest.n_sessions
        table = _sessions_table(group, first_index=self.n_sessions)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, table.schema, compression="zstd")
        self._writer.write_table(table, row_group_size=ROW_GROUP_SESSIONS)
        self.n_sessions += group.n_sessions
        self.n_clicks += group.n_clicks


def concat_sessions(parts: Sequence[SessionData]) -> SessionData:
    """The sessions of ``parts`` one after another (all with timestamps, or none)."""
    if len(parts) == 1:
        return parts[0]
    lengths = np.concatenate([part.lengths for part in parts])
    offsets = np.zeros(lengths.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    timestamps = None
    if parts[0].timestamps is not None:
        timestamps = np.concatenate([part.timestamps for part in parts])
    return SessionData(offsets=offsets, items=np.concatenate([part.items for part in parts]), timestamps=timestamps)


def _slice(sessions: SessionData, start: int, stop: int) -> SessionData:
    # Sessions start..stop as views of the arrays (no copy: a big split is cut into many row groups).
    first, last = sessions.offsets[start], sessions.offsets[stop]
    timestamps = None if sessions.timestamps is None else sessions.timestamps[first:last]
    return SessionData(sessions.offsets[start : stop + 1] - first, sessions.items[first:last], timestamps)


def _categories_table(vocab: Vocab) -> pa.Table:
    return pa.table(
        {
            "category_idx": pa.array(np.arange(1, vocab.n_categories + 1, dtype=np.int64)),
            "category_id": pa.array(vocab.category_ids[1:], type=pa.string()),
        }
    )


def _write_table(table: pa.Table, path: Path) -> str:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    data = sink.getvalue().to_pybytes()
    # Inside the temporary folder a plain write would do; the shared writer is the one that fsyncs.
    write_bytes_atomic(path, data)
    return hashlib.sha256(data).hexdigest()


def _sessions_table(sessions: SessionData, first_index: int = 0) -> pa.Table:
    offsets = pa.array(sessions.offsets.astype(np.int64))
    columns = {
        "session_idx": pa.array(np.arange(first_index, first_index + sessions.n_sessions, dtype=np.int64)),
        "item_idx": pa.LargeListArray.from_arrays(offsets, pa.array(sessions.items.astype(np.int64))),
    }
    if sessions.timestamps is not None:
        columns["timestamp"] = pa.LargeListArray.from_arrays(offsets, pa.array(sessions.timestamps.astype(np.int64)))
    return pa.table(columns)


def _read_sessions(path: Path) -> SessionData:
    return _sessions_from_table(pq.read_table(path))


def _sessions_from_table(table: pa.Table) -> SessionData:
    items = table.column("item_idx").combine_chunks()
    offsets = np.asarray(items.offsets, dtype=np.int64)
    # Offsets of a sliced array need not start at 0; rebase them onto the flat values.
    values = np.asarray(items.values, dtype=np.int64)[offsets[0] : offsets[-1]]
    timestamps = None
    if "timestamp" in table.column_names:
        stamps = table.column("timestamp").combine_chunks()
        stamp_offsets = np.asarray(stamps.offsets, dtype=np.int64)
        timestamps = np.asarray(stamps.values, dtype=np.int64)[stamp_offsets[0] : stamp_offsets[-1]]
    return SessionData(offsets=offsets - offsets[0], items=values, timestamps=timestamps)


def _items_table(vocab: Vocab, catalog: ItemCatalog) -> pa.Table:
    columns: dict[str, pa.Array] = {
        "item_idx": pa.array(np.arange(1, vocab.n_items + 1, dtype=np.int64)),
        "item_id": pa.array(vocab.item_ids[1:], type=pa.string()),
        "category_idx": pa.array(catalog.item_category[1:].astype(np.int64)),
    }
    for name, values in catalog.categorical.items():
        columns[_CATEGORICAL + name] = pa.array(values[1:].astype(np.int64))
    for name, values in catalog.numeric.items():
        columns[_NUMERIC + name] = pa.array(values[1:].astype(np.float32))
    if catalog.text is not None:
        columns[_TEXT] = pa.array(catalog.text[1:], type=pa.string())
    return pa.table(columns)


def _catalog_from_table(items: pa.Table, n_categories: int) -> ItemCatalog:
    def padded(name: str, dtype: type, pad: float) -> np.ndarray:
        return np.concatenate([[pad], items.column(name).to_numpy()]).astype(dtype)

    names = items.column_names
    return ItemCatalog(
        item_category=padded("category_idx", np.int64, 0),
        n_categories=n_categories,
        categorical={n.removeprefix(_CATEGORICAL): padded(n, np.int64, 0) for n in names if n.startswith(_CATEGORICAL)},
        numeric={n.removeprefix(_NUMERIC): padded(n, np.float32, np.nan) for n in names if n.startswith(_NUMERIC)},
        text=("", *items.column(_TEXT).to_pylist()) if _TEXT in names else None,
    )


def _manifest(
    name: str, counts: dict[str, int], digests: dict[str, str], options: dict[str, Any], provenance: dict[str, Any]
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name,
        "counts": counts,
        "files": digests,
        "fingerprint": _fingerprint(digests),
        "options": options,
        # A loaded dataset carries the fingerprint of the folder it came from; the new one is recomputed.
        "provenance": {k: v for k, v in provenance.items() if k != "fingerprint"},
        "hiersrec_version": __version__,
    }


def _fingerprint(digests: dict[str, str]) -> str:
    lines = "".join(f"{name} {digests[name]}\n" for name in sorted(digests))
    return hashlib.sha256(lines.encode()).hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _json_default(value: object) -> object:
    # Options may hold numpy scalars, tuples or paths; anything else is a bug in the caller.
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable in the dataset manifest")
