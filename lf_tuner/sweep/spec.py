"""The sweep spec: a strict schema, loaded from YAML, every problem reported as one `Problem(key, message)`."""

from __future__ import annotations

import hashlib
import inspect
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator

from lf_tuner.errors import Problem, ProblemsError, did_you_mean
from lf_tuner.sweep.expr import ExprError, expr_names

Scalar = str | int | float | bool
Method = Literal["grid", "random", "sobol", "tpe", "cmaes", "nsga2"]
METHODS: tuple[str, ...] = ("grid", "random", "sobol", "tpe", "cmaes", "nsga2")
PrunerType = Literal["median", "successive_halving", "hyperband", "none"]

# keys the sweep sets itself in every trial config; a parameter may not take them over
RESERVED_KEYS = ("output_dir",)
# what LLaMA-Factory writes to trainer_log.jsonl while it trains, and which way is better
INTERMEDIATE_GOALS = {
    "eval_loss": "minimize",
    "loss": "minimize",
    "predict_loss": "minimize",
    "accuracy": "maximize",
    "reward": "maximize",
}
# optuna's classes behind the spec's names (imported only when a sweep runs)
SAMPLER_CLASSES = {
    "random": "RandomSampler",
    "sobol": "QMCSampler",
    "tpe": "TPESampler",
    "cmaes": "CmaEsSampler",
    "nsga2": "NSGAIISampler",
}
PRUNER_CLASSES = {
    "median": "MedianPruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "hyperband": "HyperbandPruner",
    "none": "NopPruner",
}
# sampler arguments the spec sets elsewhere or that are not plain data
_SAMPLER_ARGS_SET_BY_SPEC = {"seed", "qmc_type"}


class SpecError(ProblemsError):
    """A sweep spec that cannot be used: one `key: message` line per problem."""

    def __init__(self, problems: list[Problem], source: str = "spec") -> None:
        super().__init__(problems, what=source)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ParamSpec(_Strict):
    """One swept key: a list of values, a distribution, an expression, or (in a stage) a range around the best."""

    values: list[Scalar] | None = None
    distribution: Literal["uniform", "log_uniform", "int", "values"] | None = None
    min: float | None = None
    max: float | None = None
    expr: str | None = None
    around_best: float | None = Field(default=None, gt=1.0)
    values_around_best: list[float] | None = None
    at_best: bool | None = None

    @property
    def kind(self) -> str:
        """`values`, `uniform`, `log_uniform`, `int`, `expr` or `relative` (resolved when its stage starts)."""
        if self.expr is not None:
            return "expr"
        if self.is_relative:
            return "relative"
        if self.values is not None:
            return "values"
        return self.distribution or "values"

    @property
    def is_relative(self) -> bool:
        return self.around_best is not None or self.values_around_best is not None or bool(self.at_best)


class MetricSpec(_Strict):
    """What a trial is judged by: a key of all_results.json or the run record, or the number a command prints."""

    name: str
    goal: Literal["minimize", "maximize"] = "minimize"
    command: str | list[str] | None = None


class BudgetSpec(_Strict):
    """Caps applied to every trial, for quick rounds on part of the data."""

    max_steps: PositiveInt | None = None
    max_samples: PositiveInt | None = None


class RenderSpec(_Strict):
    """Options for `render_train_config` when the base is a preset."""

    model: str
    dataset: str
    dataset_dir: str | None = None
    template: str | None = None
    method: str = "lora"
    cutoff: PositiveInt | None = None
    data_size: PositiveInt | None = None
    gpu_memory_gib: float | None = None


