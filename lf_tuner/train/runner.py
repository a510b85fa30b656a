"""A run: the child started through the watcher, restarted with a smaller footprint after out-of-memory."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NamedTuple, cast

from lf_tuner.train import Status
from lf_tuner.train.command import Command
from lf_tuner.train.gpus import gpu_summary
from lf_tuner.train.preflight import Plan
from lf_tuner.train.records import (
    GpuRecord,
    IndexUnavailable,
    Retry,
    RunRecord,
    collect_metrics,
    config_hash,
    now_iso,
    save_record,
)
from lf_tuner.train.watch import TRAINER_LOG, ChildResult, Progress, StopSignals, run_child, signal_name

if TYPE_CHECKING:
    from lf_tuner.config import TrainConfig


class OomChange(NamedTuple):
    """What a retry after out-of-memory changes: in words, and as config keys."""

    description: str
    overrides: TrainConfig


def next_oom_change(cfg: Mapping[str, Any]) -> OomChange | None:
    """What to change after an out-of-memory failure: halve the micro-batch (same effective batch), then Liger."""
    batch = int(cfg.get("per_device_train_batch_size", 8))  # the Hugging Face default
    accum = int(cfg.get("gradient_accumulation_steps", 1))
    if batch > 1:
        new_batch = batch // 2
        new_accum = -(-batch * accum // new_batch)
        return OomChange(
            f"per_device_train_batch_size {batch} -> {new_batch}, gradient_accumulation_steps {accum} -> "
            f"{new_accum} (effective batch {batch * accum} -> {new_batch * new_accum})",
            {"per_device_train_batch_size": new_batch, "gradient_accumulation_steps": new_accum},
        )
    if not cfg.get("enable_liger_kernel"):
        return OomChange(
            "enable_liger_kernel false -> true (fused cross-entropy, no full logits; needs liger-kernel)",
            {"enable_liger_kernel": True},
        )
    return None


def child_status(result: ChildResult) -> tuple[str, int]:
    """(status, exit code) for the run record and for lf-tuner's own exit."""
    code = result.returncode if result.returncode >= 0 else 128 - result.returncode
    if result.interrupted_by is not None:
        return "interrupted", 128 + result.interrupted_by
    if result.diverged:
        return "diverged", code or 1
    if result.returncode == 0:
        return "completed", 0
    if result.oom:
        return "oom", code
    return "failed", code


@dataclass
class Attempt:
    """One start of the child: the config it ran with and how it ended."""

    cfg: TrainConfig
    result: ChildResult
    status: str
    exit_code: int


def run_with_retries(
    cfg: TrainConfig,
    command: Command,
    *,
    write_config: Callable[[TrainConfig], None],
    output_dir: Path,
    log_path: Path,
    retry_oom: int = 0,
    stop_on_nan: bool = True,
    on_progress: Progress | None = None,
    on_retry: Callable[[int, str], None] | None = None,
    echo: IO[str] | None = None,
    signals: StopSignals | None = None,
) -> tuple[list[Attempt], list[OomChange]]:
    """Run the child; after an out-of-memory failure rewrite the config with the next change and run again.

    Returns every attempt and, per retry, (description, overrides). `signals` (entered by the caller) stops the
    run and any retry when lf-tuner is told to stop.
    """
    attempts: list[Attempt] = []
    changes: list[OomChange] = []
    current = dict(cfg)
    while True:
        if current.get("overwrite_output_dir"):
            (output_dir / TRAINER_LOG).unlink(missing_ok=True)  # LLaMA-Factory deletes it too, but later
        result = run_child(
            command,
            output_dir=output_dir,
            log_path=log_path,
            stop_on_nan=stop_on_nan,
            on_progress=on_progress,
            echo=echo,
            signals=signals,
        )
        status, code = child_status(result)
        attempts.append(Attempt(cfg=current, result=result, status=status, exit_code=code))
        if status != "oom" or len(changes) >= retry_oom:
            return attempts, changes
        if signals is not None and signals.received is not None:
            return attempts, changes  # told to stop: no retry
        change = next_oom_change(current)
        if change is None:
            return attempts, changes
        description, overrides = change
        changes.append(change)
        if on_retry is not None:
            on_retry(len(changes), description)
        current = {**current, **overrides}  # overwrite_output_dir stays: fresh runs restart, --resume resumes
        write_config(current)


