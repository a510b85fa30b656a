"""The sweep spec: a strict schema, loaded from YAML, every problem reported as `path: message`."""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError

from lf_tuner.errors import LfTunerError, did_you_mean

Scalar = str | int | float | bool

# keys the sweep sets itself in every trial config; a parameter may not take them over
RESERVED_KEYS = ("output_dir",)
EXPR_FUNCTIONS = ("min", "max", "round", "int", "float", "abs")


class SpecError(LfTunerError):
    """A sweep spec that cannot be used; the message holds one `path: message` line per problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ParamSpec(_Strict):
    """One swept key: a list of values, a distribution, or an expression over other parameters."""

    values: list[Scalar] | None = None
    distribution: Literal["uniform", "log_uniform", "int", "values"] | None = None
    min: float | None = None
    max: float | None = None
    expr: str | None = None

    @property
    def kind(self) -> str:
        """`values`, `uniform`, `log_uniform`, `int` or `expr`."""
        if self.expr is not None:
            return "expr"
        if self.values is not None:
            return "values"
        return self.distribution or "values"


class MetricSpec(_Strict):
    """What a trial is judged by: a key of all_results.json, or the number a command prints."""

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


class SweepSpec(_Strict):
    """A whole sweep spec file."""

    base: str | None = None
    preset: str | None = None
    render: RenderSpec | None = None
    overrides: list[str] = Field(default_factory=list)
    method: Literal["grid", "random", "tpe"]
    metric: MetricSpec
    max_trials: PositiveInt | None = None
    budget: BudgetSpec | None = None
    gpus_per_trial: PositiveInt = 1
    divergence_factor: float = Field(default=3.0, gt=1.0)
    seed: int = 0
    parameters: dict[str, ParamSpec]

    @property
    def sampled(self) -> list[str]:
        """Names of the parameters the sampler chooses, in spec order."""
        return [name for name, p in self.parameters.items() if p.kind != "expr"]

    @property
    def tied(self) -> list[str]:
        """Names of the expression parameters, in an order where each comes after what it uses."""
        return tied_order(self)

    def fingerprint(self) -> str:
        """A hash of what defines the search (not max_trials, which may grow between runs)."""
        data = self.model_dump(mode="json", exclude={"max_trials"})
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


# where each nested model lives, for "did you mean" on unknown keys
_MODELS: dict[str, type[BaseModel]] = {
    "metric": MetricSpec,
    "budget": BudgetSpec,
    "render": RenderSpec,
    "parameters": ParamSpec,
}


def _model_at(loc: tuple[str | int, ...]) -> type[BaseModel]:
    if not loc:
        return SweepSpec
    return _MODELS.get(str(loc[0]), SweepSpec)


def _format_pydantic(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        path = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            key = str(loc[-1])
            fields = _model_at(loc[:-1]).model_fields
            hint = did_you_mean(key, fields) or f" allowed keys: {', '.join(fields)}."
            lines.append(f"{path}: unknown key `{key}`;{hint}")
        elif err["type"] == "missing":
            lines.append(f"{path}: required key is missing")
        else:
            lines.append(f"{path}: {err['msg']} (got {err.get('input')!r})")
    return lines


def expr_names(expr: str) -> set[str]:
    """The variable names an expression uses (raises SyntaxError or ValueError when it is not allowed)."""
    tree = ast.parse(expr, mode="eval")
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if not (isinstance(node.func, ast.Name) and node.func.id in EXPR_FUNCTIONS) or node.keywords:
                raise ValueError(f"only {', '.join(EXPR_FUNCTIONS)} may be called")
        elif isinstance(node, ast.Name):
            if node.id not in EXPR_FUNCTIONS:
                names.add(node.id)
        elif not isinstance(
            node,
            ast.Expression
            | ast.Constant
            | ast.BinOp
            | ast.UnaryOp
            | ast.operator
            | ast.unaryop
            | ast.Load
            | ast.IfExp
            | ast.Compare
            | ast.cmpop,
        ):
            raise ValueError(
                f"`{type(node).__name__}` is not allowed; use numbers, parameter names and + - * / // ** %"
            )
    return names


def tied_order(spec: SweepSpec) -> list[str]:
    """Expression parameters sorted so that each comes after the parameters it uses."""
    pending = {n: expr_names(p.expr) for n, p in spec.parameters.items() if p.expr is not None}
    done = set(spec.sampled)
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


def _check_param(name: str, p: ParamSpec, method: str) -> list[str]:
    where = f"parameters.{name}"
    forms = [p.values is not None, p.distribution not in (None, "values"), p.expr is not None]
    if sum(forms) != 1:
        return [
            f"{where}: give exactly one of `values: [...]`, `distribution: uniform|log_uniform|int` "
            'with `min`/`max`, or `expr: "..."`'
        ]
    if p.distribution == "values" and p.values is None:
        return [f"{where}: `distribution: values` needs a `values: [...]` list"]
    problems = []
    if p.values is not None:
        if not p.values:
            problems.append(f"{where}.values: the list is empty; give at least one value")
        if p.min is not None or p.max is not None:
            problems.append(f"{where}: `min`/`max` do not apply to `values`; remove them")
    elif p.expr is not None:
        if p.min is not None or p.max is not None:
            problems.append(f"{where}: `min`/`max` do not apply to `expr`; remove them")
    else:
        if method == "grid":
            problems.append(
                f"{where}: grid search takes only `values: [...]` (or `expr`); "
                "list the values or use `method: random` / `tpe`"
            )
        if p.min is None or p.max is None:
            problems.append(f"{where}: `distribution: {p.distribution}` needs both `min` and `max`")
        elif p.min >= p.max:
            problems.append(f"{where}: `min` ({p.min:g}) must be below `max` ({p.max:g})")
        elif p.distribution == "log_uniform" and p.min <= 0:
            problems.append(f"{where}: log_uniform needs `min` > 0 (got {p.min:g})")
        elif p.distribution == "int" and (p.min != int(p.min) or p.max != int(p.max)):
            problems.append(f"{where}: `distribution: int` needs whole numbers for `min` and `max`")
    return problems


def check_spec(spec: SweepSpec) -> list[str]:
    """Problems pydantic cannot see: one form per parameter, tied names that exist, a base to start from."""
    problems: list[str] = []
    if (spec.base is None) == (spec.preset is None):
        problems.append(
            "base: give either `base: train.yaml` or `preset: NAME` (with `render:`), not both or neither"
        )
    if spec.preset is not None and spec.render is None:
        problems.append("render: `preset:` needs `render: {model: ..., dataset: ...}`")
    if spec.base is not None and spec.render is not None:
        problems.append(
            "render: `render:` applies only to `preset:`; set those keys in the base config instead"
        )
    if spec.method != "grid" and spec.max_trials is None:
        problems.append(f"max_trials: required for `method: {spec.method}` (e.g. `max_trials: 20`)")
    if not spec.parameters:
        problems.append("parameters: nothing to sweep; add at least one parameter")
    if isinstance(spec.metric.command, list) and not spec.metric.command:
        problems.append("metric.command: the command is empty")
    budget_keys = set(spec.budget.model_dump(exclude_none=True)) if spec.budget else set()
    for name, p in spec.parameters.items():
        if name in RESERVED_KEYS:
            problems.append(f"parameters.{name}: the sweep sets `{name}` for every trial; remove it")
            continue
        if name in budget_keys:
            problems.append(f"parameters.{name}: also set by `budget`; keep it in one place")
        problems.extend(_check_param(name, p, spec.method))
        if p.expr is not None:
            try:
                unknown = sorted(expr_names(p.expr) - set(spec.parameters))
            except (SyntaxError, ValueError) as exc:
                reason = exc.msg if isinstance(exc, SyntaxError) else str(exc)
                problems.append(f"parameters.{name}.expr: cannot read `{p.expr}`: {reason}")
                continue
            others = [n for n in spec.parameters if n != name]
            problems.extend(
                f"parameters.{name}.expr: `{u}` is not a parameter of this sweep;"
                + (did_you_mean(u, others) or f" parameters: {', '.join(others)}.")
                for u in unknown
            )
    if not problems:
        try:
            tied_order(spec)
        except ValueError as exc:
            problems.append(f"parameters: {exc}")
    return problems


def parse_spec(data: Any, source: str = "spec") -> SweepSpec:
    """Validate a loaded spec mapping; raise SpecError listing every problem."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a sweep spec is a YAML mapping (base, method, metric, parameters, ...)")
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError("\n".join(f"{source}: {line}" for line in _format_pydantic(exc))) from None
    problems = check_spec(spec)
    if problems:
        raise SpecError("\n".join(f"{source}: {line}" for line in problems))
    return spec


def load_spec(path: Path) -> SweepSpec:
    """Read and validate a sweep spec file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the sweep spec ({exc.strerror}); check the path") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise SpecError(f"{path}:{where} not valid YAML ({getattr(exc, 'problem', exc)})") from None
    return parse_spec(data, str(path))
