#!/bin/bash
# Rendered by lf-tuner: one LLaMA-Factory run over 2 node(s) x 8 GPU(s).
# Submit it with sbatch; the config must be on a filesystem every node sees.
#SBATCH --job-name=qwen-lora
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --output=qwen-lora-%j.out
set -euo pipefail

# node rank 0 is the first host of the allocation; every node joins it on a fixed port
MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
export MASTER_ADDR
export MASTER_PORT=29501
export NNODES=2
export NPROC_PER_NODE=8
export FORCE_TORCHRUN=1
export RECORD_VRAM=1
export LF_TUNER_CLI=llamafactory-cli
export LF_TUNER_CONFIG=/shared/runs/a/lf-tuner-config.yaml

# one task per node; NODE_RANK comes from SLURM on each node (LLaMA-Factory reads NODE_RANK, not RANK)
srun --nodes=2 --ntasks-per-node=1 bash -c 'NODE_RANK="$SLURM_NODEID" exec "$LF_TUNER_CLI" train "$LF_TUNER_CONFIG"'
