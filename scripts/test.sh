#!/usr/bin/env bash
# The project's checks, as CI runs them: install (with the training stack), lint, types, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --train
# the sweep tests start a real PostgreSQL server (as an unprivileged user); Debian keeps its binaries off PATH
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  else
    echo "note: no PostgreSQL server binaries; the PostgreSQL sweep tests will be skipped" >&2
  fi
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export PATH="$PWD/.venv/bin:$PATH"
.venv/bin/ruff check lf_tuner tests scripts
.venv/bin/ruff format --check lf_tuner tests scripts
.venv/bin/mypy
.venv/bin/lint-imports --no-cache
.venv/bin/vulture
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
