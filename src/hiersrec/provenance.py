"""Where a result came from: package and library versions, git commit, machine."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from hiersrec._version import __version__


def git_commit() -> str | None:
    """Short commit of the hiersrec checkout the package runs from (with ``+dirty``), or None if not a checkout.

    ``$HIERSREC_COMMIT`` names it where the code runs from a copy without git history (a remote machine).
    """
    if os.environ.get("HIERSREC_COMMIT"):
        return os.environ["HIERSREC_COMMIT"]
    root = Path(__file__).resolve().parents[2]  # src/hiersrec/provenance.py -> the checkout
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def machine_description() -> str:
    """CPU model, core count and accelerator, e.g. ``"Intel Xeon ... (2 cores), no GPU"``."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu} ({os.cpu_count()} cores), {gpu}"


def provenance() -> dict[str, Any]:
    """Versions, commit and machine, for results files and run metadata."""
    return {
        "hiersrec_version": __version__,
        "commit": git_commit(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "machine": machine_description(),
    }
