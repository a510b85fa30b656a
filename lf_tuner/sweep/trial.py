"""One trial: its config file, the launch, the divergence watch and the result it leaves behind."""

from __future__ import annotations

import copy
import json
import math
import os
import shlex
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lf_tuner.errors import LfTunerError
from lf_tuner.sweep.spec import SweepSpec
from lf_tuner.train.command import Command
from lf_tuner.train.records import RECORD_NAME
from lf_tuner.train.watch import TRAINER_LOG, TRAINER_STATE, Divergence, TrainerLog, run_child

CONFIG_FILE = "train.yaml"
LOG_FILE = "launch.log"
STATUSES = ("completed", "failed", "oom", "diverged", "interrupted")


@dataclass(frozen=True)
class TrialJob:
    """Where one trial lives and which devices it gets: NVML indices ("0", "2,3") or "cpu"."""

    number: int
    trial_dir: Path
    devices: str

    @property
    def config_path(self) -> Path:
        return self.trial_dir / CONFIG_FILE

    @property
    def output_dir(self) -> Path:
        return self.trial_dir / "output"


@dataclass
class Outcome:
    """How a trial ended."""

    status: str
    value: float | None = None
    runtime_s: float = 0.0
    reason: str = ""
    exit_code: int | None = None


def trial_dir_name(number: int) -> str:
    return f"trial-{number:03d}"


def trial_config(
    base: dict[str, Any], params: dict[str, Any], spec: SweepSpec, output_dir: Path
) -> dict[str, Any]:
    """Base config + the trial's parameters + the budget + its own output_dir."""
    cfg = copy.deepcopy(base)
    cfg.update(params)
    if spec.budget is not None:
        cfg.update(spec.budget.model_dump(exclude_none=True))
    cfg["output_dir"] = str(output_dir)
    # HF replaces a NaN loss with the running mean in its logs unless told not to; the watch needs the truth
    cfg.setdefault("logging_nan_inf_filter", False)
    return cfg


def write_trial_config(job: TrialJob, cfg: dict[str, Any]) -> None:
    job.trial_dir.mkdir(parents=True, exist_ok=True)
    job.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))


# --- launchers: pure functions from a job to the command; the seam between the sweep and `run` ---

Launcher = Callable[[TrialJob], Command]


def _pinned_env(job: TrialJob) -> dict[str, str]:
    return {"CUDA_VISIBLE_DEVICES": "" if job.devices == "cpu" else job.devices}


def run_launcher(job: TrialJob) -> Command:
    """Through `lf-tuner run` (preflight, OOM retry, run record), which sees only the trial's GPUs."""
    gpus = "cpu" if job.devices == "cpu" else "all"
    argv = [sys.executable, "-m", "lf_tuner", "run", str(job.config_path), "--gpus", gpus, "--retry-oom", "1"]
    return Command(argv, _pinned_env(job))


def llamafactory_launcher(job: TrialJob) -> Command:
    """Straight to `llamafactory-cli train`, pinned to the trial's GPUs (no preflight, no OOM retry)."""
    return Command(["llamafactory-cli", "train", str(job.config_path)], _pinned_env(job))


LAUNCHERS: dict[str, Launcher] = {"run": run_launcher, "llamafactory": llamafactory_launcher}


# --- reading what a run leaves behind ---


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def log_rows(output_dir: Path) -> list[dict[str, Any]]:
    """Logged rows of a run: trainer_log.jsonl (LLaMA-Factory) and trainer_state.json log_history (HF)."""
    rows = TrainerLog(output_dir / TRAINER_LOG).poll()
    state = read_json(output_dir / TRAINER_STATE)
    if isinstance(state, dict) and isinstance(state.get("log_history"), list):
        rows += [r for r in state["log_history"] if isinstance(r, dict)]
    return rows


def loss_curve(output_dir: Path) -> list[tuple[int, float]]:
    """(step, train loss) points of a run, for the report plot."""
    rows = TrainerLog(output_dir / TRAINER_LOG).poll()
    points = [
        (int(r["current_steps"]), float(r["loss"])) for r in rows if "loss" in r and "current_steps" in r
    ]
    if points:
        return points
    state = read_json(output_dir / TRAINER_STATE) or {}
    return [
        (int(r["step"]), float(r["loss"]))
        for r in state.get("log_history", [])
        if "loss" in r and "step" in r
    ]


