"""Reading a LLaMA-Factory training config file: one place, one set of one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from lf_tuner.errors import LfTunerError


def load_mapping(path: Path) -> dict[str, Any]:
    """A YAML (or JSON) file that must hold a mapping of LLaMA-Factory keys."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LfTunerError(f"{path} does not exist; pass a LLaMA-Factory train config YAML") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LfTunerError(f"{path}: cannot read it ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise LfTunerError(f"{path}: not valid YAML ({where}{problem})") from None
    if not isinstance(data, dict):
        raise LfTunerError(f"{path}: expected a mapping of LLaMA-Factory keys, got {type(data).__name__}")
    return data
