#!/usr/bin/env bash
# Install lf-tuner into ./.venv.
#   bash scripts/install.sh          light: the CLI and its tests' tools (no torch; estimate, cutoff, render, dry-runs)
#   bash scripts/install.sh --train  also the training stack: torch 2.9.1 + llamafactory 0.9.5 (CPU or GPU)
# The training stack goes in three steps, in this order: torchvision must match torch (or transformers breaks),
# and llamafactory's data module imports torchaudio unconditionally.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip_install() {
  # pip's warnings about this machine's missing local indexes are noise; errors still show and fail the script
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "$@" 2>&1 \
    | { grep -v "^WARNING: Location 'file:" || true; }
}
if [ "${1:-}" = "--train" ]; then
  pip_install torch==2.9.1 torchvision==0.24.1
  pip_install torch==2.9.1 'torchaudio==2.9.*'
  pip_install llamafactory==0.9.5
fi
pip_install -e '.[dev]'