def read_metric(output_dir: Path, name: str) -> tuple[float | None, list[str]]:
    """The metric from all_results.json, else its last value in trainer_state.json; plus the keys seen."""
    results = read_json(output_dir / "all_results.json")
    seen: list[str] = []
    if isinstance(results, dict):
        seen = sorted(results)
        if isinstance(results.get(name), int | float):
            return float(results[name]), seen
    state = read_json(output_dir / TRAINER_STATE)
    if isinstance(state, dict):
        for row in reversed(state.get("log_history", [])):
            if isinstance(row, dict) and isinstance(row.get(name), int | float):
                return float(row[name]), seen
    return None, seen


def run_metric_command(command: str | list[str], job: TrialJob) -> tuple[float | None, str]:
    """Run the spec's evaluation command for a finished trial; the last line it prints is the metric."""
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    subs = {"{output_dir}": str(job.output_dir), "{trial_dir}": str(job.trial_dir)}
    for key, val in subs.items():
        argv = [a.replace(key, val) for a in argv]
    env = dict(os.environ, LF_TUNER_OUTPUT_DIR=str(job.output_dir), LF_TUNER_TRIAL_DIR=str(job.trial_dir))
    if job.devices != "cpu":
        env["CUDA_VISIBLE_DEVICES"] = job.devices
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    except OSError as exc:
        return None, f"metric command `{argv[0]}` could not start: {exc.strerror}"
    (job.trial_dir / "metric.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        return None, f"metric command exited with {proc.returncode}; see {job.trial_dir / 'metric.log'}"
    lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    try:
        return float(lines[-1]), ""
    except (IndexError, ValueError):
        return None, f"metric command printed no number on its last line; see {job.trial_dir / 'metric.log'}"


# --- the trial's process, through the one watcher ---


def execute(
    job: TrialJob,
    spec: SweepSpec,
    launcher: Launcher,
    stop: threading.Event,
    *,
    poll_s: float = 1.0,
    on_start: Callable[[int], None] | None = None,
) -> Outcome:
    """Run one trial to its end, stopping it early when it diverges or when the sweep stops."""
    log_path = job.trial_dir / LOG_FILE
    log_path.unlink(missing_ok=True)
    try:
        result = run_child(
            launcher(job),
            output_dir=job.output_dir,
            log_path=log_path,
            divergence_factor=spec.divergence_factor,
            on_start=on_start,
            should_stop=lambda: "the sweep stopped" if stop.is_set() else None,
            poll_s=poll_s,
            grace_s=5.0,
        )
    except LfTunerError as exc:
        return Outcome("failed", reason=exc.message)
    code, runtime = result.returncode, result.runtime_s
    if result.stopped_for:
        return Outcome("interrupted", runtime_s=runtime, reason=result.stopped_for, exit_code=code)
    if result.diverged and code != 0:
        return Outcome(
            "diverged", runtime_s=runtime, reason=f"stopped by the sweep: {result.diverged}", exit_code=code
        )
    return finish(job, spec, code, runtime, oom=result.oom)


def finish(job: TrialJob, spec: SweepSpec, code: int, runtime: float, *, oom: bool = False) -> Outcome:
    """Classify a trial whose process has exited and read its metric."""
    record = read_json(job.output_dir / RECORD_NAME)
    if isinstance(record, dict) and record.get("status") in STATUSES:
        status = str(record["status"])
        reason = str(record.get("reason") or record.get("message") or "")
        runtime = float(record.get("runtime_s") or runtime)
        if status == "interrupted":  # the run was stopped from outside the sweep: final, not re-queued
            status, reason = "failed", reason or "the run was interrupted"
    elif code == 0:
        status, reason = "completed", ""
    elif oom:
        status, reason = "oom", f"out of GPU memory (exit code {code}); see {job.trial_dir / LOG_FILE}"
    else:
        status, reason = "failed", f"exit code {code}; see {job.trial_dir / LOG_FILE}"
    if status == "completed":
        why = Divergence(spec.divergence_factor).first(log_rows(job.output_dir))
        if why:
            status, reason = "diverged", why
    if status != "completed":
        return Outcome(status, runtime_s=runtime, reason=reason or f"exit code {code}", exit_code=code)
    if spec.metric.command is not None:
        value, reason = run_metric_command(spec.metric.command, job)
    else:
        value, seen = read_metric(job.output_dir, spec.metric.name)
        reason = (
            ""
            if value is not None
            else (
                f"metric `{spec.metric.name}` is not in all_results.json or trainer_state.json"
                + (f" (keys: {', '.join(seen)})" if seen else "")
                + "; set `metric.name` to one of them, or enable evaluation (val_size, eval_strategy)"
            )
        )
    if value is None or not math.isfinite(value):
        status = "failed" if value is None else "diverged"
        return Outcome(status, runtime_s=runtime, reason=reason or f"metric is {value}", exit_code=code)
    return Outcome("completed", value=value, runtime_s=runtime, exit_code=code)
