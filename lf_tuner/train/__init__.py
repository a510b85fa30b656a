"""Training runs: the GPUs, the llamafactory-cli command, preflight, the one process watcher (for `run` and every
sweep trial), OOM retries, run records and the runs index, Slurm scripts.

The names below load their module on first use (`lf_tuner.lazy`): the watcher needs psutil and the records
pydantic, which `lf-tuner --help` must not load; the statuses a run ends with (`runs --status` offers them) are
defined here for that reason. `preflight` is the module `run` calls step by step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from lf_tuner.lazy import lazy_exports

# How a run ends, in its record (the contract with `lf-tuner sweep`) and in the runs index
Status = Literal["completed", "failed", "oom", "interrupted", "diverged"]
STATUSES: tuple[str, ...] = ("completed", "failed", "oom", "interrupted", "diverged")

if TYPE_CHECKING:
    from lf_tuner.train.command import Command, build_command, write_config
    from lf_tuner.train.gpus import (
        GpuInfo,
        GpuSummary,
        ProcessGroupPeak,
        budgets,
        detect_gpus,
        fit_target,
        gpu_budgets,
        gpu_summary,
        named_gpus,
        select_gpus,
        smallest_gpu_gib,
    )
    from lf_tuner.train.preflight import Plan
    from lf_tuner.train.records import (
        RECORD_NAME,
        GpuRecord,
        IndexedRun,
        IndexUnavailable,
        RunRecord,
        add_to_index,
        collect_metrics,
        config_path,
        list_runs,
        peak_error,
        read_json,
        read_record,
        save_record,
    )
    from lf_tuner.train.runner import Finished, run_plan
    from lf_tuner.train.slurm import check_job_name, render_slurm_script
    from lf_tuner.train.watch import (
        LOG_NAME,
        TRAINER_LOG,
        TRAINER_STATE,
        ChildResult,
        Divergence,
        StopSignals,
        TrainerLog,
        kill_group,
        process_start,
        run_child,
    )

__all__ = [
    "Command",
    "build_command",
    "write_config",
    "GpuInfo",
    "GpuSummary",
    "ProcessGroupPeak",
    "budgets",
    "detect_gpus",
    "fit_target",
    "gpu_budgets",
    "gpu_summary",
    "named_gpus",
    "select_gpus",
    "smallest_gpu_gib",
    "Plan",
    "RECORD_NAME",
    "STATUSES",
    "Status",
    "GpuRecord",
    "IndexedRun",
    "IndexUnavailable",
    "RunRecord",
    "add_to_index",
    "collect_metrics",
    "config_path",
    "list_runs",
    "peak_error",
    "read_json",
    "read_record",
    "save_record",
    "Finished",
    "run_plan",
    "check_job_name",
    "render_slurm_script",
    "LOG_NAME",
    "TRAINER_LOG",
    "TRAINER_STATE",
    "ChildResult",
    "Divergence",
    "StopSignals",
    "TrainerLog",
    "kill_group",
    "process_start",
    "run_child",
]

if not TYPE_CHECKING:  # mypy reads the imports above; a module __getattr__ would make every name pass
    __getattr__ = lazy_exports(__name__, __file__)
