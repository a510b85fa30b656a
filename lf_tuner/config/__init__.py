"""LLaMA-Factory training configs: one YAML loader and error renderer, the schema, the validation rules,
overrides, presets, the fit check and render.

The names below load their module on first use (`lf_tuner.lazy`), so `import lf_tuner.config` stays cheap for
commands that need only the loader (render pulls in jinja2 and pydantic).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lf_tuner.lazy import lazy_exports

if TYPE_CHECKING:
    from lf_tuner.config.choices import DEEPSPEED_CHOICES, METHODS
    from lf_tuner.config.files import TrainConfig, load_mapping, parse_mapping, parse_yaml, pydantic_problems
    from lf_tuner.config.fit import Fit, check_fit
    from lf_tuner.config.overrides import apply_overrides, parse_override
    from lf_tuner.config.presets import (
        Preset,
        builtin_names,
        builtin_text,
        load_preset,
        parse_preset,
    )
    from lf_tuner.config.render import (
        DatasetInfoUpdate,
        Rendered,
        RenderRequest,
        check_outputs,
        check_rendered,
        deepspeed_filename,
        deepspeed_kind,
        dump_yaml,
        fit_config,
        merge_dataset_info,
        render_deepspeed,
        render_template,
        render_train_config,
        unwritten,
        with_changes,
        with_deepspeed,
        write_rendered,
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
    "TrainConfig",
    "apply_overrides",
    "builtin_names",
    "builtin_text",
    "check_config",
    "check_files",
    "check_fit",
    "check_outputs",
    "check_rendered",
    "deepspeed_filename",
    "deepspeed_kind",
    "dump_yaml",
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
    "render_template",
    "render_train_config",
    "unwritten",
    "validate_config",
    "validate_many_with_llamafactory",
    "validate_with_llamafactory",
    "with_changes",
    "with_deepspeed",
    "write_rendered",
]


if not TYPE_CHECKING:  # mypy reads the imports above; a module __getattr__ would make every name pass
    __getattr__ = lazy_exports(__name__, __file__)
