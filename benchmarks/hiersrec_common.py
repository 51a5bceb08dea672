"""What the HierSRec benchmark scripts share: dataset names and where their results go."""

from __future__ import annotations

import os
from pathlib import Path

from reporting import REPO, resolve_stem

SHARED = Path(os.environ.get("HIERSREC_DATA", REPO.parent / "shared" / "data"))
DATASETS = {  # name -> (what open_dataset reads, default preset)
    "diginetica": (SHARED / "diginetica" / "srgnn_cat", "diginetica_hiersrec"),
    "yoochoose1_64": (SHARED / "yoochoose1_64" / "srgnn_cat", "yoochoose1_64_hiersrec"),
    "amazon-scientific": (SHARED / "amazon-scientific", "amazon_scientific_hiersrec"),
    "synthetic": ("synthetic", "synthetic_hiersrec"),
}


def resolve(dataset: str, preset: str | None, benchmark: str, out: Path | None) -> tuple[str, str, str, Path]:
    """(dataset spec for open_dataset, preset, short name, results stem) of the command-line choices."""
    spec, default_preset = DATASETS.get(dataset, (dataset, None))
    preset = preset or default_preset
    if preset is None:
        raise SystemExit("--preset is required for a dataset folder")
    name = dataset if dataset in DATASETS else Path(dataset).name
    return str(spec), preset, name, resolve_stem(out, benchmark, name)
