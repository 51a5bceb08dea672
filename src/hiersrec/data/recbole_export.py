"""Export a `PreparedDataset` to RecBole atomic files, so that RecBole and hiersrec run on the same data.

Writes into ``out_dir``:

* ``<name>.{train,valid,test}.inter`` (benchmark files): ``<id>:token  item_id_list:token_seq
  item_id:token``, one row per evaluation target with its history (the last ``max_history`` items, as
  RecBole's ``MAX_ITEM_LIST_LENGTH`` keeps them);
* ``<name>.item``: ``item_id:token  category_id:token``, then each categorical attribute (``:token``, its
  code), each numeric one (``:float``) and ``text:token_seq``;
* ``<name>.yaml``: the RecBole settings that read these files (``benchmark_filename``, fields, lengths).

Two layouts, chosen by the dataset:

* **sessions** (no source validation split, protocol ``all_prefixes``): id field ``session_id``; the
  validation sessions are the chronological tail of train (`PreparedDataset.validation_split`, the split
  hiersrec tunes on); every prefix of every session is a row in all three files;
* **leave-one-out** (a source validation split, protocol ``last_item``): id field ``user_id``; train rows for
  every prefix of the train sequences, and one row per user in valid and test (its last item).

Raw item and category ids are written, so RecBole builds its own index; `read_recbole_dir` reads the files
back to the same sessions.

The folder is written whole: the files go into a temporary folder beside ``out_dir``, which then replaces
``out_dir`` (a previous export of the same files is replaced only once the new one is complete), by the
writer holding the claim on ``out_dir`` (`hiersrec.files.claim_target`). An existing folder is an earlier
export when it holds only these files and its ``<name>.yaml`` starts with the comment line this module
writes; any other folder (a RecBole dataset of the same name, say) is refused, untouched.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import BinaryIO

import numpy as np
import polars as pl
import pyarrow as pa

from hiersrec.data.prepared import PreparedDataset
from hiersrec.data.sessions import SessionData
from hiersrec.errors import ArtifactError, ConfigError, DataError
from hiersrec.files import claim_target, existing_entries, fsync_directory, replace_directory, sibling_temp_dir

# The first line of every settings file written here: what marks a folder as an earlier export.
_SETTINGS_SIGNATURE = "# RecBole settings for the files hiersrec wrote"


def write_recbole(
    dataset: PreparedDataset, out_dir: str | Path, *, max_history: int = 50, valid_fraction: float = 0.1
) -> list[Path]:
    """Write ``dataset`` as RecBole atomic files (module docstring); returns the written paths.

    Args:
        dataset: the prepared dataset.
        out_dir: folder to write (created, or replaced when it holds only the files of an earlier export).
        max_history: the most recent items kept in each ``item_id_list``.
        valid_fraction: share of train sessions (the most recent) used as validation, when the dataset has
            no validation split of its own.

    Raises:
        ArtifactError: ``out_dir`` exists and is not an earlier export of these files (nothing is written), or
            another process is writing it.
        ConfigError: ``max_history`` is below 1 or ``valid_fraction`` not in (0, 1).
        DataError: an item id contains whitespace (RecBole token sequences are space-separated), or a
            leave-one-out dataset whose valid/test sequences do not extend its train sequences by one item.
    """
    if max_history < 1:
        raise ConfigError(f"max_history must be >= 1, got {max_history}")
    if not 0.0 < valid_fraction < 1.0:  # also false for NaN
        raise ConfigError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    bad = next((raw for raw in dataset.vocab.item_ids[1:] if re.search(r"\s", raw)), None)
    if bad is not None:
        raise DataError(f"item id {bad!r} contains whitespace, which RecBole token sequences cannot hold")
    out_dir = Path(out_dir)
    stem = re.sub(r"[^A-Za-z0-9_-]", "_", dataset.name)
    names = [f"{stem}.{split}.inter" for split in ("train", "valid", "test")] + [f"{stem}.item", f"{stem}.yaml"]
    with claim_target(out_dir):
        _require_replaceable(out_dir, names)
        _write_files(dataset, out_dir, names, stem, max_history, valid_fraction)
    return [out_dir / name for name in names]


def _require_replaceable(out_dir: Path, names: list[str]) -> None:
    entries = existing_entries(out_dir)
    if not entries:
        return
    refuse = f"choose another --out or remove {out_dir} yourself"
    foreign = sorted(name for name in entries if name not in names)
    if foreign:
        raise ArtifactError(
            f"{out_dir}: holds other files than a RecBole export of {names[-1].removesuffix('.yaml')} "
            f"({', '.join(foreign[:5])}); {refuse}"
        )
    settings = out_dir / names[-1]
    try:
        with open(settings, encoding="utf-8", errors="replace") as handle:
            first = handle.readline()
    except OSError:
        first = ""
    if not first.startswith(_SETTINGS_SIGNATURE):
        raise ArtifactError(
            f"{out_dir}: holds RecBole files that hiersrec did not write (no {settings.name} starting with "
            f"{_SETTINGS_SIGNATURE!r}); {refuse}"
        )


def _write_files(
    dataset: PreparedDataset, out_dir: Path, names: list[str], stem: str, max_history: int, valid_fraction: float
) -> None:
    raw_ids = pl.Series("raw", dataset.vocab.item_ids)
    if dataset.valid is not None:
        id_field, last_only = "user_id", (False, True, True)
        splits = (dataset.train, dataset.valid, dataset.test)
        _check_leave_one_out(*splits)
        ids = [np.arange(dataset.train.n_sessions)] * 3
    else:
        id_field, last_only = "session_id", (False, False, False)
        fit, valid = dataset.validation_split(valid_fraction)
        splits = (fit, valid, dataset.test)
        starts = np.cumsum([0] + [s.n_sessions for s in splits])
        ids = [np.arange(starts[i], starts[i + 1]) for i in range(3)]
    header = {"id": f"{id_field}:token", "history": "item_id_list:token_seq", "target": "item_id:token"}
    settings = _settings(stem, id_field, max_history, dataset).encode()
    tmp = sibling_temp_dir(out_dir)
    try:
        for name, sessions, session_ids, last in zip(names[:3], splits, ids, last_only, strict=True):
            rows = _target_rows(sessions, session_ids, raw_ids, last_only=last, max_history=max_history)
            _write_synced(tmp / name, partial(rows.rename(header).write_csv, separator="\t", quote_style="never"))
        items = _item_table(dataset)
        _write_synced(tmp / names[3], partial(items.write_csv, separator="\t", quote_style="never", null_value=""))
        _write_synced(tmp / names[4], lambda out: out.write(settings))
        fsync_directory(tmp)
        replace_directory(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_synced(path: Path, write: Callable[[BinaryIO], object]) -> None:
    # The files stream into a private temporary folder that is swapped in whole, so each needs no rename of
    # its own (write_bytes_atomic would first hold a whole .inter file in memory), only to be on disk.
    with open(path, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())


def _target_rows(
    sessions: SessionData, session_ids: np.ndarray, raw_ids: pl.Series, *, last_only: bool, max_history: int
) -> pl.DataFrame:
    """One row per target: (id, history tokens joined by spaces, target token); vectorised CSR gathers."""
    targets = sessions.target_positions("last_item" if last_only else "all_prefixes")
    starts = sessions.session_starts()[targets]
    history_start = np.maximum(starts, targets - max_history)
    lengths = targets - history_start
    offsets = np.zeros(targets.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    gather = np.repeat(history_start - offsets[:-1], lengths) + np.arange(offsets[-1])
    tokens = raw_ids.gather(sessions.items[gather]).to_arrow()
    history = pl.from_arrow(pa.LargeListArray.from_arrays(pa.array(offsets), tokens)).list.join(" ")
    session = np.searchsorted(sessions.offsets, targets, side="right") - 1
    return pl.DataFrame(
        {"id": session_ids[session], "history": history, "target": raw_ids.gather(sessions.items[targets])}
    )


def _check_leave_one_out(train: SessionData, valid: SessionData, test: SessionData) -> None:
    aligned = train.n_sessions == valid.n_sessions == test.n_sessions
    if aligned:
        aligned = bool((valid.lengths == train.lengths + 1).all() and (test.lengths == valid.lengths + 1).all())
    if aligned:
        # Valid without its last item is train; test without its last item is valid.
        for shorter, longer in ((train, valid), (valid, test)):
            keep = np.ones(longer.n_clicks, dtype=bool)
            keep[longer.offsets[1:] - 1] = False
            aligned = aligned and np.array_equal(longer.items[keep], shorter.items)
    if not aligned:
        raise DataError(
            "the dataset's valid and test sessions do not extend its train sessions by one item each, so they "
            "cannot be written as leave-one-out RecBole files"
        )


def _item_table(dataset: PreparedDataset) -> pl.DataFrame:
    catalog, vocab = dataset.catalog, dataset.vocab
    columns = {
        "item_id:token": vocab.item_ids[1:],
        "category_id:token": [vocab.category_ids[c] for c in catalog.item_category[1:]],
    }
    for name, codes in catalog.categorical.items():
        columns[f"{name}:token"] = pl.Series(codes[1:]).cast(pl.Utf8).replace("0", "")
    for name, values in catalog.numeric.items():
        columns[f"{name}:float"] = pl.Series(values[1:].astype(np.float64)).fill_nan(None)
    if catalog.text is not None:
        columns["text:token_seq"] = pl.Series(catalog.text[1:]).str.replace_all(r"\s+", " ")
    return pl.DataFrame(columns)


def _settings(stem: str, id_field: str, max_history: int, dataset: PreparedDataset) -> str:
    fingerprint = dataset.provenance.get("fingerprint", "not saved")
    return (
        f"{_SETTINGS_SIGNATURE} from dataset {dataset.name!r} (fingerprint {fingerprint}).\n"
        f"# Protocol: {dataset.default_protocol}. RecBole reads <data_path>/{stem}/{stem}.*.inter: keep these files\n"
        f"# in a folder named {stem} and set data_path to its parent.\n"
        f"dataset: {stem}\n"
        f"USER_ID_FIELD: {id_field}\n"
        "ITEM_ID_FIELD: item_id\n"
        "LIST_SUFFIX: _list\n"
        f"MAX_ITEM_LIST_LENGTH: {max_history}\n"
        "load_col:\n"
        f"  inter: [{id_field}, item_id_list, item_id]\n"
        "alias_of_item_id: [item_id_list]\n"
        "benchmark_filename: [train, valid, test]\n"
        "# RecBole 1.2 refuses negative sampling with its sequential models' default cross-entropy loss.\n"
        "train_neg_sample_args: ~\n"
    )
