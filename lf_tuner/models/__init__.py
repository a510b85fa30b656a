"""Architecture facts: the catalog of known checkpoints and reading a local config.json."""

from lf_tuner.models.arch import ModelArch
from lf_tuner.models.resolve import catalog, resolve_model

__all__ = ["ModelArch", "catalog", "resolve_model"]
