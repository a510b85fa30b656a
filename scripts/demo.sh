#!/usr/bin/env bash
# The main job on the bundled example, no GPU and no torch needed:
# install, estimate, cutoff, render and a dry-run of the launch. Writes only into a new temporary folder.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export PATH="$PWD/.venv/bin:$PATH" HF_HUB_OFFLINE=1
DEMO=$(mktemp -d "${TMPDIR:-/tmp}/lf-tuner-demo.XXXXXX")
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. estimate: Qwen2.5-7B LoRA at 4096 tokens on a 24 GiB GPU"
lf-tuner estimate --model Qwen2.5-7B --cutoff 4096 --gpu-memory 24

step "2. cutoff: token lengths of examples/data/demo_sharegpt.json with the qwen template"
python scripts/make_demo_tokenizer.py "$DEMO/tokenizer"
lf-tuner cutoff --dataset demo_sharegpt --dataset-dir examples/data --tokenizer "$DEMO/tokenizer" \
  --template qwen --model Qwen2.5-7B

step "3. render: the security preset for that dataset"
lf-tuner render --preset security --dataset demo_sharegpt --dataset-dir examples/data \
  --output-dir "$DEMO/saves/security" -o "$DEMO/train.yaml"
cat "$DEMO/train.yaml"

step "4. run --dry-run: the launch plan (GPUs, estimate, argv, environment), nothing started"
lf-tuner run "$DEMO/train.yaml" --dry-run

echo
echo "demo files: $DEMO"
