"""Stand-in for `llamafactory-cli train CFG.yaml` in the sweep engine tests (it tests the engine, not LLaMA-Factory).

It reads learning_rate and lora_rank from the YAML and writes deterministic trainer_log.jsonl, trainer_state.json
and all_results.json into output_dir. eval_loss = (log10(lr) + 3.5)^2 + 8 / lora_rank: best near lr 3.2e-4, high rank.

Environment knobs:
  FAKE_LF_STEP_S    seconds to sleep per step (so a test can kill the sweep mid-trial)
  FAKE_LF_NAN_LR    from this learning rate up, the loss is NaN from step 2 on
  FAKE_LF_BLOWUP_LR from this learning rate up, the loss jumps 10x at step 2, then the run hangs for 60 s
  FAKE_LF_CALLS     a file to which each start appends `<config path> <CUDA_VISIBLE_DEVICES>`
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import yaml


def main() -> int:
    if len(sys.argv) < 3 or sys.argv[1] != "train":
        print("usage: llamafactory-cli train CONFIG.yaml", file=sys.stderr)
        return 2
    cfg = yaml.safe_load(Path(sys.argv[2]).read_text())
    calls = os.environ.get("FAKE_LF_CALLS")
    if calls:
        with open(calls, "a") as fh:
            fh.write(f"{sys.argv[2]} {os.environ.get('CUDA_VISIBLE_DEVICES', '-')}\n")
    lr = float(cfg["learning_rate"])
    rank = int(cfg.get("lora_rank", 8))
    steps = int(cfg.get("max_steps", 5))
    out = Path(cfg["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    step_s = float(os.environ.get("FAKE_LF_STEP_S", "0"))
    nan = lr >= float(os.environ.get("FAKE_LF_NAN_LR", "inf"))
    blowup = lr >= float(os.environ.get("FAKE_LF_BLOWUP_LR", "inf"))
    final = (math.log10(lr) + 3.5) ** 2 + 8 / rank
    history = []
    with (out / "trainer_log.jsonl").open("w") as log:
        for step in range(1, steps + 1):
            loss = final + 2.0 / step
            if nan and step >= 2:
                loss = float("nan")
            if blowup and step >= 2:
                loss = 10 * (final + 2.0)
            row = {"current_steps": step, "total_steps": steps, "loss": loss, "lr": lr}
            log.write(json.dumps(row) + "\n")
            log.flush()
            history.append(
                {"step": step, "loss": loss, "grad_norm": float("nan") if nan and step >= 2 else 1.0}
            )
            if blowup and step >= 2:
                time.sleep(60)
            time.sleep(step_s)
    state = {"global_step": steps, "log_history": history + [{"step": steps, "eval_loss": final}]}
    (out / "trainer_state.json").write_text(json.dumps(state))
    results = {"eval_loss": final, "train_loss": final + 0.5, "train_runtime": steps * step_s, "epoch": 1.0}
    (out / "all_results.json").write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
