"""A prepared dataset: train and test sessions, vocabularies and the item catalogue, with provenance."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.sessions import SessionData
from hiersrec.data.vocab import Vocab


@dataclass(frozen=True)
class PreparedDataset:
    """Everything a model needs from one dataset, in memory.

    Attributes:
        name: short dataset name (``"diginetica"``, ``"synthetic"``...).
        train: training sessions, chronological (the validation split is their tail).
        test: test sessions, chronological; item indices all seen in ``train``'s vocabulary.
        valid: a validation split given by the source (e.g. RecBole leave-one-out files), else None; when
            None, validation is the chronological tail of ``train`` (``train.split_tail``).
        vocab: raw <-> index maps.
        catalog: item categories and metadata aligned to ``vocab``.
        options: the preprocessing options that produced it.
        provenance: source files and their sizes/hashes, tool version.
    """

    name: str
    train: SessionData
    test: SessionData
    vocab: Vocab
    catalog: ItemCatalog
    valid: SessionData | None = None
    options: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def validation_split(self, fraction: float = 0.1) -> tuple[SessionData, SessionData]:
        """(sessions to fit on, validation sessions) for model selection; the test split is never involved.

        The source's own validation split when it gives one (``valid``, with ``train`` to fit on), else the
        chronological tail of ``train`` split by session (`SessionData.split_tail`).
        """
        if self.valid is not None:
            return self.train, self.valid
        return self.train.split_tail(fraction)

    @property
    def default_protocol(self) -> str:
        """``"last_item"`` for leave-one-out sources (they give a validation split), else ``"all_prefixes"``."""
        return default_protocol(has_valid=self.valid is not None)


def default_protocol(*, has_valid: bool) -> str:
    """The evaluation protocol of a dataset: `PreparedDataset.default_protocol`, for a dataset not in memory."""
    return "last_item" if has_valid else "all_prefixes"
