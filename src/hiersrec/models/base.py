"""The small contracts every recommender meets, and what all models share.

* `SessionRecommender`: ``score(batch) -> (B, V)``, all that ranking, evaluation and serving need.
* `QueryRecommender`: a model whose scores decompose as an item query against item vectors, plus a term per
  category (`ItemQuery`); such a model can rank category candidates only (`candidate_support`).
* `FittedModel`: the base of the non-neural models (sklearn's contract: ``__init__`` stores hyperparameters,
  ``fit`` sets the learned attributes, named with a trailing ``_``); it derives ``describe`` from the
  constructor and saves / loads the learned attributes as plain arrays (``.npz``, no pickle).
"""

from __future__ import annotations

import inspect
import json
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

import numpy as np
import scipy.sparse as sp
import torch

from hiersrec.data.batching import SessionBatch
from hiersrec.errors import ArtifactError, ConfigError, NotFittedError
from hiersrec.files import write_json_atomic, write_with_atomic

FITTED_STATE = "fitted_state.npz"
FITTED_LAYOUT = "fitted_state.json"


@runtime_checkable
class SessionRecommender(Protocol):
    """All that ranking, evaluation and serving need from a model."""

    def score(self, batch: SessionBatch) -> torch.Tensor:
        """(B, V) float32 scores of every item index for each prefix; column 0 (padding) is -inf."""
        ...


@runtime_checkable
class CategoryPredictor(Protocol):
    """A model that also (or only) predicts the next category."""

    def score_categories(self, batch: SessionBatch) -> torch.Tensor:
        """(B, C) float32 scores of every category index; column 0 (padding) is -inf."""
        ...


@dataclass(frozen=True)
class ItemQuery:
    """How a query model scores the items for a batch of sessions (see `item_query_scores`).

    ``score(i) = vectors . v_i + category_offsets[c(i)]``, and with ``normalise_within_category`` minus the
    log-sum-exp of the inner products of ``c(i)``'s items (a log-probability within the category). The
    offsets are constant within a category, so ranking a category's items needs only the inner products.

    Attributes:
        vectors: (B, D') item queries, against the (V, D') ``item_output_embeddings()``.
        category_logits: (B, C) next-category logits, column 0 (padding) = -inf.
        category_offsets: (B, C) score added to every item of each category, or None.
        normalise_within_category: subtract each category's log-sum-exp of inner products.
    """

    vectors: torch.Tensor
    category_logits: torch.Tensor
    category_offsets: torch.Tensor | None = None
    normalise_within_category: bool = False

    def rows(self, rows: slice | torch.Tensor) -> ItemQuery:
        """The query of some rows only."""
        offsets = None if self.category_offsets is None else self.category_offsets[rows]
        return ItemQuery(self.vectors[rows], self.category_logits[rows], offsets, self.normalise_within_category)


@runtime_checkable
class QueryRecommender(Protocol):
    """A model whose scores are `item_query_scores` of its `ItemQuery` (HierSRec)."""

    def query(self, batch: SessionBatch) -> ItemQuery:
        """The item query of each session."""
        ...

    def score_query(self, query: ItemQuery) -> torch.Tensor:
        """(B, V) scores of an `ItemQuery`: exactly what ``score`` returns for the same sessions."""
        ...

    def item_output_embeddings(self) -> torch.Tensor:
        """(V, D') item vectors; row 0 is padding."""
        ...


def category_adjusted(
    inner: torch.Tensor, categories: torch.Tensor, query: ItemQuery, n_categories: int | None = None
) -> torch.Tensor:
    """Add the query's per-category terms to inner products of whole categories' items.

    Args:
        inner: (B, W) inner products ``vectors . v_i`` of the items in each row (``-inf`` for absent entries).
        categories: (B, W) or (W,) int64 category of each entry. Every category that occurs in a row must occur
            with all of its items (whole categories), or the within-category normaliser is wrong.
        query: the `ItemQuery` of the B rows.
        n_categories: C (default: the width of ``query.category_logits``).

    Returns:
        (B, W) scores as `item_query_scores` defines them.
    """
    if query.category_offsets is None and not query.normalise_within_category:
        return inner
    n_categories = n_categories or query.category_logits.shape[1]
    index = categories.expand(inner.shape)
    scores = inner
    if query.normalise_within_category:
        present = torch.isfinite(inner)
        peak = torch.full((inner.shape[0], n_categories), float("-inf"), device=inner.device)
        peak.scatter_reduce_(1, index, inner.masked_fill(~present, float("-inf")), reduce="amax")
        safe_peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
        shifted = (inner - safe_peak.gather(1, index)).exp().masked_fill(~present, 0.0)
        sums = torch.zeros_like(peak).scatter_add_(1, index, shifted)
        scores = torch.where(present, inner - (safe_peak + sums.log()).gather(1, index), inner)
    if query.category_offsets is not None:
        scores = scores + query.category_offsets.float().gather(1, index)
    return scores


