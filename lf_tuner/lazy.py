"""Lazy package exports (PEP 562): a package's API names load their module on first use.

`lf_tuner.config`, `lf_tuner.train` and `lf_tuner.sweep` export this way, so importing the package (which every
command module does, and `lf-tuner --help` imports every command module) loads no pydantic, jinja2, psutil or
optuna until a name that needs them is used.

A lazy package lists its API once, as the imports under `if TYPE_CHECKING:` in its `__init__.py` (mypy reads them
there, with `__all__`); `lazy_exports` reads the same imports to know which module holds each name. Nothing is
cached here: each use reads the name off its module, so a test that patches `lf_tuner.train.gpus.detect_gpus` is
seen through `lf_tuner.train.detect_gpus` too. An exported name must not be a submodule's name (the submodule,
once imported, would shadow it).
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any


def typing_imports(init_file: str | Path) -> dict[str, str]:
    """name -> module of every `from MODULE import NAME` under `if TYPE_CHECKING:` in a package's __init__.py."""
    tree = ast.parse(Path(init_file).read_text(encoding="utf-8"))
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for stmt in node.body:
                if isinstance(stmt, ast.ImportFrom) and stmt.module:
                    found.update({alias.asname or alias.name: stmt.module for alias in stmt.names})
    return found


def lazy_exports(package: str, init_file: str) -> Callable[[str], Any]:
    """The package's `__getattr__`: each name its `if TYPE_CHECKING:` imports list, read from that module."""
    module_of: dict[str, str] = {}

    def __getattr__(name: str) -> Any:
        if not module_of:  # read on the first lookup, not when the package is imported
            module_of.update(typing_imports(init_file))
        module = module_of.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    return __getattr__
