"""Hyperparameter sweeps over real runs: spec, search space, optuna studies (one per stage), trials, imports,
storage and the report.

The names below load their module on first use (`lf_tuner.lazy`): the spec needs pydantic, the report optuna.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lf_tuner.lazy import lazy_exports

if TYPE_CHECKING:
    from lf_tuner.sweep.engine import Summary, Sweep, SweepInterrupted, load_base_config, open_sweep
    from lf_tuner.sweep.expr import ExprError, eval_expr, expr_names
    from lf_tuner.sweep.importing import ImportedRow, read_rows
    from lf_tuner.sweep.report import (
        SweepResults,
        best_config,
        load_results,
        to_csv,
        to_json,
        to_markdown,
        write_plots,
    )
    from lf_tuner.sweep.slots import gpu_slots
    from lf_tuner.sweep.slurm import render_array_script
    from lf_tuner.sweep.space import Space, format_trials, preview, preview_heading, resolve
    from lf_tuner.sweep.spec import SpecError, SweepSpec, load_spec, parse_spec
    from lf_tuner.sweep.storage import STUDY_NAME
    from lf_tuner.sweep.trial import LAUNCHERS, Outcome, TrialJob, TrialWatch

__all__ = [
    "Summary",
    "Sweep",
    "SweepInterrupted",
    "load_base_config",
    "open_sweep",
    "ExprError",
    "eval_expr",
    "expr_names",
    "ImportedRow",
    "read_rows",
    "SweepResults",
    "best_config",
    "load_results",
    "to_csv",
    "to_json",
    "to_markdown",
    "write_plots",
    "gpu_slots",
    "render_array_script",
    "Space",
    "format_trials",
    "preview",
    "preview_heading",
    "resolve",
    "SpecError",
    "SweepSpec",
    "load_spec",
    "parse_spec",
    "STUDY_NAME",
    "LAUNCHERS",
    "Outcome",
    "TrialJob",
    "TrialWatch",
]

if not TYPE_CHECKING:  # mypy reads the imports above; a module __getattr__ would make every name pass
    __getattr__ = lazy_exports(__name__, __file__)
