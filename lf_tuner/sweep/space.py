"""Search spaces: grid points in a stable order, optuna distributions, samplers and pruners, stage ranges
resolved around the best trial so far, and tied parameters."""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lf_tuner.errors import LfTunerError
from lf_tuner.sweep.expr import eval_expr
from lf_tuner.sweep.spec import PRUNER_CLASSES, SAMPLER_CLASSES, ParamSpec, SweepSpec, tied_order

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.pruners import BasePruner
    from optuna.samplers import BaseSampler
    from optuna.study import StudyDirection


@dataclass(frozen=True)
class Space:
    """One stage's parameters with nothing left relative: what its study samples."""

    parameters: dict[str, ParamSpec]

    @property
    def sampled(self) -> list[str]:
        return [name for name, p in self.parameters.items() if p.kind != "expr"]

    def with_tied(self, params: dict[str, Any]) -> dict[str, Any]:
        """The sampled values plus every tied parameter, in spec order."""
        values = dict(params)
        for name in tied_order(self.parameters):
            expr = self.parameters[name].expr
            assert expr is not None
            values[name] = eval_expr(expr, values)
        return {name: values[name] for name in self.parameters}

    def grid_size(self) -> int:
        return math.prod(len(self.parameters[n].values or []) for n in self.sampled)

    def grid_points(self) -> list[dict[str, Any]]:
        """Every grid point, the first parameter varying slowest (like nested loops in spec order)."""
        names = self.sampled
        lists = [self.parameters[n].values or [] for n in names]
        return [self.with_tied(dict(zip(names, combo, strict=True))) for combo in itertools.product(*lists)]

    def distributions(self) -> dict[str, BaseDistribution]:
        """The optuna distribution of every sampled parameter."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        out: dict[str, BaseDistribution] = {}
        for name in self.sampled:
            p = self.parameters[name]
            if p.values is not None:
                out[name] = CategoricalDistribution(p.values)
            elif p.distribution == "int":
                assert p.min is not None and p.max is not None
                out[name] = IntDistribution(int(p.min), int(p.max))
            else:
                assert p.min is not None and p.max is not None
                out[name] = FloatDistribution(p.min, p.max, log=p.distribution == "log_uniform")
        return out

    def as_json(self) -> dict[str, Any]:
        return {n: p.model_dump(exclude_none=True) for n, p in self.parameters.items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Space:
        return cls({n: ParamSpec.model_validate(p) for n, p in data.items()})


def _neat(x: float) -> float:
    """A factor times a best value, without the binary noise (2.0000000000000003e-4 -> 2e-4)."""
    return float(f"{x:.6g}")


def resolve(parameters: dict[str, ParamSpec], best: dict[str, Any] | None, stage: str) -> Space:
    """Turn `around_best`, `values_around_best` and `at_best` into ranges and lists around the best values."""
    out: dict[str, ParamSpec] = {}
    for name, p in parameters.items():
        if not p.is_relative:
            out[name] = p
            continue
        if best is None or name not in best:
            raise LfTunerError(
                f"stage `{stage}`: `{name}` is set relative to the best trial, but no trial has completed yet; "
                "run an earlier stage first or `--import` earlier results"
            )
        b = best[name]
        if isinstance(b, bool) or not isinstance(b, int | float):
            if p.at_best:
                out[name] = ParamSpec(values=[b])
                continue
            raise LfTunerError(f"stage `{stage}`: `{name}` around the best needs a number; the best is {b!r}")
        whole = isinstance(b, int)
        if p.at_best:
            out[name] = ParamSpec(values=[b])
        elif p.values_around_best is not None:
            raw = [b * f for f in p.values_around_best]
            values = [max(1, round(v)) if whole else _neat(v) for v in raw]
            out[name] = ParamSpec(values=list(dict.fromkeys(values)))
        else:
            assert p.around_best is not None
            if b <= 0:
                raise LfTunerError(f"stage `{stage}`: `around_best` needs a positive best `{name}`, got {b}")
            lo, hi = b / p.around_best, b * p.around_best
            if whole:
                low, high = max(1, math.floor(lo)), max(1, math.ceil(hi))
                out[name] = (
                    ParamSpec(distribution="int", min=low, max=high) if low < high else ParamSpec(values=[b])
                )
            else:
                out[name] = ParamSpec(distribution="log_uniform", min=_neat(lo), max=_neat(hi))
    return Space(out)


def make_sampler(method: str, args: dict[str, Any], seed: int | None) -> BaseSampler:
    """optuna's sampler for the method, with the spec's arguments (grid points are queued, so it samples
    only as a fallback)."""
    import optuna

    if method == "grid":
        return optuna.samplers.RandomSampler(seed=seed)
    cls = getattr(optuna.samplers, SAMPLER_CLASSES[method])
    kwargs = dict(args)
    if method == "sobol":
        kwargs.setdefault("qmc_type", "sobol")
        kwargs.setdefault("scramble", True)  # else every seed gives the same sequence
    if method in ("sobol", "cmaes"):
        kwargs.setdefault("warn_independent_sampling", False)  # listed values go to an independent sampler
    from optuna.exceptions import ExperimentalWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)  # QMCSampler is marked experimental
            sampler: BaseSampler = cls(seed=seed, **kwargs)
    except ImportError as exc:
        extra = {"sobol": "scipy", "cmaes": "cmaes"}.get(method, exc.name or "")
        raise LfTunerError(
            f"method: {method} needs the `{extra}` package: pip install {extra} (or `pip install 'lf-tuner[search]'`)"
        ) from None
    return sampler


def check_sampler_available(method: str) -> None:
    """Fail before any trial when the method's optional package is missing."""
    import importlib.util

    needs = {"sobol": "scipy", "cmaes": "cmaes"}.get(method)
    if needs and importlib.util.find_spec(needs) is None:
        raise LfTunerError(
            f"method: {method} needs the `{needs}` package: pip install {needs} (or `pip install 'lf-tuner[search]'`)"
        )


