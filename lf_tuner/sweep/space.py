"""Search-space expansion: grid points in a stable order, optuna distributions, tied parameters."""

from __future__ import annotations

import ast
import itertools
import math
import operator
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lf_tuner.sweep.spec import SweepSpec

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.samplers import BaseSampler

_BINOPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Pow: operator.pow,
    ast.Mod: operator.mod,
}
_CMPOPS: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
_FUNCS: dict[str, Callable[..., Any]] = {
    "min": min,
    "max": max,
    "round": round,
    "int": int,
    "float": float,
    "abs": abs,
}


def eval_expr(expr: str, values: dict[str, Any]) -> Any:
    """Evaluate a tied-parameter expression such as `2 * lora_rank` (no Python beyond arithmetic)."""

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return values[node.id]
        if isinstance(node, ast.BinOp):
            return _BINOPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp):
            operand = ev(node.operand)
            return (
                -operand
                if isinstance(node.op, ast.USub)
                else (+operand if isinstance(node.op, ast.UAdd) else not operand)
            )
        if isinstance(node, ast.Compare):
            left = ev(node.left)
            for op, comp in zip(node.ops, node.comparators, strict=True):
                right = ev(comp)
                if not _CMPOPS[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.IfExp):
            return ev(node.body) if ev(node.test) else ev(node.orelse)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            return _FUNCS[node.func.id](*(ev(a) for a in node.args))
        raise ValueError(f"`{type(node).__name__}` is not allowed in an expression")

    return ev(ast.parse(expr, mode="eval"))


def with_tied(spec: SweepSpec, params: dict[str, Any]) -> dict[str, Any]:
    """The sampled values plus every tied parameter, in spec order."""
    values = dict(params)
    for name in spec.tied:
        expr = spec.parameters[name].expr
        assert expr is not None
        values[name] = eval_expr(expr, values)
    return {name: values[name] for name in spec.parameters}


def grid_size(spec: SweepSpec) -> int:
    """How many points the grid of `values` holds."""
    return math.prod(len(spec.parameters[n].values or []) for n in spec.sampled)


def grid_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every grid point, the first parameter varying slowest (like nested loops in spec order)."""
    names = spec.sampled
    lists = [spec.parameters[n].values or [] for n in names]
    return [with_tied(spec, dict(zip(names, combo, strict=True))) for combo in itertools.product(*lists)]


def distributions(spec: SweepSpec) -> dict[str, BaseDistribution]:
    """The optuna distribution of every sampled parameter."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, BaseDistribution] = {}
    for name in spec.sampled:
        p = spec.parameters[name]
        if p.values is not None:
            out[name] = CategoricalDistribution(p.values)
        elif p.distribution == "int":
            assert p.min is not None and p.max is not None
            out[name] = IntDistribution(int(p.min), int(p.max))
        else:
            assert p.min is not None and p.max is not None
            out[name] = FloatDistribution(p.min, p.max, log=p.distribution == "log_uniform")
    return out


def make_sampler(spec: SweepSpec, seed: int) -> BaseSampler:
    """The optuna sampler for the spec's method (grid points are queued, so it samples only as a fallback)."""
    import optuna

    if spec.method == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def preview(spec: SweepSpec, count: int | None = None) -> list[dict[str, Any]]:
    """The trials a fresh sweep starts with: every grid point (up to max_trials), or the first sampled ones."""
    if spec.method == "grid":
        points = grid_points(spec)
        return points[: spec.max_trials] if spec.max_trials else points
    import optuna

    assert spec.max_trials is not None
    n = min(spec.max_trials, count or 10)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=make_sampler(spec, spec.seed))
    dists = distributions(spec)
    return [with_tied(spec, study.ask(dists).params) for _ in range(n)]


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
