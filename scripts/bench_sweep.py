"""How fast each search finds a good LoRA configuration, in GPU time, on the stand-in's learning curves.

    python scripts/bench_sweep.py                 # 10 seeds, the table for the README
    python scripts/bench_sweep.py --seeds 5 --verify

Every method runs through lf-tuner's own sweep engine (spec, stages, imports, samplers, the pruner fed by
trainer_log rows, the divergence watch, the journal) on one slot. Only the training process is simulated: the
rows a run would write come from `simulate` in tests/stubs/llamafactory_cli_stub.py, the same formula the
stand-in `llamafactory-cli` writes (one source), so a trial costs milliseconds instead of a subprocess.
`--verify` runs the first method again through real stand-in subprocesses and checks the values agree.

Space: learning_rate log-uniform [1e-5, 3e-3] x lora_rank {4, 8, 16, 32, 64}, 100 steps a trial, eval_loss
every 10 steps. The true optimum is the formula's minimum over a dense grid. Figures, median over seeds:
trial-steps (the GPU time of every step any trial ran, pruned and diverged trials included) until the best
value is within 1% of the optimum, and the best value after 3000 trial-steps (the cost of 30 full trials).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lf_tuner.sweep import (  # noqa: E402
    LAUNCHERS,
    Outcome,
    Sweep,  # noqa: E402
    TrialJob,
    TrialWatch,
    parse_spec,  # noqa: E402
    read_rows,  # noqa: E402
)
from lf_tuner.train import Divergence  # noqa: E402

STUB_PATH = ROOT / "tests" / "stubs" / "llamafactory_cli_stub.py"
_spec = importlib.util.spec_from_file_location("llamafactory_cli_stub", STUB_PATH)
assert _spec is not None and _spec.loader is not None
stub: Any = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(stub)

STEPS = 100
RANKS = [4, 8, 16, 32, 64]
LR_RANGE = (1.0e-5, 3.0e-3)
GRID_LRS = [1.0e-5, 3.0e-5, 1.0e-4, 3.0e-4, 1.0e-3, 3.0e-3]
BUDGET = 3000  # trial-steps for "best after a fixed budget": 30 full trials
CAP = 9000  # trial-steps a method may spend looking for the 1% target
WARM = [(lr, r) for lr in (1.0e-5, 1.0e-4, 1.0e-3) for r in (8, 32)]  # an earlier coarse round
PRUNERS = {
    "median": {"type": "median", "n_startup_trials": 5, "n_warmup_steps": 10},
    "hyperband": {"type": "hyperband", "min_resource": 10, "max_resource": STEPS},
}


def true_optimum() -> tuple[float, float, int]:
    lo, hi = math.log10(LR_RANGE[0]), math.log10(LR_RANGE[1])
    points = ((10 ** (lo + (hi - lo) * i / 20000), r) for r in RANKS for i in range(20001))
    return min((stub.eval_loss(lr, r, STEPS, STEPS), lr, r) for lr, r in points)


def spec_for(method: str, seed: int, *, prune: str | None = None) -> Any:
    if method == "grid":
        params: dict[str, Any] = {"learning_rate": {"values": GRID_LRS}, "lora_rank": {"values": RANKS}}
    else:
        params = {
            "learning_rate": {"distribution": "log_uniform", "min": LR_RANGE[0], "max": LR_RANGE[1]},
            "lora_rank": {"values": RANKS},
        }
    data: dict[str, Any] = {
        "base": "train.yaml",
        "method": method,
        "metric": {"name": "eval_loss", "goal": "minimize"},
        "budget": {"max_steps": STEPS},
        "seed": seed,
        "parameters": params,
    }
    if method != "grid":
        data["max_trials"] = CAP // 10
    if prune:
        data["pruner"] = PRUNERS[prune]
    return parse_spec(data, "bench")


@dataclass
class Run:
    """One trial as the benchmark saw it: steps it ran and its value (None unless completed)."""

    steps: int
    value: float | None


def simulated(spec: Any, log: list[Run], stop: Any) -> Any:
    """A trial executor that plays the stand-in's rows through the same watch as a real run."""

    def execute(job: TrialJob, watch: TrialWatch, should_stop: Any) -> Outcome:
        cfg = yaml.safe_load(job.config_path.read_text())
        rows, results = stub.simulate(cfg)
        total = rows[-1]["current_steps"]
        per_step = stub.step_seconds(int(cfg["lora_rank"]))
        divergence = Divergence(spec.divergence_factor)
        outcome: Outcome | None = None
        for row in rows:
            watch.observe(row)
            step = row["current_steps"]
            why = divergence.check(row)
            if why:
                outcome = Outcome(
                    "diverged", runtime_s=step * per_step, reason=why, steps=step, total_steps=total
                )
            elif watch.stop_reason():
                outcome = watch.outcome(step * per_step, None)
            if outcome is not None:
                break
        if outcome is None:
            value = results["eval_loss"]
            ok = math.isfinite(value)
            outcome = Outcome(
                "completed" if ok else "diverged",
                values=[value] if ok else None,
                runtime_s=total * per_step,
                steps=total,
                total_steps=total,
            )
        log.append(Run(outcome.steps or 0, outcome.value if outcome.status == "completed" else None))
        if sum(r.steps for r in log) >= CAP:
            stop.set()
        return outcome

    return execute


