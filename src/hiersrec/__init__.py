"""hiersrec: session-based recommendation with HierSRec, honest evaluation and strong baselines."""

from __future__ import annotations

__version__ = "0.1.0"
