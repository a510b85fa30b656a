"""Small helpers shared by the command modules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from lf_tuner.errors import LfTunerError


def console(stderr: bool = False) -> Console:
    """A rich console on the current stdout/stderr (resolved per call, so CliRunner captures it)."""
    import sys

    stream = sys.stderr if stderr else sys.stdout
    return Console(file=stream, width=100, highlight=False, soft_wrap=True)


def load_yaml_mapping(path: Path) -> dict[str, Any]:
    """A YAML file that must hold a mapping; one-line errors for everything else."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LfTunerError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LfTunerError(f"{path}: cannot read it ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise LfTunerError(f"{path}:{where} invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise LfTunerError(f"{path}: expected a mapping of LLaMA-Factory keys, got {type(data).__name__}")
    return data
