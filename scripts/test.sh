#!/usr/bin/env bash
# Set up .venv with the test extras, lint, and run the test suite. Tests that need the real datasets run when
# ../shared/data (or $HIERSREC_DATA) exists and skip with a reason otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh "test,serve,faiss,search"
.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
.venv/bin/python -m pytest -q "$@"
