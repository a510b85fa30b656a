"""The files lf-tuner ships beside its code: Jinja templates and training presets.

They live at the repository's top level (`templates/`, `presets/`) and are mapped into the wheel as
`lf_tuner/templates` and `lf_tuner/presets` (see pyproject.toml). A source checkout reads them in place.
"""

from __future__ import annotations

from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Literal

_ROOT = Path(__file__).resolve().parent.parent


def shipped(folder: Literal["templates", "presets"]) -> Traversable:
    """The shipped folder: the checkout's own when running from source, else the installed package data."""
    source = _ROOT / folder
    if (_ROOT / "pyproject.toml").is_file() and (source / "__init__.py").is_file():
        return source
    return resources.files(f"lf_tuner.{folder}")
