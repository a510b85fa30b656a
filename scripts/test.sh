#!/usr/bin/env bash
# The project's checks, as CI runs them: install (with the training stack), lint, types, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --train
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export PATH="$PWD/.venv/bin:$PATH"
.venv/bin/ruff check lf_tuner tests scripts
.venv/bin/ruff format --check lf_tuner tests scripts
.venv/bin/mypy
.venv/bin/lint-imports --no-cache
.venv/bin/vulture
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
