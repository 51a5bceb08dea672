"""What the HierSRec benchmark scripts share: dataset names, output paths, the provenance header."""

from __future__ import annotations

import datetime as dt
import os
import shlex
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SHARED = Path(os.environ.get("HIERSREC_DATA", REPO.parent / "shared" / "data"))
DATASETS = {  # name -> (what open_dataset reads, default preset)
    "diginetica": (SHARED / "diginetica" / "srgnn_cat", "diginetica_hiersrec"),
    "yoochoose1_64": (SHARED / "yoochoose1_64" / "srgnn_cat", "yoochoose1_64_hiersrec"),
    "amazon-scientific": (SHARED / "amazon-scientific", "amazon_scientific_hiersrec"),
    "synthetic": ("synthetic", "synthetic_hiersrec"),
}


def resolve(dataset: str, preset: str | None, kind: str, out: Path | None) -> tuple[str, str, str, Path]:
    """(dataset spec for open_dataset, preset, short name, output stem) of the command-line choices."""
    spec, default_preset = DATASETS.get(dataset, (dataset, None))
    preset = preset or default_preset
    if preset is None:
        raise SystemExit("--preset is required for a dataset folder")
    name = dataset if dataset in DATASETS else Path(dataset).name
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = out or RESULTS / f"{kind}-{name}-{stamp}"
    out.parent.mkdir(parents=True, exist_ok=True)
    return str(spec), preset, name, out


def header(name: str, preset: str, common: list[str]) -> dict[str, Any]:
    """Command, versions, commit, machine and date of a results file."""
    from hiersrec.provenance import provenance

    return {
        "dataset": name,
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        **provenance(),
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "preset": preset,
        "common_overrides": common,
    }


def header_lines(values: dict[str, Any]) -> list[str]:
    """The header as markdown bullet lines."""
    return [f"- {key}: `{value}`" if key == "command" else f"- {key}: {value}" for key, value in values.items()]
