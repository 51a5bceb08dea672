#!/usr/bin/env bash
# The main job: set up .venv, then prepare the embedded synthetic shop, fit the baselines, train HierSRec,
# evaluate everything by full ranking on the test split, and print the results table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh "serve"
.venv/bin/hiersrec quickstart "$@"
