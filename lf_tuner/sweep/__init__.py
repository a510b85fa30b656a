"""Hyperparameter sweeps over real runs: spec, search space, optuna studies (one per stage), trials, imports,
storage and the report."""

from lf_tuner.sweep.spec import SpecError, SweepSpec, load_spec, parse_spec

__all__ = ["SpecError", "SweepSpec", "load_spec", "parse_spec"]
