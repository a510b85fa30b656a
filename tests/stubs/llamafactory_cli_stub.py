"""A stand-in for `llamafactory-cli train CONFIG` (tests install it on PATH with this Python as its shebang).

LF_STUB_MODE picks the behaviour:
- oom:   fail with PyTorch's CUDA out-of-memory message (or $LF_STUB_OOM_MESSAGE) while
         per_device_train_batch_size > 1, else train 2 steps
- nan:   log one good step, then a NaN loss, then hang until killed
- sleep: log one step, then hang until killed (for SIGTERM tests)
- ok:    log 2 steps and exit 0
Every call appends {"argv", "config", "env"} as one JSON line to $LF_STUB_CALLS.
In the sleep and nan modes it starts a grandchild in its process group and, with LF_STUB_SETSID=1, one more that
calls setsid (leaving the group) and ignores SIGTERM, SIGINT and SIGHUP; then it writes `<output_dir>/stub.pids`
(its pid, the grandchildren's) in one step, so a test can wait for that file before it sends a signal.
"""

import json
import os
import subprocess
import sys
import time

import yaml


def log_step(out, step, total, loss):
    with open(os.path.join(out, "trainer_log.jsonl"), "a") as fh:
        fh.write(json.dumps({"current_steps": step, "total_steps": total, "loss": loss, "lr": 1e-4}) + "\n")


def main():
    assert sys.argv[1] == "train", sys.argv
    with open(sys.argv[2]) as fh:
        cfg = yaml.safe_load(fh)
    keys = ("CUDA_VISIBLE_DEVICES", "RECORD_VRAM", "FORCE_TORCHRUN")
    with open(os.environ["LF_STUB_CALLS"], "a") as fh:
        fh.write(
            json.dumps({"argv": sys.argv, "config": cfg, "env": {k: os.environ.get(k) for k in keys}}) + "\n"
        )
    out = cfg["output_dir"]
    os.makedirs(out, exist_ok=True)
    if cfg.get("overwrite_output_dir") and os.path.exists(os.path.join(out, "trainer_log.jsonl")):
        os.remove(os.path.join(out, "trainer_log.jsonl"))
    mode = os.environ.get("LF_STUB_MODE", "ok")
    print("[INFO] loading model", flush=True)
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