def make_pruner(spec: SweepSpec) -> BasePruner:
    import optuna

    if spec.pruner is None:
        return optuna.pruners.NopPruner()
    cls = getattr(optuna.pruners, PRUNER_CLASSES[spec.pruner.type])
    pruner: BasePruner = cls(**spec.pruner.args)
    return pruner


def study_directions(spec: SweepSpec) -> list[StudyDirection]:
    """optuna's directions, one per metric."""
    from optuna.study import StudyDirection

    return [StudyDirection.MINIMIZE if g == "minimize" else StudyDirection.MAXIMIZE for g in spec.directions]


def first_space(spec: SweepSpec) -> Space | None:
    """The first stage's space, or None when it is relative to the best (known only once the sweep runs)."""
    stage = spec.stage_list()[0]
    params = spec.stage_parameters(stage)
    if any(p.is_relative for p in params.values()):
        return None
    return Space(params)


def preview(spec: SweepSpec, count: int | None = None) -> list[dict[str, Any]]:
    """The trials a fresh sweep starts with: every grid point (up to max_trials), or the first sampled ones."""
    space = first_space(spec)
    if space is None:
        return []
    stage = spec.stage_list()[0]
    method = spec.stage_method(stage)
    if method == "grid":
        points = space.grid_points()
        return points[: stage.max_trials] if stage.max_trials else points
    import optuna

    assert stage.max_trials is not None
    n = min(stage.max_trials, count or 10)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        sampler=make_sampler(method, spec.stage_sampler_args(stage), spec.seed),
        directions=study_directions(spec),
    )
    dists = space.distributions()
    return [space.with_tied(study.ask(dists).params) for _ in range(n)]


def preview_heading(spec: SweepSpec, shown: int) -> str:
    """The line above `sweep --dry-run`'s table: the first stage's method and how many of its trials it lists."""
    stage = spec.stage_list()[0]
    method = spec.stage_method(stage)
    space = first_space(spec)
    if space is None:
        return f"{method}: the first stage is set around the best of imported runs; nothing to list before it starts"
    total = space.grid_size() if method == "grid" else stage.max_trials
    what = "grid points" if method == "grid" else f"trials, the first sampled (seed {spec.seed})"
    prefix = "" if not spec.stages else f"stage {stage.name}: "
    return f"{prefix}{method}: {shown} of {total} {what}"


def format_trials(params: list[dict[str, Any]]) -> str:
    """A plain aligned table: one row per trial, one column per parameter."""
    names = list(params[0]) if params else []
    rows = [["trial", *names]] + [
        [str(i), *(f"{p[n]:.4g}" if isinstance(p[n], float) else str(p[n]) for n in names)]
        for i, p in enumerate(params)
    ]
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )
