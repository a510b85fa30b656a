"""Errors that reach the user as one line and an exit code, never as a traceback.

The core raises these plain exceptions; only `lf_tuner.cli` turns them into click's messages and exit codes
(1 for bad config or data, 2 for a bad flag or argument, 3 for a run that does not fit), so the core can be used
as a library.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


class LfTunerError(Exception):
    """Bad data or config: exit code 1, one line that names the problem and the fix."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class BadValue(LfTunerError):
    """A bad value of a flag or argument (`param`, e.g. `--gpus`): exit code 2, as click's bad parameters."""

    exit_code = 2

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class DoesNotFit(LfTunerError):
    """The run does not fit the GPU memory it was checked against (`estimate --check`): exit code 3, so a script
    can tell it from a bad config."""

    exit_code = 3


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config, preset, sweep spec or record, printed as `key: message`."""

    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


class ProblemsError(LfTunerError):
    """Every problem found in one thing (`what`), reported at once: a count, then one `key: message` line each."""

    def __init__(self, problems: Sequence[Problem | str], what: str = "config") -> None:
        lines = list(dict.fromkeys(str(p) for p in problems))
        noun = "problem" if len(lines) == 1 else "problems"
        super().__init__(f"{what} has {len(lines)} {noun}:\n" + "\n".join(lines))
        self.problems = list(problems)


def closest(name: str, choices: Iterable[str], n: int = 3, cutoff: float = 0.6) -> list[str]:
    """The closest valid names to a misspelt one, best first."""
    return difflib.get_close_matches(name, list(choices), n=n, cutoff=cutoff)


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' did you mean `x`?' or '' when nothing is close."""
    matches = closest(name, choices)
    if not matches:
        return ""
    return " did you mean " + " or ".join(f"`{m}`" for m in matches) + "?"
