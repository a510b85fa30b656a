"""Errors that reach the user as one line and an exit code, never as a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import click


class LfTunerError(click.ClickException):
    """Bad data or config: exit code 1, one line that names the problem and the fix."""

    exit_code = 1


def closest(name: str, choices: Iterable[str], n: int = 3, cutoff: float = 0.6) -> list[str]:
    """The closest valid names to a misspelt one, best first."""
    return difflib.get_close_matches(name, list(choices), n=n, cutoff=cutoff)


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' did you mean `x`?' or '' when nothing is close."""
    matches = closest(name, choices)
    if not matches:
        return ""
    return " did you mean " + " or ".join(f"`{m}`" for m in matches) + "?"
