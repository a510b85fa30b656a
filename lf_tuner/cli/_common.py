"""Small helpers shared by the command modules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from lf_tuner.config.files import load_mapping


def console(stderr: bool = False) -> Console:
    """A rich console on the current stdout/stderr (resolved per call, so CliRunner captures it)."""
    import sys

    stream = sys.stderr if stderr else sys.stdout
    return Console(file=stream, width=100, highlight=False, soft_wrap=True)


def load_yaml_mapping(path: Path) -> dict[str, Any]:
    """A config file that must hold a mapping (see lf_tuner.config.files.load_mapping)."""
    return load_mapping(path)