def failure_reason(attempt: Attempt) -> str | None:
    """Why a run did not complete, with what to try next; None when it completed."""
    result = attempt.result
    if attempt.status == "interrupted":
        signum = result.interrupted_by or 0
        return f"stopped by {signal_name(signum)} (signal {signum})"
    if attempt.status == "diverged":
        return f"{result.diverged}; lower learning_rate or check the data"
    if attempt.status == "oom":
        return "out of GPU memory; try --retry-oom 2, --fit, or a smaller cutoff_len / batch"
    if attempt.status == "failed":
        return f"llamafactory-cli exited with {attempt.exit_code}"
    return None


def build_record(
    plan: Plan,
    attempts: Sequence[Attempt],
    changes: Sequence[OomChange],
    *,
    log_path: Path,
    started_at: str,
) -> RunRecord:
    """The record of a finished run: its plan, its attempts and OOM changes (`launch.run_with_retries`), and
    the figures in the files it left. The hash is of the config the last attempt ran with."""
    last = attempts[-1]
    metrics = collect_metrics(
        plan.output_dir,
        last.result.trainer_log,
        on_gpu=bool(plan.gpus),
        nvml_peak_bytes=max((a.result.nvml_peak_bytes or 0 for a in attempts), default=0) or None,
    )
    return RunRecord(
        status=cast(Status, last.status),
        exit_code=last.exit_code,
        reason=failure_reason(last),
        config_hash=config_hash(last.cfg),
        config_path=str(plan.config_path.absolute()),
        output_dir=str(plan.output_dir.absolute()),
        model=str(plan.cfg.get("model_name_or_path")),
        argv=plan.command.argv,
        env=plan.command.env,
        gpus=[GpuRecord(**gpu_summary(g)) for g in plan.gpus],
        nnodes=plan.nnodes,
        node_rank=plan.node_rank,
        estimated_peak_gib=plan.estimated_gib,
        runtime_s=round(sum(a.result.runtime_s for a in attempts), 2),
        started_at=started_at,
        ended_at=now_iso(),
        retries=[Retry(attempt=i + 2, description=d, overrides=ov) for i, (d, ov) in enumerate(changes)],
        log_path=str(log_path.absolute()),
        **asdict(metrics),
    )


@dataclass
class Finished:
    """A run that ended and was recorded: its record, its last attempt, and why it is not in the runs index
    (None when it is; the record in output_dir is kept either way)."""

    record: RunRecord
    last: Attempt
    index_problem: str | None


def run_plan(
    plan: Plan,
    *,
    retry_oom: int = 0,
    stop_on_nan: bool = True,
    overwrite: bool = False,
    on_progress: Progress | None = None,
    on_retry: Callable[[int, str], None] | None = None,
    echo: IO[str] | None = None,
) -> Finished:
    """Start the planned child (with OOM retries), watch it and record it in output_dir and the runs index.

    From the start of the child to the record written, SIGINT, SIGTERM, SIGHUP and SIGQUIT stop the training
    tree and the run is recorded as interrupted (`watch.StopSignals`).
    """
    if overwrite:
        plan.record_path.unlink(missing_ok=True)
    started = now_iso()
    index_problem: str | None = None
    with StopSignals() as signals:
        attempts, changes = run_with_retries(
            plan.cfg,
            plan.command,
            write_config=plan.write_config,
            output_dir=plan.output_dir,
            log_path=plan.log_path,
            retry_oom=retry_oom,
            stop_on_nan=stop_on_nan,
            on_progress=on_progress,
            on_retry=on_retry,
            echo=echo,
            signals=signals,
        )
        record = build_record(plan, attempts, changes, log_path=plan.log_path, started_at=started)
        try:
            save_record(record, plan.record_path)
        except IndexUnavailable as exc:
            index_problem = exc.message
    return Finished(record, attempts[-1], index_problem)
