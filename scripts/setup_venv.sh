#!/usr/bin/env bash
# Create (or reuse) the virtual environment .venv and install hiersrec into it with the given extras.
# torch is installed first and pinned: an unpinned torch pulled in by another package would fetch a CUDA build.
# Usage: bash scripts/setup_venv.sh EXTRAS   (e.g. "serve" or "test,serve,faiss,search"; "" for none)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0"
if [ -n "$extras" ]; then
  .venv/bin/python -m pip install --quiet -e ".[${extras}]"
else
  .venv/bin/python -m pip install --quiet -e .
fi
