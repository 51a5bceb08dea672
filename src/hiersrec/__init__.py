"""hiersrec: session-based recommendation with HierSRec, honest evaluation and strong baselines.

The public API, importable from the top level:

    >>> from hiersrec import open_dataset, evaluate, make_baseline
    >>> data = open_dataset("synthetic")
    >>> report = evaluate(make_baseline("sr").fit(data.train, data.catalog), data.test, data.catalog)
    >>> round(report.metrics["hr@20"], 2) > 0.5
    True
"""

from __future__ import annotations

from hiersrec._version import __version__
from hiersrec.data.batching import SessionBatch
from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.ingest import open_dataset
from hiersrec.data.prepared import PreparedDataset
from hiersrec.data.sessions import SessionData
from hiersrec.data.storage import load_prepared, save_prepared
from hiersrec.data.synthetic import SyntheticShopConfig, make_synthetic_shop
from hiersrec.data.vocab import Vocab
from hiersrec.errors import (
    ArtifactError,
    ConfigError,
    DataError,
    HierSRecError,
    HierSRecWarning,
    NotFittedError,
    TrainingDivergedError,
)
from hiersrec.eval.protocol import EvalReport, evaluate
from hiersrec.models import BASELINES, MODELS, make_baseline, make_model

__all__ = [
    "BASELINES",
    "ArtifactError",
    "ConfigError",
    "DataError",
    "EvalReport",
    "HierSRecError",
    "HierSRecWarning",
    "MODELS",
    "ItemCatalog",
    "NotFittedError",
    "PreparedDataset",
    "SessionBatch",
    "SessionData",
    "SyntheticShopConfig",
    "TrainingDivergedError",
    "Vocab",
    "__version__",
    "evaluate",
    "load_prepared",
    "make_baseline",
    "make_model",
    "make_synthetic_shop",
    "open_dataset",
    "save_prepared",
]
