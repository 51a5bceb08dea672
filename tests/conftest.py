"""Shared fixtures: small synthetic data with a known structure, and the real datasets when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from hiersrec.data.prepared import PreparedDataset
from hiersrec.data.synthetic import SyntheticShopConfig, make_synthetic_shop

torch.set_num_threads(1)


def _shared_data_dir() -> Path:
    configured = os.environ.get("HIERSREC_DATA")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real datasets folder (``$HIERSREC_DATA`` or ``../shared/data``); skips the test when absent."""
    path = _shared_data_dir()
    if not (path / "diginetica" / "srgnn_cat" / "train_sessions.tsv").is_file():
        pytest.skip(f"real datasets not found at {path} (set HIERSREC_DATA to run the data tests)")
    return path


@pytest.fixture(scope="session")
def tiny_shop() -> PreparedDataset:
    """A small synthetic shop whose next item is the ring successor or the next category's first item."""
    return make_synthetic_shop(
        SyntheticShopConfig(
            n_items=37, n_categories=5, n_groups=2, n_sessions=600, ring_prob=1.0, stay_prob=0.8, seed=7
        )
    )


@pytest.fixture(scope="session")
def small_shop() -> PreparedDataset:
    """A larger synthetic shop with popularity-drawn clicks (noisier, closer to real data)."""
    return make_synthetic_shop(SyntheticShopConfig(n_items=300, n_categories=20, n_groups=4, n_sessions=3000, seed=3))
