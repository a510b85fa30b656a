"""One trial: its config file, the launch through the one watcher, pruning and early stopping on the
intermediate values it logs, and the result it leaves behind."""

from __future__ import annotations

import copy
import functools
import math
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lf_tuner.errors import LfTunerError
from lf_tuner.sweep.spec import INTERMEDIATE_GOALS, MetricSpec, SweepSpec
from lf_tuner.sweep.storage import TRIAL_MARK
from lf_tuner.train import (
    RECORD_NAME,
    TRAINER_LOG,
    TRAINER_STATE,
    Command,
    Divergence,
    TrainerLog,
    read_json,
    run_child,
    write_config,
)
from lf_tuner.train import STATUSES as RUN_STATUSES

if TYPE_CHECKING:
    from lf_tuner.config import TrainConfig

CONFIG_FILE = "train.yaml"
LOG_FILE = "launch.log"
STATUSES = (*RUN_STATUSES, "pruned")  # a trial ends as its run does, or pruned


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
    """How a trial ended. `values` has one number per metric of the spec when it completed."""

    status: str
    values: list[float] | None = None
    runtime_s: float = 0.0
    reason: str = ""
    exit_code: int | None = None
    steps: int | None = None  # the last training step it logged
    total_steps: int | None = None
    stopped_early: bool = False  # completed, but stopped by `early_stopping` before its last step

    @property
    def value(self) -> float | None:
        return self.values[0] if self.values else None


def trial_dir_name(number: int, stage: str = "main") -> str:
    return f"trial-{number:03d}" if stage == "main" else f"trial-{stage}-{number:03d}"


def trial_config(base: TrainConfig, params: dict[str, Any], spec: SweepSpec, output_dir: Path) -> TrainConfig:
    """Base config + the trial's parameters + the budget + its own output_dir."""
    cfg = copy.deepcopy(base)
    cfg.update(params)
    if spec.budget is not None:
        cfg.update(spec.budget.model_dump(exclude_none=True))
    cfg["output_dir"] = str(output_dir)
    # HF replaces a NaN loss with the running mean in its logs unless told not to; the watch needs the truth
    cfg.setdefault("logging_nan_inf_filter", False)
    return cfg


def write_trial_config(job: TrialJob, cfg: TrainConfig, token: str) -> None:
    """The trial's folder, marked as this study's (so a later sweep never takes it for its own), and its YAML."""
    job.trial_dir.mkdir(parents=True, exist_ok=True)
    (job.trial_dir / TRIAL_MARK).write_text(token + "\n")
    write_config(cfg, job.config_path)


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


# --- pruning and early stopping on the values a run logs while it trains ---


