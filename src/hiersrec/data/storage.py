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

Row 0 (padding) is not stored; it is rebuilt on load. The fingerprint is the sha256 over the data files'
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
import shutil
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
    out_dir = Path(out_dir)
    with claim_target(out_dir):
        require_replaceable(out_dir)
        tmp = sibling_temp_dir(out_dir)
        try:
            digests = _write_data_files(dataset, tmp)
            manifest = _manifest(dataset, digests)
            write_bytes_atomic(tmp / MANIFEST, json.dumps(manifest, indent=2, default=_json_default).encode())
            fsync_directory(tmp)
            replace_directory(tmp, out_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    logger.info("wrote prepared dataset %r to %s (fingerprint %s)", dataset.name, out_dir, manifest["fingerprint"])
    return out_dir


def load_prepared(directory: str | Path) -> PreparedDataset:
    """Read a folder written by `save_prepared`, checking its format version and file digests.

    Raises:
        ArtifactError: the manifest is missing or unreadable, of another format version, or a data file is
            missing or does not match its digest.
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
        catalog=_catalog_from_table(items, vocab.n_categories),
        options=manifest["options"],
        provenance=provenance,
    )


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


def _write_data_files(dataset: PreparedDataset, directory: Path) -> dict[str, str]:
    tables = {
        split: _sessions_table(getattr(dataset, split)) for split in _SPLITS if getattr(dataset, split) is not None
    }
    tables["items"] = _items_table(dataset.vocab, dataset.catalog)
    tables["categories"] = pa.table(
        {
            "category_idx": pa.array(np.arange(1, dataset.vocab.n_categories + 1, dtype=np.int64)),
            "category_id": pa.array(dataset.vocab.category_ids[1:], type=pa.string()),
        }
    )
    digests = {}
    for stem, table in tables.items():
        digests[f"{stem}.parquet"] = _write_table(table, directory / f"{stem}.parquet")
    return digests


def _write_table(table: pa.Table, path: Path) -> str:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    data = sink.getvalue().to_pybytes()
    # Inside the temporary folder a plain write would do; the shared writer is the one that fsyncs.
    write_bytes_atomic(path, data)
    return hashlib.sha256(data).hexdigest()


def _sessions_table(sessions: SessionData) -> pa.Table:
    offsets = pa.array(sessions.offsets.astype(np.int64))
    columns = {
        "session_idx": pa.array(np.arange(sessions.n_sessions, dtype=np.int64)),
        "item_idx": pa.LargeListArray.from_arrays(offsets, pa.array(sessions.items.astype(np.int64))),
    }
    if sessions.timestamps is not None:
        columns["timestamp"] = pa.LargeListArray.from_arrays(offsets, pa.array(sessions.timestamps.astype(np.int64)))
    return pa.table(columns)


def _read_sessions(path: Path) -> SessionData:
    table = pq.read_table(path)
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


def _manifest(dataset: PreparedDataset, digests: dict[str, str]) -> dict[str, Any]:
    counts: dict[str, int] = {"items": dataset.vocab.n_items, "categories": dataset.vocab.n_categories}
    for split in _SPLITS:
        sessions = getattr(dataset, split)
        if sessions is not None:
            counts[f"{split}_sessions"] = sessions.n_sessions
            counts[f"{split}_clicks"] = sessions.n_clicks
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": dataset.name,
        "counts": counts,
        "files": digests,
        "fingerprint": _fingerprint(digests),
        "options": dataset.options,
        # A loaded dataset carries the fingerprint of the folder it came from; the new one is recomputed.
        "provenance": {k: v for k, v in dataset.provenance.items() if k != "fingerprint"},
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
