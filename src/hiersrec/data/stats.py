"""Summary statistics of a `PreparedDataset` (``hiersrec data stats``), as plain JSON-ready values."""

from __future__ import annotations

from typing import Any

import numpy as np

from hiersrec.data.prepared import PreparedDataset
from hiersrec.data.sessions import SessionData


def dataset_stats(dataset: PreparedDataset) -> dict[str, Any]:
    """Counts, session lengths, category structure and repeat rates of ``dataset``.

    ``next_same_category_rate`` is the share of train transitions whose next item shares the category of the
    item before it ("repeat the last category" accuracy); ``next_repeats_previous_rate`` the share whose next
    item is the previous item itself.
    """
    catalog = dataset.catalog
    sizes = catalog.category_sizes()[1:]
    stats: dict[str, Any] = {
        "name": dataset.name,
        "fingerprint": dataset.provenance.get("fingerprint"),
        "protocol": dataset.default_protocol,
        "items": dataset.vocab.n_items,
        "categories": dataset.vocab.n_categories,
        "items_per_category": {"min": int(sizes.min()), "median": float(np.median(sizes)), "max": int(sizes.max())},
        "metadata": {
            "categorical": sorted(catalog.categorical),
            "numeric": sorted(catalog.numeric),
            "text": catalog.text is not None,
        },
    }
    for split in ("train", "valid", "test"):
        sessions = getattr(dataset, split)
        if sessions is not None:
            stats[split] = _split_stats(sessions, dataset)
    for key in ("items_without_category_unknown", "test_items_unseen_in_train"):
        if key in dataset.options:
            stats[key] = dataset.options[key]
    return stats


def _split_stats(sessions: SessionData, dataset: PreparedDataset) -> dict[str, Any]:
    lengths = sessions.lengths
    targets = sessions.target_positions("all_prefixes")
    category = dataset.catalog.item_category
    same_category = category[sessions.items[targets]] == category[sessions.items[targets - 1]]
    return {
        "sessions": sessions.n_sessions,
        "clicks": sessions.n_clicks,
        "prefixes": int(targets.size),
        "length": {
            "mean": round(float(lengths.mean()), 3) if lengths.size else 0.0,
            "median": float(np.median(lengths)) if lengths.size else 0.0,
            "max": int(lengths.max()) if lengths.size else 0,
        },
        "distinct_items": int(np.unique(sessions.items).size),
        "next_same_category_rate": round(float(same_category.mean()), 4) if targets.size else None,
        "next_repeats_previous_rate": (
            round(float((sessions.items[targets] == sessions.items[targets - 1]).mean()), 4) if targets.size else None
        ),
    }