class PrunerSpec(BaseModel):
    """`pruner: median` or `pruner: {type: hyperband, min_resource: 10, ...}`: the rest are optuna's arguments."""

    model_config = ConfigDict(extra="allow")

    type: PrunerType

    @property
    def args(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class EarlyStoppingSpec(_Strict):
    """Stop a trial whose intermediate value has not improved by min_delta for `patience` evaluations."""

    patience: PositiveInt
    min_delta: float = Field(default=0.0, ge=0.0)


class StageSpec(_Strict):
    """One round of a staged sweep: its own study, method, budget and (partial) space."""

    name: str
    method: Method | None = None
    max_trials: PositiveInt | None = None
    sampler: dict[str, Any] | None = None
    parameters: dict[str, ParamSpec] = Field(default_factory=dict)


class SweepSpec(_Strict):
    """A whole sweep spec file."""

    base: str | None = None
    preset: str | None = None
    render: RenderSpec | None = None
    overrides: list[str] = Field(default_factory=list)
    method: Method
    sampler: dict[str, Any] = Field(default_factory=dict)
    metric: MetricSpec | None = None
    metrics: list[MetricSpec] | None = None
    max_trials: PositiveInt | None = None
    budget: BudgetSpec | None = None
    gpus_per_trial: PositiveInt = 1
    divergence_factor: float = Field(default=3.0, gt=1.0)
    pruner: PrunerSpec | None = None
    early_stopping: EarlyStoppingSpec | None = None
    intermediate: str = "eval_loss"
    seed: int = 0
    parameters: dict[str, ParamSpec]
    stages: list[StageSpec] | None = None

    @field_validator("pruner", mode="before")
    @classmethod
    def _pruner_name(cls, value: Any) -> Any:
        return {"type": value} if isinstance(value, str) else value

    @property
    def objectives(self) -> list[MetricSpec]:
        """The metric, or every metric of a multi-objective spec."""
        if self.metrics:
            return list(self.metrics)
        return [self.metric] if self.metric is not None else []

    @property
    def multi(self) -> bool:
        return len(self.objectives) > 1

    @property
    def directions(self) -> list[str]:
        return [m.goal for m in self.objectives]

    @property
    def prunes(self) -> bool:
        return self.pruner is not None and self.pruner.type != "none"

    @property
    def sampled(self) -> list[str]:
        """Names of the parameters the sampler chooses, in spec order."""
        return [name for name, p in self.parameters.items() if p.kind != "expr"]

    @property
    def tied(self) -> list[str]:
        """Names of the expression parameters, in an order where each comes after what it uses."""
        return tied_order(self.parameters)

    def stage_list(self) -> list[StageSpec]:
        """The stages in order; a spec without `stages:` is one stage named `main`."""
        if not self.stages:
            return [StageSpec(name="main", method=self.method, max_trials=self.max_trials)]
        return list(self.stages)

    def stage_method(self, stage: StageSpec) -> str:
        return stage.method or self.method

    def stage_parameters(self, stage: StageSpec) -> dict[str, ParamSpec]:
        """The stage's space: the first stage searches the top-level parameters (with its own entries over
        them); a later stage searches what it lists and keeps every other swept key at the best so far."""
        first = not self.stages or stage.name == self.stages[0].name
        keep = ParamSpec(at_best=True)
        return {
            name: stage.parameters.get(name) or (p if first or p.expr is not None else keep)
            for name, p in self.parameters.items()
        }

    def stage_sampler_args(self, stage: StageSpec) -> dict[str, Any]:
        return dict(stage.sampler if stage.sampler is not None else self.sampler)

    def fingerprint(self) -> str:
        """A hash of what defines the search (not budgets or how trials are watched, which may change)."""
        data = self.model_dump(
            mode="json", exclude={"max_trials", "pruner", "early_stopping", "divergence_factor"}
        )
        for stage in data.get("stages") or []:
            stage.pop("max_trials", None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- pydantic's errors as Problems

_NESTED: dict[str, type[BaseModel]] = {
    "metric": MetricSpec,
    "budget": BudgetSpec,
    "render": RenderSpec,
    "pruner": PrunerSpec,
    "early_stopping": EarlyStoppingSpec,
}
_KEYED: dict[str, type[BaseModel]] = {"parameters": ParamSpec, "metrics": MetricSpec, "stages": StageSpec}


def _model_at(loc: tuple[str | int, ...]) -> type[BaseModel]:
    """The model that holds the last key of `loc` (for "did you mean" among its fields)."""
    model: type[BaseModel] = SweepSpec
    i = 0
    while i < len(loc):
        key = str(loc[i])
        if key in _KEYED:
            model, i = _KEYED[key], i + 2  # skip the parameter name or list index
        elif key in _NESTED:
            model, i = _NESTED[key], i + 1
        else:
            i += 1
    return model


def _pydantic_problems(exc: ValidationError) -> list[Problem]:
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        path = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            key = str(loc[-1])
            fields = _model_at(loc[:-1]).model_fields
            hint = did_you_mean(key, fields) or f" allowed keys: {', '.join(fields)}."
            problems.append(Problem(path, f"unknown key `{key}`;{hint}"))
        elif err["type"] == "missing":
            problems.append(Problem(path, "required key is missing"))
        else:
            problems.append(Problem(path, f"{err['msg']} (got {err.get('input')!r})"))
    return problems


# --------------------------------------------------------------------------- checks pydantic cannot make


def tied_order(parameters: dict[str, ParamSpec]) -> list[str]:
    """Expression parameters sorted so that each comes after the parameters it uses."""
    pending = {n: expr_names(p.expr) for n, p in parameters.items() if p.expr is not None}
    done = {n for n, p in parameters.items() if p.expr is None}
    order: list[str] = []
    while pending:
        ready = [n for n, deps in pending.items() if deps <= done]
        if not ready:
            raise ValueError(f"expressions depend on each other in a cycle: {', '.join(sorted(pending))}")
        for n in ready:
            order.append(n)
            done.add(n)
            del pending[n]
    return order


def _check_param(where: str, p: ParamSpec, method: str) -> list[Problem]:
    relative = [p.around_best is not None, p.values_around_best is not None, bool(p.at_best)]
    forms = [p.values is not None, p.distribution not in (None, "values"), p.expr is not None, any(relative)]
    if sum(forms) != 1 or sum(relative) > 1:
        return [
            Problem(
                where,
                "give exactly one of `values: [...]`, `distribution: uniform|log_uniform|int` with `min`/`max`, "
                '`expr: "..."`, or in a stage `around_best: F` / `values_around_best: [...]` / `at_best: true`',
            )
        ]
    if p.distribution == "values" and p.values is None:
        return [Problem(where, "`distribution: values` needs a `values: [...]` list")]
    problems = []
    if p.values is not None or p.expr is not None or any(relative):
        if p.values is not None and not p.values:
            problems.append(Problem(f"{where}.values", "the list is empty; give at least one value"))
        if p.min is not None or p.max is not None:
            form = "values" if p.values is not None else ("expr" if p.expr is not None else "around_best")
            problems.append(Problem(where, f"`min`/`max` do not apply to `{form}`; remove them"))
        if p.values_around_best is not None and (
            not p.values_around_best or any(f <= 0 for f in p.values_around_best)
        ):
            problems.append(
                Problem(
                    f"{where}.values_around_best",
                    "give positive factors of the best value, e.g. [0.5, 1, 2]",
                )
            )
        if method == "grid" and p.around_best is not None:
            problems.append(
                Problem(where, "grid search takes only values; use `values_around_best: [0.5, 1, 2]`")
            )
        if p.at_best is False:
            problems.append(Problem(f"{where}.at_best", "only `at_best: true` means something; remove it"))
        return problems
    if method == "grid":
        problems.append(
            Problem(
                where,
                "grid search takes only `values: [...]` (or `expr`); list the values or use `method: random` / `tpe`",
            )
        )
    if p.min is None or p.max is None:
        problems.append(Problem(where, f"`distribution: {p.distribution}` needs both `min` and `max`"))
    elif p.min >= p.max:
        problems.append(Problem(where, f"`min` ({p.min:g}) must be below `max` ({p.max:g})"))
    elif p.distribution == "log_uniform" and p.min <= 0:
        problems.append(Problem(where, f"log_uniform needs `min` > 0 (got {p.min:g})"))
    elif p.distribution == "int" and (p.min != int(p.min) or p.max != int(p.max)):
        problems.append(Problem(where, "`distribution: int` needs whole numbers for `min` and `max`"))
    return problems


def _check_exprs(prefix: str, parameters: dict[str, ParamSpec]) -> list[Problem]:
    problems: list[Problem] = []
    for name, p in parameters.items():
        if p.expr is None:
            continue
        try:
            unknown = sorted(expr_names(p.expr) - set(parameters))
        except (SyntaxError, ExprError) as exc:
            reason = exc.msg if isinstance(exc, SyntaxError) else str(exc)
            problems.append(Problem(f"{prefix}{name}.expr", f"cannot read `{p.expr}`: {reason}"))
            continue
        others = [n for n in parameters if n != name]
        problems.extend(
            Problem(
                f"{prefix}{name}.expr",
                f"`{u}` is not a parameter of this sweep;"
                + (did_you_mean(u, others) or f" parameters: {', '.join(others)}."),
            )
            for u in unknown
        )
    if not problems:
        try:
            tied_order(parameters)
        except ValueError as exc:
            problems.append(Problem(prefix.rstrip(".") or "parameters", str(exc)))
    return problems


def _schema_values(p: ParamSpec) -> list[Any]:
    """The values of a parameter that can be checked before any trial: list entries and range ends."""
    if p.values is not None:
        return list(p.values)
    if p.min is not None and p.max is not None:
        if p.distribution == "int":
            return [int(p.min), int(p.max)]
        return [float(p.min), float(p.max)]
    return []


def check_llamafactory_keys(parameters: dict[str, ParamSpec], prefix: str = "parameters.") -> list[Problem]:
    """Each swept name is a LLaMA-Factory key and each value it can take has that key's type and range."""
    from lf_tuner.config import validate_config

    problems: list[Problem] = []
    for name, p in parameters.items():
        values = _schema_values(p) or [None]
        for value in values:
            found = [q for q in validate_config({name: value}) if q.key == name]
            if value is None:  # only the name is checked: its values come from an expression or the best
                found = [q for q in found if "unknown" in q.message]
            if found:
                problems.append(Problem(f"{prefix}{name}", found[0].message))
                break
    return problems


def _check_args(
    where: str, cls_name: str, module: str, args: dict[str, Any], taken: set[str]
) -> list[Problem]:
    """Arguments for an optuna class, checked against its signature (so a typo is an error)."""
    import importlib

    cls = getattr(importlib.import_module(module), cls_name)
    params = inspect.signature(cls).parameters
    allowed = [
        n for n, prm in params.items() if n not in taken and prm.kind is not inspect.Parameter.VAR_KEYWORD
    ]
    problems = []
    for key, value in args.items():
        if key in taken:
            problems.append(Problem(f"{where}.{key}", "set by the spec itself (`seed`, `method`); remove it"))
        elif key not in allowed:
            hint = did_you_mean(key, allowed) or f" {cls_name} takes: {', '.join(allowed) or 'no arguments'}."
            problems.append(Problem(f"{where}.{key}", f"not an argument of optuna's {cls_name};{hint}"))
        elif isinstance(value, dict | list) and key not in ("x0",):
            problems.append(
                Problem(f"{where}.{key}", "only plain values (numbers, strings, booleans) fit here")
            )
    return problems


def _check_method(where: str, method: str, sampler_args: dict[str, Any], spec: SweepSpec) -> list[Problem]:
    problems: list[Problem] = []
    if method == "grid" and sampler_args:
        problems.append(
            Problem(f"{where}sampler", "grid search takes no sampler arguments; remove `sampler`")
        )
    if method != "grid":
        problems += _check_args(
            f"{where}sampler",
            SAMPLER_CLASSES[method],
            "optuna.samplers",
            sampler_args,
            _SAMPLER_ARGS_SET_BY_SPEC,
        )
    if spec.multi and method in ("cmaes",):
        problems.append(
            Problem(f"{where}method", "CMA-ES optimises one metric; use nsga2, tpe or random for `metrics:`")
        )
    return problems


def check_spec(spec: SweepSpec) -> list[Problem]:
    """Problems pydantic cannot see: one form per parameter, tied names that exist, a base to start from."""
    problems: list[Problem] = []
    if (spec.base is None) == (spec.preset is None):
        problems.append(
            Problem(
                "base",
                "give either `base: train.yaml` or `preset: NAME` (with `render:`), not both or neither",
            )
        )
    if spec.preset is not None and spec.render is None:
        problems.append(Problem("render", "`preset:` needs `render: {model: ..., dataset: ...}`"))
    if spec.base is not None and spec.render is not None:
        problems.append(
            Problem("render", "`render:` applies only to `preset:`; set those keys in the base config")
        )
    if (spec.metric is None) == (spec.metrics is None):
        problems.append(
            Problem(
                "metric", "give `metric: {name: ..., goal: ...}` or, for several objectives, `metrics: [...]`"
            )
        )
    elif spec.metrics is not None and len(spec.metrics) < 2:
        problems.append(Problem("metrics", "list two or more metrics, or use `metric:` for one"))
    for i, m in enumerate(spec.objectives):
        if isinstance(m.command, list) and not m.command:
            where = "metric" if spec.metric is not None else f"metrics.{i}"
            problems.append(Problem(f"{where}.command", "the command is empty"))
    if not spec.parameters:
        problems.append(Problem("parameters", "nothing to sweep; add at least one parameter"))
    problems += _check_watch(spec)
    problems += _check_stages(spec)
    budget_keys = set(spec.budget.model_dump(exclude_none=True)) if spec.budget else set()
    spaces = [("parameters.", spec.parameters, spec.method)] + [
        (f"stages.{i}.parameters.", s.parameters, spec.stage_method(s))
        for i, s in enumerate(spec.stages or [])
    ]
    for prefix, parameters, method in spaces:
        for name, p in parameters.items():
            if name in RESERVED_KEYS:
                problems.append(
                    Problem(f"{prefix}{name}", f"the sweep sets `{name}` for every trial; remove it")
                )
                continue
            if name in budget_keys:
                problems.append(Problem(f"{prefix}{name}", "also set by `budget`; keep it in one place"))
            problems += _check_param(f"{prefix}{name}", p, method)
    problems += _check_exprs("parameters.", spec.parameters)
    for i, s in enumerate(spec.stages or []):
        if not problems and any(p.expr is not None for p in s.parameters.values()):
            problems += _check_exprs(f"stages.{i}.parameters.", spec.stage_parameters(s))
    if not problems:
        problems += check_llamafactory_keys(spec.parameters)
        for i, s in enumerate(spec.stages or []):
            problems += check_llamafactory_keys(s.parameters, f"stages.{i}.parameters.")
    return list(dict.fromkeys(problems))


def _check_watch(spec: SweepSpec) -> list[Problem]:
    problems: list[Problem] = []
    if spec.intermediate not in INTERMEDIATE_GOALS:
        problems.append(
            Problem(
                "intermediate",
                f"`{spec.intermediate}` is not written to trainer_log.jsonl while training; "
                f"use one of: {', '.join(INTERMEDIATE_GOALS)}",
            )
        )
    if spec.pruner is not None:
        problems += _check_args(
            "pruner", PRUNER_CLASSES[spec.pruner.type], "optuna.pruners", spec.pruner.args, set()
        )
        if spec.multi and spec.prunes:
            problems.append(Problem("pruner", "optuna cannot prune a multi-objective study; remove `pruner`"))
    if spec.early_stopping is not None:
        names = [m.name for m in spec.objectives]
        if spec.multi or names != [spec.intermediate] or spec.objectives[0].command is not None:
            problems.append(
                Problem(
                    "early_stopping",
                    f"stops on `{spec.intermediate}` as it appears in trainer_log.jsonl, so the metric must be "
                    f"`{spec.intermediate}` itself (got {', '.join(names) or 'none'}); otherwise set LLaMA-Factory's "
                    "`early_stopping_steps` in the base config",
                )
            )
    return problems


_STAGE_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def _check_stages(spec: SweepSpec) -> list[Problem]:
    problems: list[Problem] = []
    stages = spec.stage_list()
    if spec.stages is not None and not spec.stages:
        problems.append(Problem("stages", "the list is empty; remove `stages:` or list at least one stage"))
    if spec.stages and spec.max_trials is not None:
        problems.append(
            Problem("max_trials", "with `stages:` each stage has its own `max_trials`; move it there")
        )
    seen: set[str] = set()
    for i, stage in enumerate(stages):
        where = f"stages.{i}." if spec.stages else ""
        if spec.stages and not _STAGE_NAME.match(stage.name):
            problems.append(Problem(f"stages.{i}.name", "use letters, digits, '-' and '_' only"))
        if stage.name in seen:
            problems.append(
                Problem(f"stages.{i}.name", f"`{stage.name}` is already the name of an earlier stage")
            )
        seen.add(stage.name)
        unknown = [n for n in stage.parameters if n not in spec.parameters]
        for name in unknown:
            problems.append(
                Problem(
                    f"stages.{i}.parameters.{name}",
                    "not a parameter of the sweep; list every swept key under the top-level `parameters`"
                    + (did_you_mean(name, spec.parameters) or ""),
                )
            )
        method = spec.stage_method(stage)
        if method != "grid" and stage.max_trials is None:
            key = f"stages.{i}.max_trials" if spec.stages else "max_trials"
            problems.append(Problem(key, f"required for `method: {method}` (e.g. `max_trials: 20`)"))
        problems += _check_method(where, method, spec.stage_sampler_args(stage), spec)
    return problems


def parse_spec(data: Any, source: str = "spec") -> SweepSpec:
    """Validate a loaded spec mapping; raise SpecError listing every problem."""
    if not isinstance(data, dict):
        raise SpecError(
            [
                Problem(
                    "(top level)", "a sweep spec is a YAML mapping (base, method, metric, parameters, ...)"
                )
            ],
            source,
        )
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_pydantic_problems(exc), source) from None
    problems = check_spec(spec)
    if problems:
        raise SpecError(problems, source)
    return spec


def load_spec(path: Path) -> SweepSpec:
    """Read and validate a sweep spec file."""
    from lf_tuner.errors import LfTunerError

    try:
        text = path.read_text()
    except OSError as exc:
        raise LfTunerError(f"{path}: cannot read the sweep spec ({exc.strerror}); check the path") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise LfTunerError(f"{path}:{where} not valid YAML ({getattr(exc, 'problem', exc)})") from None
    return parse_spec(data, str(path))
