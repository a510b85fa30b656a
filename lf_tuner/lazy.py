"""Lazy package exports (PEP 562): a package's API names load their module on first use.

`lf_tuner.config`, `lf_tuner.train` and `lf_tuner.sweep` export this way, so importing the package (which every
command module does, and `lf-tuner --help` imports every command module) loads no pydantic, jinja2, psutil or
optuna until a name that needs them is used. Nothing is cached here: each use reads the name off its module, so
a test that patches `lf_tuner.train.gpus.detect_gpus` is seen through `lf_tuner.train.detect_gpus` too.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, modules: Mapping[str, tuple[str, ...]]) -> Callable[[str], Any]:
    """The package's `__getattr__`: each name in `modules` (module -> names) read from `package.module`."""
    module_of = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = module_of.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    return __getattr__
