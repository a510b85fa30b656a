"""Kill a sweep's process group with SIGKILL at random moments, restart it each time, then let it finish.

    python scripts/kill_sweep.py                  # 20 kills of a 3x2 grid, seed 0
    python scripts/kill_sweep.py --kills 50 --seed 7

The sweep runs `lf-tuner sweep` with the stand-in llamafactory-cli (tests/stubs, curve mode, slowed to
LF_STUB_STEP_S per step so kills land mid-trial). Each kill hits the sweep's whole process group; the trial's
training runs in its own session (as real training does) and outlives it, so the next start must stop or
adopt it. Printed at the end, from the stand-in's own record of finished runs and from the sweep's report:
grid points run to completion twice (must be 0), grid points lost (0), processes left behind (0).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
STUB = ROOT / "tests" / "stubs" / "llamafactory_cli_stub.py"
LRS = [1.0e-4, 3.0e-4, 1.0e-3]
RANKS = [8, 32]


def leftovers(marker: str) -> list[int]:
    """Live processes whose command line mentions this run's folder (stand-ins, sweeps)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def _cmd(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--step-s", type=float, default=0.15, help="stand-in seconds per step (20 steps a trial)"
    )
    parser.add_argument(
        "--max-wait", type=float, default=3.0, help="a kill comes 0.2..MAX_WAIT s after a start"
    )
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="lf-tuner-kill-") as tmp:
        work = Path(tmp)
        bin_dir = work / "bin"
        bin_dir.mkdir()
        exe = bin_dir / "llamafactory-cli"
        exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STUB}" "$@"\n')
        exe.chmod(0o755)
        (work / "train.yaml").write_text("stage: sft\nfinetuning_type: lora\n")
        spec = {
            "base": "train.yaml",
            "method": "grid",
            "metric": {"name": "eval_loss", "goal": "minimize"},
            "budget": {"max_steps": 20},
            "parameters": {"learning_rate": {"values": LRS}, "lora_rank": {"values": RANKS}},
        }
        (work / "spec.yaml").write_text(yaml.safe_dump(spec))
        done_file = work / "done.txt"
        env = dict(
            os.environ,
            PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            PYTHONPATH=str(ROOT),
            LF_STUB_MODE="curve",
            LF_STUB_STEP_S=str(args.step_s),
            LF_STUB_DONE=str(done_file),
        )
        argv = [sys.executable, "-m", "lf_tuner", "sweep", str(work / "spec.yaml"), "--dir", str(work / "d")]
        argv += ["--gpus", "0,1", "--launcher", "llamafactory", "--poll", "0.05"]
        finished_early, mid_trial, errors = 0, 0, []
        for kill in range(args.kills):
            proc = subprocess.Popen(
                argv,
                env=env,
                cwd=work,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            try:
                proc.wait(timeout=rng.uniform(0.2, args.max_wait))
                finished_early += 1
                if proc.returncode != 0:
                    errors.append(
                        f"start {kill}: exit {proc.returncode}: {proc.stderr.read().decode()[-300:]}"
                    )
            except subprocess.TimeoutExpired:
                running = [
                    p for p in leftovers(str(work)) if p != proc.pid and "llamafactory_cli_stub" in _cmd(p)
                ]
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                mid_trial += bool(running)
            proc.stderr.close()  # type: ignore[union-attr]
        final = subprocess.run(argv, env=env, cwd=work, capture_output=True, text=True, timeout=600)
        time.sleep(0.5)  # let the kernel reap what the last run stopped before counting leftovers
        left = leftovers(str(work))
        report = subprocess.run(
            [sys.executable, "-m", "lf_tuner", "report", str(work / "d"), "--format", "json", "--no-plots"],
            env=env,
            capture_output=True,
            text=True,
        )
        trials = json.loads(report.stdout)["trials"] if report.returncode == 0 else []
        runs = Counter()
        for line in done_file.read_text().splitlines() if done_file.exists() else []:
            cfg = yaml.safe_load(Path(line).read_text())
            runs[(cfg["learning_rate"], cfg["lora_rank"])] += 1
        completed = {
            (t["params"]["learning_rate"], t["params"]["lora_rank"])
            for t in trials
            if t["status"] == "completed"
        }
        points = [(lr, r) for lr in LRS for r in RANKS]
        twice = [p for p in points if runs[p] > 1]
        lost = [p for p in points if p not in completed]
        statuses = Counter(t["status"] for t in trials)
        adopted = final.stderr.count("its result is adopted")
        print(
            f"kills: {args.kills} (seed {args.seed}): {mid_trial} while a trial was training, "
            f"{args.kills - finished_early - mid_trial} while none was; {finished_early} starts ended "
            "before their kill came"
        )
        print(f"final run: exit {final.returncode}; trials by status: {dict(statuses)}")
        print(f"grid points run to completion twice: {len(twice)} {twice if twice else ''}".rstrip())
        print(f"grid points lost: {len(lost)} {lost if lost else ''}".rstrip())
        print(f"processes left behind: {len(left)}")
        if adopted:
            print(f"(results adopted by the final run: {adopted})")
        for error in errors + ([final.stderr[-500:]] if final.returncode != 0 else []):
            print(f"error: {error}", file=sys.stderr)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        if twice or lost or left or final.returncode != 0 or errors:
            sys.exit(1)


if __name__ == "__main__":
    main()
