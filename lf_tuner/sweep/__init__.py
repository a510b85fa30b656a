"""Hyperparameter sweeps over real runs: spec, search space, optuna study, trials, report."""

from lf_tuner.sweep.spec import SpecError, SweepSpec, load_spec, parse_spec

__all__ = ["SpecError", "SweepSpec", "load_spec", "parse_spec"]