def run_method(
    name: str, method: str, seed: int, work: Path, *, prune: str | None = None, warm: bool = False
) -> list[Run]:
    spec = spec_for(method, seed, prune=prune)
    d = work / f"{name}-{seed}"
    d.mkdir(parents=True)
    imports = []
    if warm:
        table = work / "warm.md"
        if not table.exists():
            lines = ["| learning_rate | lora_rank | eval_loss |", "|---|---|---|"]
            lines += [f"| {lr} | {r} | {stub.eval_loss(lr, r, STEPS, STEPS)} |" for lr, r in WARM]
            table.write_text("\n".join(lines) + "\n")
        imports.append((str(table), read_rows(table, spec)[0]))
    log: list[Run] = []
    sweep = Sweep(spec, d, {"stage": "sft"}, LAUNCHERS["llamafactory"], poll_s=0.01, imports=imports)
    sweep.executor = simulated(spec, log, sweep.stop)
    sweep.run(["cpu"])
    return log


def steps_to_target(log: list[Run], target: float) -> int | None:
    spent = 0
    for run in log:
        spent += run.steps
        if run.value is not None and run.value <= target:
            return spent
    return None


def best_within(log: list[Run], budget: int) -> float:
    spent, best = 0, math.inf
    for run in log:
        spent += run.steps
        if spent > budget:
            break
        if run.value is not None:
            best = min(best, run.value)
    return best


METHODS = [
    ("grid (6 lr x 5 ranks)", "grid", {}),
    ("random", "random", {}),
    ("sobol", "sobol", {}),
    ("TPE", "tpe", {}),
    ("TPE + median pruner", "tpe", {"prune": "median"}),
    ("TPE + hyperband pruner", "tpe", {"prune": "hyperband"}),
    ("TPE warm-started (6 imported runs)", "tpe", {"warm": True}),
    ("CMA-ES", "cmaes", {}),
]


def verify(work: Path) -> str:
    """Random search, seed 0, 8 trials, through real stand-in subprocesses: the values must match the
    in-process run's."""
    bin_dir = work / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "llamafactory-cli"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STUB_PATH}" "$@"\n')
    exe.chmod(0o755)
    spec_path = work / "verify.yaml"
    data = yaml.safe_load(yaml.safe_dump(spec_for("random", 0).model_dump(mode="json", exclude_none=True)))
    data["max_trials"] = 8
    spec_path.write_text(yaml.safe_dump(data))
    (work / "train.yaml").write_text("stage: sft\n")
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", LF_STUB_MODE="curve", PYTHONPATH=str(ROOT))
    argv = [
        sys.executable,
        "-m",
        "lf_tuner",
        "sweep",
        str(spec_path),
        "--dir",
        str(work / "real"),
        "--gpus",
        "cpu",
    ]
    subprocess.run(
        [*argv, "--launcher", "llamafactory", "--poll", "0.05"], env=env, check=True, capture_output=True
    )
    from lf_tuner.sweep import load_results

    real = sorted(load_results(work / "real", importance=False).trials, key=lambda t: t.number)
    spec = spec_for("random", 0)
    d = work / "sim"
    d.mkdir()
    log: list[Run] = []
    sweep = Sweep(spec.model_copy(update={"max_trials": 8}), d, {"stage": "sft"}, LAUNCHERS["llamafactory"])
    sweep.executor = simulated(spec, log, sweep.stop)
    sweep.run(["cpu"])
    pairs = list(zip([t.value for t in real], [r.value for r in log], strict=True))
    same = all(
        (a is None and b is None) or (a is not None and b is not None and abs(a - b) < 1e-9) for a, b in pairs
    )
    if not same:
        raise SystemExit(f"in-process and subprocess runs disagree: {pairs}")
    return f"verified: 8 random trials give the same values through real stand-in subprocesses ({len(pairs)} pairs)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--verify", action="store_true", help="check the simulated runs against subprocesses")
    args = parser.parse_args()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    optimum, lr_star, rank_star = true_optimum()
    target = optimum * 1.01
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        work = Path(tmp)
        (work / "train.yaml").write_text("stage: sft\n")
        if args.verify:
            (work / "v").mkdir()
            print(verify(work / "v"), file=sys.stderr)
        print(
            f"true optimum: eval_loss {optimum:.4f} at learning_rate {lr_star:.3g}, lora_rank {rank_star}; "
            f"target (within 1%): {target:.4f}; {STEPS} steps a trial; median over {args.seeds} seeds\n"
        )
        header = "| method | trial-steps to within 1% | seeds that got there | best after 3000 trial-steps | above optimum |"
        print(header)
        print("|---|---|---|---|---|")
        for index, (name, method, options) in enumerate(METHODS):
            seeds = (
                [0] if method == "grid" else list(range(args.seeds))
            )  # a grid is the same whatever the seed
            to_target, best = [], []
            for seed in seeds:
                log = run_method(f"m{index}", method, seed, work, **options)
                to_target.append(steps_to_target(log, target))
                best.append(best_within(log, BUDGET))
            reached = [s for s in to_target if s is not None]
            if len(reached) * 2 > len(seeds):
                median = statistics.median([s if s is not None else math.inf for s in to_target])
                steps = f"{median:.0f}"
            else:
                steps = f"not within {CAP}"
            b = statistics.median(best)
            shown = (
                f"{len(reached)}/{len(seeds)}"
                if method != "grid"
                else ("1/1" if reached else "0/1 (any seed)")
            )
            print(f"| {name} | {steps} | {shown} | {b:.4f} | {100 * (b / optimum - 1):.1f}% |")
        print(
            f"\nwarm start: the 6 imported runs ({', '.join(f'{lr:g}/{r}' for lr, r in WARM)}) were measured before "
            f"the sweep; their {6 * STEPS} steps are not counted. Pruners: {PRUNERS}."
        )


if __name__ == "__main__":
    main()
