"""The one stand-in for `llamafactory-cli train CONFIG` in the tests and in scripts/bench_sweep.py.

Tests install it on PATH (this Python as its interpreter); the benchmark imports `simulate` from it, so the
simulated and the launched runs follow one formula. It tests lf-tuner, not LLaMA-Factory.

LF_STUB_MODE picks the behaviour:
- ok:    log 2 steps and exit 0 (the default)
- oom:   fail with PyTorch's CUDA out-of-memory message (or $LF_STUB_OOM_MESSAGE) while
         per_device_train_batch_size > 1, else train 2 steps
- nan:   log one good step, then a NaN loss, then hang until killed
- sleep: log one step, then hang until killed (for SIGTERM tests)
- curve: a realistic LoRA run from the config's learning_rate, lora_rank and max_steps (see `simulate`):
         train loss every logging_steps, eval_loss every eval_steps, trainer_state.json and all_results.json
Every call appends {"argv", "config", "env"} as one JSON line to $LF_STUB_CALLS.
In the sleep and nan modes it starts a grandchild in its process group and, with LF_STUB_SETSID=1, one more that
calls setsid (leaving the group) and ignores SIGTERM, SIGINT and SIGHUP; then it writes `<output_dir>/stub.pids`
(its pid, the grandchildren's) in one step, so a test can wait for that file before it sends a signal.

Knobs of the curve mode:
  LF_STUB_STEP_S        seconds to sleep per step
  LF_STUB_GATE          a folder: after step LF_STUB_GATE_STEP (default 1) the run waits until the folder holds a
                        file named after the run's config folder (`trial-001`), so a test lets each run go on
  LF_STUB_HANG_DIVERGED when set, a run whose loss has blown up hangs until it is killed (as a stuck run would)
  LF_STUB_DONE          a file to which a run that finished appends its config path (one line)
"""

import json
import math
import os
import subprocess
import sys
import time

import yaml

# --- the learning curve: one formula for the stand-in and the benchmark ---

START_LOSS = 2.2  # loss before training
BEST_LR = 2.0e-4  # above it the loss floor rises (noisier updates)


def loss_floor(lr, rank):
    """Where the training loss would settle: lower with more rank, higher when the learning rate is too high."""
    return 0.75 + 0.6 / math.sqrt(rank) + 0.8 * max(0.0, math.log10(lr / BEST_LR)) ** 2


def divergence_lr(rank):
    """Above this learning rate the run blows up (sooner the further above it)."""
    return 1.2e-3 * (16 / rank) ** 0.25


def train_loss(lr, rank, step, total):
    """The smooth training loss at `step`: falls at a rate proportional to the learning rate."""
    floor = loss_floor(lr, rank)
    loss = floor + (START_LOSS - floor) * math.exp(-0.03 * (lr / 1e-4) * step)
    limit = divergence_lr(rank)
    if lr > limit:
        onset = 0.5 * total * limit / lr
        if step > onset:
            loss *= math.exp(min(700.0, 0.2 * (step - onset) * lr / limit))
    return loss if loss < 1e4 else float("nan")


def eval_loss(lr, rank, step, total):
    """Held-out loss: the training loss plus a gap that grows with rank as training goes on (overfitting)."""
    return train_loss(lr, rank, step, total) + 0.04 + 0.002 * rank * step / total


def step_seconds(rank):
    """Simulated GPU seconds per step: a higher rank trains more parameters (a cost to trade off)."""
    return 0.5 + 0.01 * rank


def _noise(lr, rank, step):
    """Deterministic batch-to-batch noise in [-1, 1]."""
    x = math.sin(step * 12.9898 + rank * 78.233 + math.log(lr) * 37.719) * 43758.5453
    return 2 * (x - math.floor(x)) - 1


