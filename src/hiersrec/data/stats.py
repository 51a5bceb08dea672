"""Summary statistics of a prepared dataset (``hiersrec data stats``), as plain JSON-ready values.

`dataset_stats` summarises a `PreparedDataset` in memory; `prepared_stats` the same from a prepared folder,
reading its sessions one row group at a time, so that datasets larger than memory can be summarised. Both
give the same numbers: every figure is a sum or a count that adds up over whole sessions.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.prepared import PreparedDataset, default_protocol
from hiersrec.data.sessions import SessionData
from hiersrec.data.storage import iter_sessions, read_prepared_catalog
from hiersrec.data.vocab import Vocab

_SPLITS = ("train", "valid", "test")
_REPORTED_OPTIONS = ("items_without_category_unknown", "test_items_unseen_in_train")


def dataset_stats(dataset: PreparedDataset) -> dict[str, Any]:
    """Counts, session lengths, category structure and repeat rates of ``dataset``.

    ``next_same_category_rate`` is the share of train transitions whose next item shares the category of the
    item before it ("repeat the last category" accuracy); ``next_repeats_previous_rate`` the share whose next
    item is the previous item itself.
    """
    splits = {split: [getattr(dataset, split)] for split in _SPLITS if getattr(dataset, split) is not None}
    return _stats(
        dataset.name,
        dataset.provenance.get("fingerprint"),
        dataset.vocab,
        dataset.catalog,
        dataset.options,
        splits,
    )


def prepared_stats(directory: str | Path) -> dict[str, Any]:
    """`dataset_stats` of the prepared dataset folder ``directory``, in memory of one row group of sessions.

    Raises:
        ArtifactError: as `hiersrec.data.storage.load_prepared` (the files are checked against their digests).
    """
    manifest, vocab, catalog = read_prepared_catalog(directory)
    splits = {
        split: iter_sessions(directory, split, with_timestamps=False)
        for split in _SPLITS
        if f"{split}.parquet" in manifest["files"]
    }
    return _stats(manifest["name"], manifest["fingerprint"], vocab, catalog, manifest["options"], splits)


def _stats(
    name: str,
    fingerprint: str | None,
    vocab: Vocab,
    catalog: ItemCatalog,
    options: dict[str, Any],
    splits: dict[str, Iterable[SessionData]],
) -> dict[str, Any]:
    sizes = catalog.category_sizes()[1:]
    stats: dict[str, Any] = {
        "name": name,
        "fingerprint": fingerprint,
        "protocol": default_protocol(has_valid="valid" in splits),
        "items": vocab.n_items,
        "categories": vocab.n_categories,
        "items_per_category": {"min": int(sizes.min()), "median": float(np.median(sizes)), "max": int(sizes.max())},
        "metadata": {
            "categorical": sorted(catalog.categorical),
            "numeric": sorted(catalog.numeric),
            "text": catalog.text is not None,
        },
    }
    for split, chunks in splits.items():
        summary = _SplitSummary(catalog)
        for sessions in chunks:
            summary.add(sessions)
        stats[split] = summary.result()
    for key in _REPORTED_OPTIONS:
        if key in options:
            stats[key] = options[key]
    return stats


class _SplitSummary:
    # Sums over chunks of whole sessions; the median length comes from a histogram of lengths, so that
    # every figure equals the one of all the sessions at once.

    def __init__(self, catalog: ItemCatalog) -> None:
        self.category = catalog.item_category
        self.sessions = self.clicks = self.targets = self.same_category = self.repeats = 0
        self.length_counts = np.zeros(1, dtype=np.int64)
        self.seen = np.zeros(catalog.n_items + 1, dtype=bool)

    def add(self, sessions: SessionData) -> None:
        lengths = sessions.lengths
        targets = sessions.target_positions("all_prefixes")
        items = sessions.items
        self.sessions += sessions.n_sessions
        self.clicks += sessions.n_clicks
        self.targets += int(targets.size)
        self.same_category += int((self.category[items[targets]] == self.category[items[targets - 1]]).sum())
        self.repeats += int((items[targets] == items[targets - 1]).sum())
        counts = np.bincount(lengths)
        if counts.size > self.length_counts.size:
            counts[: self.length_counts.size] += self.length_counts
            self.length_counts = counts
        else:
            self.length_counts[: counts.size] += counts
        self.seen[items] = True

    def result(self) -> dict[str, Any]:
        has_targets = self.targets > 0
        return {
            "sessions": self.sessions,
            "clicks": self.clicks,
            "prefixes": self.targets,
            "length": {
                "mean": round(self.clicks / self.sessions, 3) if self.sessions else 0.0,
                "median": self._median_length() if self.sessions else 0.0,
                "max": int(np.flatnonzero(self.length_counts).max()) if self.sessions else 0,
            },
            "distinct_items": int(self.seen.sum()),
            "next_same_category_rate": round(self.same_category / self.targets, 4) if has_targets else None,
            "next_repeats_previous_rate": round(self.repeats / self.targets, 4) if has_targets else None,
        }

    def _median_length(self) -> float:
        # np.median of the lengths: the middle one, or the mean of the two middle ones.
        cumulative = np.cumsum(self.length_counts)
        low = int(np.searchsorted(cumulative, (self.sessions - 1) // 2, side="right"))
        high = int(np.searchsorted(cumulative, self.sessions // 2, side="right"))
        return (low + high) / 2
