"""LLaMA-Factory training configs: one YAML loader and error renderer, the schema, the validation rules,
overrides, presets, the fit check and render.

The names below load their module on first use (PEP 562), so `import lf_tuner.config` stays cheap for
commands that need only the loader (render pulls in jinja2 and pydantic).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lf_tuner.config.files import load_mapping, parse_mapping, parse_yaml, pydantic_problems
    from lf_tuner.config.fit import Fit, check_fit
    from lf_tuner.config.overrides import apply_overrides, parse_override
    from lf_tuner.config.presets import (
        METHODS,
        Preset,
        builtin_names,
        builtin_text,
        load_preset,
        parse_preset,
    )
    from lf_tuner.config.render import (
        DEEPSPEED_CHOICES,
        DatasetInfoUpdate,
        Rendered,
        RenderRequest,
        deepspeed_filename,
        deepspeed_kind,
        fit_config,
        merge_dataset_info,
        render_deepspeed,
        render_train_config,
        with_changes,
    )
    from lf_tuner.config.schema import FieldSpec, Schema, load_schema
    from lf_tuner.config.validate import (
        RULES,
        Context,
        check_config,
        check_files,
        llamafactory_available,
        validate_config,
        validate_many_with_llamafactory,
        validate_with_llamafactory,
    )

_MODULES: dict[str, tuple[str, ...]] = {
    "files": ("load_mapping", "parse_mapping", "parse_yaml", "pydantic_problems"),
    "fit": ("Fit", "check_fit"),
    "overrides": ("apply_overrides", "parse_override"),
    "presets": ("METHODS", "Preset", "builtin_names", "builtin_text", "load_preset", "parse_preset"),
    "render": (
        "DEEPSPEED_CHOICES",
        "DatasetInfoUpdate",
        "RenderRequest",
        "Rendered",
        "deepspeed_filename",
        "deepspeed_kind",
        "fit_config",
        "merge_dataset_info",
        "render_deepspeed",
        "render_train_config",
        "with_changes",
    ),
    "schema": ("FieldSpec", "Schema", "load_schema"),
    "validate": (
        "RULES",
        "Context",
        "check_config",
        "check_files",
        "llamafactory_available",
        "validate_config",
        "validate_many_with_llamafactory",
        "validate_with_llamafactory",
    ),
}
_MODULE_OF = {name: module for module, names in _MODULES.items() for name in names}

__all__ = [
    "Context",
    "DEEPSPEED_CHOICES",
    "DatasetInfoUpdate",
    "FieldSpec",
    "Fit",
    "METHODS",
    "Preset",
    "RULES",
    "RenderRequest",
    "Rendered",
    "Schema",
    "apply_overrides",
    "builtin_names",
    "builtin_text",
    "check_config",
    "check_files",
    "check_fit",
    "deepspeed_filename",
    "deepspeed_kind",
    "fit_config",
    "llamafactory_available",
    "load_mapping",
    "load_preset",
    "load_schema",
    "merge_dataset_info",
    "parse_mapping",
    "parse_override",
    "parse_preset",
    "parse_yaml",
    "pydantic_problems",
    "render_deepspeed",
    "render_train_config",
    "validate_config",
    "validate_many_with_llamafactory",
    "validate_with_llamafactory",
    "with_changes",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'lf_tuner.config' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"lf_tuner.config.{module}"), name)
    globals()[name] = value
    return value