def simulate(cfg):
    """The rows a run of `cfg` writes to trainer_log.jsonl, and its all_results.json."""
    lr = float(cfg["learning_rate"])
    rank = int(cfg.get("lora_rank", 8))
    total = int(cfg.get("max_steps") or 100)
    log_every = int(cfg.get("logging_steps") or 1)
    eval_every = int(cfg.get("eval_steps") or max(1, total // 10))
    rows, losses = [], []
    for step in range(1, total + 1):
        row = {"current_steps": step, "total_steps": total}
        if step % log_every == 0 or step == total:
            loss = train_loss(lr, rank, step, total) * (1 + 0.02 * _noise(lr, rank, step))
            row.update(loss=loss, lr=lr)
            losses.append(loss)
        if step % eval_every == 0 or step == total:
            row["eval_loss"] = eval_loss(lr, rank, step, total)
        if len(row) > 2:
            rows.append(row)
    final = eval_loss(lr, rank, total, total)
    mean = sum(losses) / len(losses) if losses else float("nan")
    results = {
        "epoch": 1.0,
        "eval_loss": final,
        "train_loss": mean,
        "train_runtime": total * step_seconds(rank),
    }
    return rows, results


# --- the stand-in process ---


def log_step(out, step, total, loss):
    with open(os.path.join(out, "trainer_log.jsonl"), "a") as fh:
        fh.write(json.dumps({"current_steps": step, "total_steps": total, "loss": loss, "lr": 1e-4}) + "\n")


def run_curve(cfg, out):
    rows, results = simulate(cfg)
    step_s = float(os.environ.get("LF_STUB_STEP_S", "0"))
    gate = os.environ.get("LF_STUB_GATE")
    if gate:
        gate = os.path.join(gate, os.path.basename(os.path.dirname(os.path.abspath(sys.argv[2]))))
    gate_step = int(os.environ.get("LF_STUB_GATE_STEP", "1"))
    with open(os.path.join(out, "stub.pids"), "w") as fh:
        fh.write(str(os.getpid()))
    history = []
    with open(os.path.join(out, "trainer_log.jsonl"), "w") as log:
        for row in rows:
            log.write(json.dumps(row) + "\n")
            log.flush()
            history.append({"step": row["current_steps"], **{k: v for k, v in row.items() if "loss" in k}})
            loss = row.get("loss")
            if loss is not None and os.environ.get("LF_STUB_HANG_DIVERGED") and not loss < 3 * START_LOSS:
                time.sleep(600)  # stuck after blowing up, until someone kills it
            time.sleep(step_s)
            if gate and row["current_steps"] >= gate_step:
                while not os.path.exists(gate):
                    time.sleep(0.02)
                gate = None
    state = {"global_step": rows[-1]["current_steps"] if rows else 0, "log_history": history}
    with open(os.path.join(out, "trainer_state.json"), "w") as fh:
        json.dump(state, fh)
    with open(os.path.join(out, "all_results.json"), "w") as fh:
        json.dump(results, fh)
    done = os.environ.get("LF_STUB_DONE")
    if done:
        with open(done, "a") as fh:
            fh.write(sys.argv[2] + "\n")


def main():
    assert sys.argv[1] == "train", sys.argv
    with open(sys.argv[2]) as fh:
        cfg = yaml.safe_load(fh)
    keys = ("CUDA_VISIBLE_DEVICES", "RECORD_VRAM", "FORCE_TORCHRUN")
    calls = os.environ.get("LF_STUB_CALLS")
    if calls:
        with open(calls, "a") as fh:
            fh.write(
                json.dumps({"argv": sys.argv, "config": cfg, "env": {k: os.environ.get(k) for k in keys}})
                + "\n"
            )
    out = cfg["output_dir"]
    os.makedirs(out, exist_ok=True)
    if cfg.get("overwrite_output_dir") and os.path.exists(os.path.join(out, "trainer_log.jsonl")):
        os.remove(os.path.join(out, "trainer_log.jsonl"))
    mode = os.environ.get("LF_STUB_MODE", "ok")
    print("[INFO] loading model", flush=True)
    if mode == "curve":
        run_curve(cfg, out)
        print("done", flush=True)
        return
    if mode == "oom" and cfg.get("per_device_train_batch_size", 8) > 1:
        print("Traceback (most recent call last):", flush=True)
        print(
            os.environ.get(
                "LF_STUB_OOM_MESSAGE",
                "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total "
                "capacity of 23.64 GiB of which 1.12 GiB is free.",
            ),
            file=sys.stderr,
            flush=True,
        )
        sys.exit(1)
    if mode in ("sleep", "nan"):
        log_step(out, 1, 10, 2.5)
        if mode == "nan":
            time.sleep(0.3)
            with open(os.path.join(out, "trainer_log.jsonl"), "a") as fh:
                fh.write('{"current_steps": 2, "total_steps": 10, "loss": NaN, "lr": 0.0001}\n')
        pids = [os.getpid(), subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"]).pid]
        if os.environ.get("LF_STUB_SETSID") == "1":
            ready = os.path.join(out, "stub.stubborn")
            stubborn = (
                "import signal, sys, time\nfor s in (1, 2, 15): signal.signal(s, signal.SIG_IGN)\n"
                "open(sys.argv[1], 'w').close()\ntime.sleep(120)"
            )
            proc = subprocess.Popen([sys.executable, "-c", stubborn, ready], start_new_session=True)
            while not os.path.exists(ready):  # its signals are ignored from here on
                time.sleep(0.01)
            pids.append(proc.pid)
        with open(os.path.join(out, "stub.pids.tmp"), "w") as fh:
            fh.write(" ".join(str(pid) for pid in pids))
        os.replace(os.path.join(out, "stub.pids.tmp"), os.path.join(out, "stub.pids"))
        time.sleep(120)
        sys.exit(0)
    log_step(out, 1, 2, 2.5)
    log_step(out, 2, 2, 2.25)
    with open(os.path.join(out, "trainer_state.json"), "w") as fh:
        json.dump({"log_history": [{"step": 1, "loss": 2.5}, {"step": 2, "loss": 2.25}]}, fh)
    print("done", flush=True)


if __name__ == "__main__":
    main()
