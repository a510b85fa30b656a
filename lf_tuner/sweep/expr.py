"""Tied-parameter expressions (`2 * lora_rank`): one whitelist that both checks and evaluates them.

Every node an expression may hold is a key of `_NODES` (or an operator of `_BINOPS`, `_UNARY`, `_CMPOPS`),
so what the spec check accepts is exactly what `eval_expr` can evaluate.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from typing import Any

_BINOPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Pow: operator.pow,
    ast.Mod: operator.mod,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
    ast.Not: operator.not_,
}
_CMPOPS: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "min": min,
    "max": max,
    "round": round,
    "int": int,
    "float": float,
    "abs": abs,
}
_ALLOWED = "numbers, parameter names, + - * / // ** %, comparisons, `a if c else b` and " + ", ".join(
    FUNCTIONS
)


class ExprError(ValueError):
    """An expression that uses something outside the whitelist."""


def _check(node: ast.AST, names: set[str]) -> None:
    if isinstance(node, ast.Expression):
        _check(node.body, names)
    elif isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ExprError(f"only numbers may be written in an expression, not {node.value!r}")
    elif isinstance(node, ast.Name):
        if node.id in FUNCTIONS:
            raise ExprError(f"`{node.id}` is a function; call it, e.g. `{node.id}(a, b)`")
        names.add(node.id)
    elif isinstance(node, ast.BinOp):
        if type(node.op) not in _BINOPS:
            raise ExprError(f"the operator `{type(node.op).__name__}` is not allowed; use {_ALLOWED}")
        _check(node.left, names)
        _check(node.right, names)
    elif isinstance(node, ast.UnaryOp):
        if type(node.op) not in _UNARY:
            raise ExprError(f"the operator `{type(node.op).__name__}` is not allowed; use {_ALLOWED}")
        _check(node.operand, names)
    elif isinstance(node, ast.Compare):
        if any(type(op) not in _CMPOPS for op in node.ops):
            raise ExprError(f"only < <= > >= == != compare values; use {_ALLOWED}")
        for child in (node.left, *node.comparators):
            _check(child, names)
    elif isinstance(node, ast.IfExp):
        for child in (node.test, node.body, node.orelse):
            _check(child, names)
    elif isinstance(node, ast.Call):
        if not (isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS) or node.keywords:
            raise ExprError(f"only {', '.join(FUNCTIONS)} may be called")
        for arg in node.args:
            _check(arg, names)
    else:
        raise ExprError(f"`{type(node).__name__}` is not allowed; use {_ALLOWED}")


def parse_expr(expr: str) -> tuple[ast.Expression, set[str]]:
    """The checked tree and the parameter names it uses (SyntaxError or ExprError when not allowed)."""
    tree = ast.parse(expr, mode="eval")
    names: set[str] = set()
    _check(tree, names)
    return tree, names


def expr_names(expr: str) -> set[str]:
    """The parameter names an expression uses (SyntaxError or ExprError when it is not allowed)."""
    return parse_expr(expr)[1]


def _eval(node: ast.AST, values: dict[str, Any]) -> Any:
    if isinstance(node, ast.Expression):
        return _eval(node.body, values)
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return values[node.id]
    if isinstance(node, ast.BinOp):
        return _BINOPS[type(node.op)](_eval(node.left, values), _eval(node.right, values))
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_eval(node.operand, values))
    if isinstance(node, ast.Compare):
        left = _eval(node.left, values)
        for op, comp in zip(node.ops, node.comparators, strict=True):
            right = _eval(comp, values)
            if not _CMPOPS[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.IfExp):
        return _eval(node.body if _eval(node.test, values) else node.orelse, values)
    assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)  # the only node _check leaves
    return FUNCTIONS[node.func.id](*(_eval(a, values) for a in node.args))


def eval_expr(expr: str, values: dict[str, Any]) -> Any:
    """Evaluate a tied-parameter expression such as `2 * lora_rank` (checked against the whitelist first)."""
    tree, _ = parse_expr(expr)
    return _eval(tree, values)
