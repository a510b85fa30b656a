"""One trial: its config file, the launch, the divergence watch and the result it leaves behind."""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lf_tuner.sweep.spec import SweepSpec

RECORD_FILE = "lf-tuner-run.json"
CONFIG_FILE = "train.yaml"
LOG_FILE = "launch.log"
STATUSES = ("completed", "failed", "oom", "diverged", "interrupted")
OOM_PATTERN = re.compile(
    r"torch\.OutOfMemoryError|CUDA out of memory|CUDA error: out of memory|CUBLAS_STATUS_ALLOC_FAILED|HIP out of memory"
)


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
    extra: dict[str, Any] = field(default_factory=dict)


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


# --- launchers: pure functions from a job to (argv, env); the seam between the sweep and `run` ---

Launcher = Callable[[TrialJob], tuple[list[str], dict[str, str]]]


def _pinned_env(job: TrialJob) -> dict[str, str]:
    env = dict(os.environ)
    env["CUDA_VISIBLE_DEVICES"] = "" if job.devices == "cpu" else job.devices
    return env


def run_launcher(job: TrialJob) -> tuple[list[str], dict[str, str]]:
    """Through `lf-tuner run` (preflight, OOM retry, run record), which sees only the trial's GPUs."""
    gpus = "cpu" if job.devices == "cpu" else "all"
    argv = [
        sys.executable,
        "-m",
        "lf_tuner",
        "run",
        str(job.config_path),
        "--gpus",
        gpus,
        "--retry-oom",
        "1",
        "--yes",
    ]
    return argv, _pinned_env(job)


def llamafactory_launcher(job: TrialJob) -> tuple[list[str], dict[str, str]]:
    """Straight to `llamafactory-cli train`, pinned to the trial's GPUs (no preflight, no OOM retry)."""
    return ["llamafactory-cli", "train", str(job.config_path)], _pinned_env(job)


LAUNCHERS: dict[str, Launcher] = {"run": run_launcher, "llamafactory": llamafactory_launcher}


# --- reading what a run leaves behind ---


def _bad(x: Any) -> bool:
    return isinstance(x, float) and not math.isfinite(x)


def divergence(rows: Iterable[dict[str, Any]], factor: float, baseline: float | None = None) -> str | None:
    """Why a run diverged (NaN/inf loss or grad_norm, or loss above factor x its first value), or None."""
    for row in rows:
        step = row.get("current_steps", row.get("step", "?"))
        for key in ("loss", "grad_norm", "eval_loss"):
            if _bad(row.get(key)):
                return f"{key} is {row[key]} at step {step}"
        loss = row.get("loss")
        if isinstance(loss, int | float):
            if baseline is None:
                baseline = float(loss)
            elif baseline > 0 and loss > factor * baseline:
                return f"loss {loss:.4g} at step {step} is above {factor:g} x its first value {baseline:.4g}"
    return None


def first_loss(rows: Iterable[dict[str, Any]]) -> float | None:
    for row in rows:
        loss = row.get("loss")
        if isinstance(loss, int | float) and not _bad(loss):
            return float(loss)
    return None


class JsonlTail:
    """Reads the complete lines appended to a JSON-lines file since the last call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.first_loss: float | None = None

    def read(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
        except OSError:
            return []
        end = chunk.rfind(b"\n") + 1
        self.offset += end
        rows = []
        for line in chunk[:end].splitlines():
            with contextlib.suppress(ValueError):
                row = json.loads(line)
                if isinstance(row, dict):
                    rows.append(row)
        return rows


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def log_rows(output_dir: Path) -> list[dict[str, Any]]:
    """Logged rows of a run: trainer_log.jsonl (LLaMA-Factory) and trainer_state.json log_history (HF)."""
    rows = JsonlTail(output_dir / "trainer_log.jsonl").read()
    state = read_json(output_dir / "trainer_state.json")
    if isinstance(state, dict) and isinstance(state.get("log_history"), list):
        rows += [r for r in state["log_history"] if isinstance(r, dict)]
    return rows


def loss_curve(output_dir: Path) -> list[tuple[int, float]]:
    """(step, train loss) points of a run, for the report plot."""
    rows = JsonlTail(output_dir / "trainer_log.jsonl").read()
    points = [
        (int(r["current_steps"]), float(r["loss"])) for r in rows if "loss" in r and "current_steps" in r
    ]
    if points:
        return points
    state = read_json(output_dir / "trainer_state.json") or {}
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
    state = read_json(output_dir / "trainer_state.json")
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


# --- processes ---


def process_start(pid: int) -> str | None:
    """The start time of a live process (tells a reused pid apart), or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return "?"
        return "?"


def kill_group(pid: int, grace_s: float = 5.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM a trial's process group, then SIGKILL what is left after grace_s."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        if proc is None and process_start(pid) is None:
            break
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    if proc is not None:
        proc.wait()


def _status_from_exit(code: int, log_path: Path) -> tuple[str, str]:
    try:
        tail = log_path.read_text(errors="replace")[-20000:]
    except OSError:
        tail = ""
    if OOM_PATTERN.search(tail):
        return "oom", f"out of GPU memory (exit code {code}); see {log_path}"
    return "failed", f"exit code {code}; see {log_path}"


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
    argv, env = launcher(job)
    started = time.monotonic()
    tail = JsonlTail(job.output_dir / "trainer_log.jsonl")
    stopped_for = ""
    with (job.trial_dir / LOG_FILE).open("wb") as log:
        try:
            proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        except OSError as exc:
            return Outcome("failed", reason=f"cannot start `{argv[0]}`: {exc.strerror}")
        if on_start is not None:
            on_start(proc.pid)
        while proc.poll() is None:
            if stop.wait(poll_s):
                stopped_for = "interrupted"
                kill_group(proc.pid, proc=proc)
                break
            rows = tail.read()
            if tail.first_loss is None:
                tail.first_loss = first_loss(rows)
            why = divergence(rows, spec.divergence_factor, tail.first_loss)
            if why:
                stopped_for = why
                kill_group(proc.pid, proc=proc)
                break
    runtime = time.monotonic() - started
    code = proc.returncode
    if stopped_for == "interrupted":
        return Outcome("interrupted", runtime_s=runtime, reason="the sweep stopped", exit_code=code)
    if stopped_for:
        return Outcome(
            "diverged", runtime_s=runtime, reason=f"stopped by the sweep: {stopped_for}", exit_code=code
        )
    return finish(job, spec, code, runtime)


def finish(job: TrialJob, spec: SweepSpec, code: int, runtime: float) -> Outcome:
    """Classify a trial whose process has exited and read its metric."""
    record = read_json(job.output_dir / RECORD_FILE)
    if isinstance(record, dict) and record.get("status") in STATUSES:
        status = str(record["status"])
        reason = str(record.get("reason") or record.get("message") or "")
        runtime = float(record.get("runtime_s") or runtime)
        if status == "interrupted":  # the run was stopped from outside the sweep: final, not re-queued
            status, reason = "failed", reason or "the run was interrupted"
    elif code == 0:
        status, reason = "completed", ""
    else:
        status, reason = _status_from_exit(code, job.trial_dir / LOG_FILE)
    if status == "completed":
        why = divergence(log_rows(job.output_dir), spec.divergence_factor)
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
