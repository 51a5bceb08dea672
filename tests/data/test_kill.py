"""Issue 9: a ``data prepare`` killed at any moment leaves its --out as the old or the new complete dataset."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from hiersrec.data.storage import load_prepared, read_manifest, save_prepared
from hiersrec.data.synthetic import SyntheticShopConfig, make_synthetic_shop

KILLS = 5


def _fingerprint(seed: int, scratch) -> str:
    """The fingerprint of the dataset ``prepare --source synthetic --seed SEED`` writes."""
    return read_manifest(save_prepared(make_synthetic_shop(SyntheticShopConfig(seed=seed)), scratch))["fingerprint"]


def _prepare(out, seed: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "hiersrec", "data", "prepare", "--source", "synthetic", "--seed", str(seed)]
    return subprocess.Popen(
        [*command, "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy()
    )


@pytest.mark.slow
def test_prepare_killed_at_random_points_leaves_the_old_or_a_new_dataset_issue_9(tmp_path):
    out = tmp_path / "D"
    started = time.monotonic()
    first = _prepare(out, seed=0)
    assert first.wait(timeout=120) == 0, first.stderr.read()
    duration = time.monotonic() - started
    current = read_manifest(out)["fingerprint"]
    rng = random.Random(9)
    outcomes = []
    for kill in range(KILLS):
        # One random delay in each fifth of a whole run (from start-up to the swap near its end).
        delay = duration * (kill + rng.random()) / KILLS
        writer = _prepare(out, seed=kill + 1)
        time.sleep(delay)
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=60)
        fingerprint = load_prepared(out).provenance["fingerprint"]  # every file checked against its sha256
        new = _fingerprint(kill + 1, tmp_path / "scratch" / str(kill))
        assert fingerprint in (current, new), f"kill {kill} at {delay:.2f}s: neither the old nor the new dataset"
        outcomes.append(f"{delay:.2f}s: {'new' if fingerprint == new else 'old'}")
        current = fingerprint
    # Whatever the killed runs left beside D is removed by the next writer of D.
    last = _prepare(out, seed=99)
    assert last.wait(timeout=120) == 0, last.stderr.read()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["D", "scratch"], outcomes
