"""The values `render`'s flags accept, apart from the modules that use them: `lf-tuner --help` imports every
command module, and these must not load pydantic (presets) or jinja2 (render) for it."""

from __future__ import annotations

from lf_tuner.memory import DEEPSPEED_CHOICES as _ALL_KINDS

METHODS: tuple[str, ...] = ("lora", "qlora", "freeze", "full")  # a preset's `method`
# The ZeRO kinds render writes, in both spellings users type (z3_offload, z3-offload).
DEEPSPEED_CHOICES = tuple(kind for kind in _ALL_KINDS if kind != "z0")
