"""Preset files: strict schema, lookup tables by method / GPU memory / data size, and loading.

A preset is a YAML file in `presets/` (or any path given to `--preset`) that begins
with a comment showing the command that uses it. Unknown keys are errors, never ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lf_tuner.config.files import parse_mapping, pydantic_problems
from lf_tuner.config.schema import load_schema
from lf_tuner.errors import LfTunerError, ProblemsError, did_you_mean
from lf_tuner.resources import shipped

Method = Literal["lora", "qlora", "freeze", "full"]
Stage = Literal["pt", "sft", "rm", "dpo", "kto"]

GPU_CLASSES = (("small", 12.0), ("medium", 24.0))  # under 12 GiB small, under 24 medium, else large
DATA_CLASSES = (("small", 1_000), ("medium", 10_000))  # under 1,000 samples small, under 10,000 medium


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ByMethod(_Strict):
    """A value per fine-tuning method (qlora uses the lora value unless given)."""

    full: float = Field(gt=0)
    lora: float = Field(gt=0)
    freeze: float = Field(gt=0)
    qlora: float | None = Field(default=None, gt=0)

    def pick(self, method: str) -> float:
        if method == "qlora":
            return self.qlora if self.qlora is not None else self.lora
        value: float = getattr(self, method)
        return value


class ByGpu(_Strict):
    """A value per GPU memory class: small < 12 GiB, medium < 24 GiB, large from 24 GiB."""

    small: int = Field(gt=0)
    medium: int = Field(gt=0)
    large: int = Field(gt=0)


class ByData(_Strict):
    """A value per data size class: small < 1,000 samples, medium < 10,000, large above."""

    small: float = Field(gt=0)
    medium: float = Field(gt=0)
    large: float = Field(gt=0)


class LoraSpec(_Strict):
    rank: int = Field(default=8, gt=0)
    alpha: int | None = Field(default=None, gt=0)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    target: str | None = None


class FreezeSpec(_Strict):
    trainable_layers: int = 2
    trainable_modules: str = "all"


class EvalSpec(_Strict):
    """Held-out data; `evaluate: false` only splits it off (LLaMA-Factory then never evaluates it)."""

    val_size: float = Field(gt=0)
    evaluate: bool = True
    per_device_eval_batch_size: int | None = Field(default=None, gt=0)
    early_stopping: bool = True
    metric: str = "eval_loss"


class Preset(_Strict):
    description: str
    stage: Stage = "sft"
    method: Method = "lora"
    model: str | None = None
    template: str | None = None
    dataset: str | None = None
    dataset_dir: str = "data"
    cutoff_len: int = Field(gt=0)
    max_samples: int | None = Field(default=None, gt=0)
    learning_rate: float | ByMethod
    per_device_train_batch_size: int | ByGpu
    gradient_accumulation_steps: int | None = Field(default=None, gt=0)
    target_batch_size: int | None = Field(default=None, gt=0)
    num_train_epochs: float | ByData
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float | None = Field(default=None, ge=0, lt=1)
    warmup_steps: int | None = Field(default=None, ge=0)
    weight_decay: float | None = Field(default=None, ge=0)
    max_grad_norm: float = Field(default=1.0, gt=0)
    optim: str = "adamw_torch"
    bf16: bool = True
    flash_attn: str = "auto"
    preprocessing_num_workers: int = Field(default=16, gt=0)
    logging_steps: int = Field(default=10, gt=0)
    save_steps: int = Field(default=100, gt=0)
    lora: LoraSpec = LoraSpec()
    freeze: FreezeSpec = FreezeSpec()
    quantization_bit: Literal[4, 8] = 4
    evaluation: EvalSpec | None = None
    extra: dict[str, Any] = {}
    why: dict[str, str] = {}

    @field_validator("extra")
    @classmethod
    def _known_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        schema = load_schema()
        bad = [
            f"`{k}` is not a LLaMA-Factory key;{did_you_mean(k, schema.keys())}"
            for k in value
            if k not in schema
        ]
        if bad:
            raise ValueError(" ".join(bad))
        return value

    @field_validator("lr_scheduler_type", "optim", "flash_attn")
    @classmethod
    def _choice(cls, value: str, info: Any) -> str:
        spec = load_schema()[info.field_name]
        if spec.choices is not None and value not in spec.choices:
            raise ValueError(
                f"`{value}` is not allowed;{did_you_mean(value, [str(c) for c in spec.choices])}"
            )
        return value

    @model_validator(mode="after")
    def _one_accumulation(self) -> Preset:
        if self.gradient_accumulation_steps is not None and self.target_batch_size is not None:
            raise ValueError("set gradient_accumulation_steps or target_batch_size, not both")
        if self.warmup_ratio is not None and self.warmup_steps is not None:
            raise ValueError("set warmup_ratio or warmup_steps, not both")
        return self


def gpu_class(gib: float) -> str:
    for name, limit in GPU_CLASSES:
        if gib < limit:
            return name
    return "large"


def data_class(samples: int) -> str:
    for name, limit in DATA_CLASSES:
        if samples < limit:
            return name
    return "large"


# --------------------------------------------------------------------------- loading


def builtin_names() -> list[str]:
    root = shipped("presets")
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))


def builtin_text(name: str) -> str:
    if name not in builtin_names():
        raise LfTunerError(
            f"preset: unknown preset `{name}`;{did_you_mean(name, builtin_names())} "
            "list them with `lf-tuner presets ls`, or pass a preset file path"
        )
    return shipped("presets").joinpath(f"{name}.yaml").read_text(encoding="utf-8")


def _looks_like_path(spec: str) -> bool:
    return spec.endswith((".yaml", ".yml")) or "/" in spec or Path(spec).is_file()


def preset_source(spec: str) -> tuple[str, str]:
    """(display name, YAML text) for a built-in name or a preset file path."""
    if _looks_like_path(spec):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise LfTunerError(
                f"preset: {spec} does not exist; pass a built-in name from `lf-tuner presets ls` or a file"
            )
        return path.stem, path.read_text(encoding="utf-8")
    return spec, builtin_text(spec)


def parse_preset(text: str, origin: str) -> Preset:
    """Validate a preset's YAML text; every problem is reported at once, one `key: message` line each."""
    raw = parse_mapping(
        text, origin, expected="a mapping of preset keys (see `lf-tuner presets show security`)"
    )
    try:
        return Preset.model_validate(raw)
    except ValidationError as exc:
        problems = pydantic_problems(
            exc, Preset, unknown="unknown preset key", unknown_hint=" see `lf-tuner presets show security`"
        )
        raise ProblemsError(problems, origin) from None


def load_preset(spec: str) -> tuple[str, Preset]:
    """(name, preset) for a built-in name or a path."""
    name, text = preset_source(spec)
    return name, parse_preset(text, f"preset {name}" if not _looks_like_path(spec) else spec)