@dataclass
class TrialWatch:
    """A trial's intermediate values (`eval_loss` by default) as trainer_log.jsonl gains them: each is reported
    to optuna's pruner (`report`, `should_prune`), and `early_stopping` counts evaluations without improvement."""

    key: str = "eval_loss"
    study_goal: str = "minimize"
    report: Callable[[float, int], None] | None = None
    should_prune: Callable[[], bool] | None = None
    patience: int | None = None
    min_delta: float = 0.0
    values: dict[int, float] = field(default_factory=dict)
    last_step: int = 0
    total_steps: int | None = None
    pruned_at: int | None = None
    stopped_at: int | None = None
    _best: float | None = None
    _since_best: int = 0

    @classmethod
    def for_spec(
        cls,
        spec: SweepSpec,
        report: Callable[[float, int], None] | None = None,
        should_prune: Callable[[], bool] | None = None,
    ) -> TrialWatch:
        es = spec.early_stopping
        return cls(
            key=spec.intermediate,
            study_goal=spec.objectives[0].goal,
            report=report if spec.prunes else None,
            should_prune=should_prune if spec.prunes else None,
            patience=es.patience if es else None,
            min_delta=es.min_delta if es else 0.0,
        )

    @property
    def lower_is_better(self) -> bool:
        return INTERMEDIATE_GOALS.get(self.key, "minimize") == "minimize"

    def observe(self, entry: dict[str, Any]) -> None:
        step = entry.get("current_steps", entry.get("step"))
        if isinstance(step, int):
            self.last_step = max(self.last_step, step)
        if isinstance(entry.get("total_steps"), int):
            self.total_steps = entry["total_steps"]
        value = entry.get(self.key)
        if not isinstance(step, int) or isinstance(value, bool) or not isinstance(value, int | float):
            return
        value = float(value)
        if not math.isfinite(value) or step in self.values:
            return
        self.values[step] = value
        if self.report is not None and self.should_prune is not None and self.pruned_at is None:
            # the pruner ranks by the study's direction; a loss watched for a maximised metric goes in negated
            same_way = (self.study_goal == "minimize") == self.lower_is_better
            self.report(value if same_way else -value, step)
            if self.should_prune():
                self.pruned_at = step
        if self.patience is not None and (self.total_steps is None or step < self.total_steps):
            better = self._best is None or (
                self._best - value > self.min_delta
                if self.lower_is_better
                else value - self._best > self.min_delta
            )
            if better:
                self._best, self._since_best = value, 0
            else:
                self._since_best += 1
                if self._since_best >= self.patience and self.stopped_at is None:
                    self.stopped_at = step

    def stop_reason(self) -> str | None:
        if self.pruned_at is not None:
            return f"pruned at step {self.pruned_at}"
        if self.stopped_at is not None:
            return f"early stopping at step {self.stopped_at}: {self.key} did not improve for {self.patience} evaluations"
        return None

    def best(self) -> tuple[int, float] | None:
        """(step, value) of the best intermediate value so far."""
        if not self.values:
            return None
        pick = min if self.lower_is_better else max
        step = pick(self.values, key=lambda s: self.values[s])
        return step, self.values[step]

    def outcome(self, runtime: float, code: int | None) -> Outcome:
        """The outcome of a trial this watch stopped."""
        total = self.total_steps
        ended = functools.partial(
            Outcome, runtime_s=runtime, exit_code=code, steps=self.last_step or None, total_steps=total
        )
        if self.pruned_at is not None:
            last = self.values.get(self.pruned_at)
            where = f"pruned at step {self.pruned_at}" + (f" of {total}" if total else "")
            return ended("pruned", values=None if last is None else [last], reason=where)
        best = self.best()
        assert best is not None and self.stopped_at is not None
        why = f"early stopping at step {self.stopped_at}; best {self.key} at step {best[0]}"
        return ended("completed", values=[best[1]], reason=why, stopped_early=True)


# --- reading what a run leaves behind ---


def log_rows(output_dir: Path) -> list[dict[str, Any]]:
    """Logged rows of a run: trainer_log.jsonl (LLaMA-Factory) and trainer_state.json log_history (HF)."""
    rows = TrainerLog(output_dir / TRAINER_LOG).poll()
    state = read_json(output_dir / TRAINER_STATE)
    if isinstance(state, dict) and isinstance(state.get("log_history"), list):
        rows += [r for r in state["log_history"] if isinstance(r, dict)]
    return rows


def curve(output_dir: Path, key: str = "loss") -> list[tuple[int, float]]:
    """(step, value) points of a run's `loss` or `eval_loss`, for the report plots."""
    rows = TrainerLog(output_dir / TRAINER_LOG).poll()
    points = [
        (int(r["current_steps"]), float(r[key]))
        for r in rows
        if isinstance(r.get(key), int | float) and "current_steps" in r
    ]
    if points:
        return points
    state = read_json(output_dir / TRAINER_STATE) or {}
    return [
        (int(r["step"]), float(r[key]))
        for r in state.get("log_history", [])
        if isinstance(r, dict) and isinstance(r.get(key), int | float) and "step" in r
    ]


def steps_reached(output_dir: Path) -> tuple[int | None, int | None]:
    """The last step a run logged and its total, from trainer_log.jsonl."""
    rows = TrainerLog(output_dir / TRAINER_LOG).poll()
    steps = [r["current_steps"] for r in rows if isinstance(r.get("current_steps"), int)]
    totals = [r["total_steps"] for r in rows if isinstance(r.get("total_steps"), int)]
    return (max(steps) if steps else None), (totals[-1] if totals else None)


def read_metric(output_dir: Path, name: str) -> tuple[float | None, list[str]]:
    """The metric from all_results.json, the run record (`measured_peak_gib`, `runtime_s`, ...) or the last
    value in trainer_state.json; plus the keys seen."""
    seen: list[str] = []
    for source in ("all_results.json", RECORD_NAME):
        results = read_json(output_dir / source)
        if isinstance(results, dict):
            seen += sorted(
                k for k, v in results.items() if isinstance(v, int | float) and not isinstance(v, bool)
            )
            value = results.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value), seen
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


