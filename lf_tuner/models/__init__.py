"""Models: finding a model's config.json and tokenizer (local, caches, Hub, catalog) and its architecture facts."""

from lf_tuner.models.arch import Linear, ModelArch, Quantization, VisionTower
from lf_tuner.models.catalog import Registered, configs, registry
from lf_tuner.models.config import FAMILIES, arch_from_config, template_for
from lf_tuner.models.hub import HubOptions
from lf_tuner.models.listing import ModelRow, list_models
from lf_tuner.models.resolve import (
    find_tokenizer_dir,
    model_template,
    options_from_config,
    resolve_config,
    resolve_model,
)

__all__ = [
    "FAMILIES",
    "HubOptions",
    "Linear",
    "ModelArch",
    "ModelRow",
    "Quantization",
    "Registered",
    "VisionTower",
    "arch_from_config",
    "configs",
    "find_tokenizer_dir",
    "list_models",
    "model_template",
    "options_from_config",
    "registry",
    "resolve_config",
    "resolve_model",
    "template_for",
]