def item_query_scores(query: ItemQuery, item_vectors: torch.Tensor, item_category: torch.Tensor) -> torch.Tensor:
    """(B, V) float32 full-ranking scores of an `ItemQuery`; column 0 (padding) = -inf.

    Args:
        query: the sessions' `ItemQuery`.
        item_vectors: (D', V) item vectors, one column per item (the layout a (B, D') @ (D', V) product reads
            fastest), row 0 padding.
        item_category: (V,) int64 category of each item (0 for padding).
    """
    inner = query.vectors.float() @ item_vectors.float()  # (B, V)
    inner[:, 0] = float("-inf")
    scores = category_adjusted(inner, item_category, query)
    scores[:, 0] = float("-inf")
    return scores


def candidate_support(model: Any) -> str | None:
    """None when ``model`` can rank category candidates with its own scores; else a sentence saying why not.

    The model answers for itself (its ``candidate_support()``); a model without that method, or without an
    item query and a category head, ranks every item only.
    """
    ask = getattr(model, "candidate_support", None)
    if callable(ask):
        return ask()
    return f"{type(model).__name__} has no category head with item queries (HierSRec has): it can only rank every item"


class FittedModel:
    """Base of the non-neural models: derived ``describe``, ``get_params`` and pickle-free ``save`` / ``load``.

    A subclass sets ``name`` (its registry name) and ``SEARCH_SPACE``; its ``__init__`` stores each
    hyperparameter under the argument's own name, and ``fit`` sets the learned attributes, named with a
    trailing underscore. Those attributes may be NumPy arrays, SciPy CSR matrices, numbers, None, or frozen
    dataclasses of these listed in `STATE_TYPES`.
    """

    name: ClassVar[str] = ""
    SEARCH_SPACE: ClassVar[dict[str, tuple]] = {}

    @classmethod
    def unusable_reason(cls, catalog: Any) -> str | None:
        """Why this model cannot be fitted on ``catalog`` (an `ItemCatalog`), or None when it can.

        Every model can, except one that needs what a catalogue may lack (text-kNN needs item text); fusion
        skips such an alternative partner where it has nothing to work with.
        """
        return None

    def get_params(self) -> dict[str, Any]:
        """The hyperparameters, by constructor argument name."""
        return {key: getattr(self, key) for key in inspect.signature(type(self)).parameters}

    def describe(self) -> dict[str, Any]:
        """Name and hyperparameters, for reports."""
        return {"name": self.name, **self.get_params()}

    def fitted_attributes(self) -> dict[str, Any]:
        """The learned state: every attribute whose name ends with ``_``."""
        return {key: value for key, value in vars(self).items() if key.endswith("_") and not key.startswith("_")}

    def save(self, directory: str | Path) -> None:
        """Write the learned state to ``directory`` as ``fitted_state.npz`` and its layout as JSON."""
        if not self.fitted_attributes():
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; nothing to save")
        arrays: dict[str, np.ndarray] = {}
        layout = {key: _encode_state(value, key, arrays) for key, value in self.fitted_attributes().items()}
        write_with_atomic(Path(directory) / FITTED_STATE, lambda partial: _write_npz(partial, arrays))
        write_json_atomic(Path(directory) / FITTED_LAYOUT, layout)

    def load(self, directory: str | Path) -> FittedModel:
        """Restore the learned state written by `save` into this (unfitted) model and return it.

        Raises:
            ArtifactError: the state files are missing, unreadable or do not describe this model.
        """
        directory = Path(directory)
        layout_path, state_path = directory / FITTED_LAYOUT, directory / FITTED_STATE
        try:
            layout = json.loads(layout_path.read_text())
        except FileNotFoundError as error:
            raise ArtifactError(f"{layout_path}: not found") from error
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise ArtifactError(f"{layout_path}: unreadable ({error})") from error
        try:
            with np.load(state_path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except FileNotFoundError as error:
            raise ArtifactError(f"{state_path}: not found") from error
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            reason = str(error).splitlines()[0][:200]
            raise ArtifactError(f"{state_path}: unreadable arrays (allow_pickle=False; {reason})") from error
        try:
            state = {key: _decode_state(spec, arrays) for key, spec in layout.items()}
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ArtifactError(f"{layout_path}: does not describe {state_path.name} ({error!r})") from error
        vars(self).update(state)
        return self


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    # Streamed into the file (an in-memory archive would copy a large dense state twice, as SLIST's is).
    with open(path, "wb") as out:
        np.savez(out, **arrays)


def _encode_state(value: Any, key: str, arrays: dict[str, np.ndarray]) -> Any:
    # A JSON description of `value`, its arrays stored in `arrays` under names derived from `key`.
    if value is None or isinstance(value, bool | int | float | str):
        return {"kind": "value", "value": value}
    if isinstance(value, np.generic):
        return {"kind": "value", "value": value.item()}
    if isinstance(value, np.ndarray):
        assert value.dtype != object, f"{key}: object arrays cannot be saved without pickle"
        arrays[key] = value
        return {"kind": "array", "key": key}
    if sp.issparse(value):
        matrix = value.tocsr()
        for part in ("data", "indices", "indptr"):
            arrays[f"{key}.{part}"] = getattr(matrix, part)
        return {"kind": "csr", "key": key, "shape": list(matrix.shape)}
    if is_dataclass(value) and type(value).__name__ in STATE_TYPES:
        parts = {f.name: _encode_state(getattr(value, f.name), f"{key}.{f.name}", arrays) for f in fields(value)}
        return {"kind": "dataclass", "type": type(value).__name__, "fields": parts}
    raise TypeError(f"{key}: cannot save a {type(value).__name__} without pickle")


def _decode_state(spec: dict[str, Any], arrays: dict[str, np.ndarray]) -> Any:
    kind = spec["kind"]
    if kind == "value":
        return spec["value"]
    if kind == "array":
        return arrays[spec["key"]]
    if kind == "csr":
        key = spec["key"]
        parts = (arrays[f"{key}.data"], arrays[f"{key}.indices"], arrays[f"{key}.indptr"])
        return sp.csr_matrix(parts, shape=tuple(spec["shape"]))
    if kind == "dataclass":
        cls = STATE_TYPES[spec["type"]]  # only the listed types: a file cannot name arbitrary code
        return cls(**{name: _decode_state(part, arrays) for name, part in spec["fields"].items()})
    raise ValueError(f"unknown state kind {kind!r}")


STATE_TYPES: dict[str, type] = {}
"""Frozen dataclasses that fitted state may hold, by class name (filled by the modules that define them)."""


def register_state_type(cls: type) -> type:
    """Allow instances of the dataclass ``cls`` in saved fitted state (a class decorator)."""
    STATE_TYPES[cls.__name__] = cls
    return cls


def check_is_fitted(model: object, attribute: str) -> None:
    """Raise `NotFittedError` when ``model`` lacks the fitted ``attribute`` (set by ``fit``)."""
    if getattr(model, attribute, None) is None:
        name = type(model).__name__
        raise NotFittedError(f"{name} is not fitted yet; call {name}(...).fit(train, catalog) first")


def mask_padding(scores: torch.Tensor) -> torch.Tensor:
    """Set column 0 (padding) to -inf in place and return ``scores``."""
    scores[:, 0] = float("-inf")
    return scores


ModuleT = TypeVar("ModuleT", bound=torch.nn.Module)


def load_weights(build: Callable[[], ModuleT], state: Mapping[str, torch.Tensor]) -> ModuleT:
    """The module ``build()`` makes, with ``state`` loaded, in eval mode (a neural model's ``from_state_dict``).

    Raises:
        ConfigError: the state dict does not fit the module (missing or unexpected keys, other shapes).
    """
    try:
        model = build()
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ConfigError(f"the weights do not fit the configuration: {str(error).splitlines()[0]}") from error
    return model.eval()