def _metric_value(metric: MetricSpec, job: TrialJob) -> tuple[float | None, str]:
    if metric.command is not None:
        return run_metric_command(metric.command, job)
    value, seen = read_metric(job.output_dir, metric.name)
    if value is not None:
        return value, ""
    return None, (
        f"metric `{metric.name}` is not in all_results.json, the run record or trainer_state.json"
        + (f" (keys: {', '.join(seen)})" if seen else "")
        + "; set `metric.name` to one of them, or enable evaluation (val_size, eval_strategy)"
    )


# --- the trial's process, through the one watcher ---

Executor = Callable[[TrialJob, TrialWatch, Callable[[], str | None]], Outcome]


def execute(
    job: TrialJob,
    spec: SweepSpec,
    launcher: Launcher,
    watch: TrialWatch,
    should_stop: Callable[[], str | None],
    *,
    poll_s: float = 1.0,
    on_start: Callable[[int], None] | None = None,
) -> Outcome:
    """Run one trial to its end, stopping it early when it diverges, when the pruner or early stopping says
    so, or when the sweep stops (`should_stop` returns why)."""
    log_path = job.trial_dir / LOG_FILE
    log_path.unlink(missing_ok=True)
    try:
        result = run_child(
            launcher(job),
            output_dir=job.output_dir,
            log_path=log_path,
            divergence_factor=spec.divergence_factor,
            on_progress=watch.observe,
            on_start=on_start,
            should_stop=lambda: should_stop() or watch.stop_reason(),
            poll_s=poll_s,
            grace_s=5.0,
        )
    except LfTunerError as exc:
        return Outcome("failed", reason=exc.message)
    code, runtime = result.returncode, result.runtime_s
    if result.stopped_for and watch.stop_reason() == result.stopped_for:
        return watch.outcome(runtime, code)
    if result.stopped_for:
        return Outcome("interrupted", runtime_s=runtime, reason=result.stopped_for, exit_code=code)
    if result.diverged and code != 0:
        steps, total = steps_reached(job.output_dir)
        return Outcome(
            "diverged",
            runtime_s=runtime,
            reason=f"stopped by the sweep: {result.diverged}",
            exit_code=code,
            steps=steps,
            total_steps=total,
        )
    return finish(job, spec, code, runtime, oom=result.oom)


def finish(job: TrialJob, spec: SweepSpec, code: int, runtime: float, *, oom: bool = False) -> Outcome:
    """Classify a trial whose process has exited and read its metrics."""
    record = read_json(job.output_dir / RECORD_NAME)
    steps, total = steps_reached(job.output_dir)
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
    ended = functools.partial(Outcome, runtime_s=runtime, exit_code=code, steps=steps, total_steps=total)
    if status != "completed":
        return ended(status, reason=reason or f"exit code {code}")
    values: list[float] = []
    for metric in spec.objectives:
        value, reason = _metric_value(metric, job)
        if value is None or not math.isfinite(value):
            return ended(
                "failed" if value is None else "diverged", reason=reason or f"{metric.name} is {value}"
            )
        values.append(value)
    return ended("completed", values=values)


def adoptable(job: TrialJob, spec: SweepSpec, started_at: float | None = None) -> Outcome | None:
    """The result of a trial that ended while its sweep was not watching: its run record's verdict (unless it
    was interrupted), or completed when all_results.json holds the metrics. None when it did not finish."""
    record = read_json(job.output_dir / RECORD_NAME)
    results = job.output_dir / "all_results.json"
    if isinstance(record, dict):
        if record.get("status") not in STATUSES or record.get("status") == "interrupted":
            return None
        ended = job.output_dir / RECORD_NAME
    elif isinstance(read_json(results), dict):
        ended = results
    else:
        return None
    runtime = max(0.0, ended.stat().st_mtime - started_at) if started_at else 0.0
    code = 0 if not isinstance(record, dict) else int(record.get("exit_code") or 0)
    outcome = finish(job, spec, code, runtime)
    return None if outcome.status == "failed" and not isinstance(record, dict) else outcome
