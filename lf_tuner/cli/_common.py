"""Small helpers shared by the command modules."""

from __future__ import annotations

import os
import sys
from typing import IO

from rich.console import Console, RenderableType
from rich.measure import Measurement

FALLBACK_WIDTH = 100  # columns when the output is not a terminal and $COLUMNS is not set


def terminal_width(stream: IO[str]) -> int:
    """$COLUMNS if set, else the terminal's width, else FALLBACK_WIDTH (a pipe, a file, CliRunner)."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        if stream.isatty():
            return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        pass
    return FALLBACK_WIDTH


def console(stderr: bool = False, width: int | None = None) -> Console:
    """A rich console on the current stdout/stderr (resolved per call, so CliRunner captures it)."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(file=stream, width=width or terminal_width(stream), highlight=False, soft_wrap=True)


def show(renderable: RenderableType, *, stderr: bool = False) -> None:
    """Print a table at the terminal's width, or wider when it needs more: a column that must not wrap (numbers,
    names) is never cut to fit; the terminal wraps the line instead."""
    stream = sys.stderr if stderr else sys.stdout
    width = terminal_width(stream)
    wide = Console(file=stream, width=10_000)
    needed = Measurement.get(wide, wide.options, renderable).minimum
    console(stderr, width=max(width, needed)).print(renderable)
