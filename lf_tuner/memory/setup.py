"""What decides a run's GPU memory, read from a LLaMA-Factory training config with LLaMA-Factory 0.9.5's defaults.

`TrainSetup` is plain data; `setup_from_config` fills it from a config mapping. This module resolves the model
(`lf_tuner.models.resolve_config`: a local folder, the user's caches, the catalog or the Hub) and the DeepSpeed JSON a config names
(`layout.load_deepspeed`); the memory model itself (`model.py`) does no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lf_tuner.errors import LfTunerError, did_you_mean
from lf_tuner.memory.layout import DeepSpeed, Fsdp, fsdp_from_training_args, load_deepspeed
from lf_tuner.memory.optimizers import CUSTOM_OPTIMIZERS, DEFAULT_OPTIM, OPTIMIZERS
from lf_tuner.memory.vision import VisionSetup, patches_per_sample, vision_setup_from_config
from lf_tuner.models import ModelArch, resolve_config

METHODS = ("lora", "qlora", "oft", "freeze", "full")
ATTENTIONS = ("sdpa", "fa2", "eager")
STAGES = ("pt", "sft", "rm", "dpo", "kto")
PREF_LOSSES = ("sigmoid", "hinge", "ipo", "kto_pair", "orpo", "simpo")
# SFT losses: transformers' cross-entropy, or use_dft_loss / use_eaft_loss / use_asft_loss (train/trainer_utils.py)
SFT_LOSSES = ("ce", "dft", "eaft", "asft")
# hparams/finetuning_args.py:574: `use_ref_model = stage == "dpo" and pref_loss not in ["orpo", "simpo"]`.
REFERENCE_FREE_LOSSES = ("orpo", "simpo")
PPO_REFUSED = (
    "stage ppo is not estimated: LLaMA-Factory 0.9.5's PPO trainer requires trl>=0.8.6,<=0.9.6 "
    "(train/ppo/trainer.py:86-96) while 0.9.5 itself requires trl>=0.18 (extras/misc.py:101), so no install "
    "runs it; estimate the policy with stage: sft"
)
# Keys of mcore_adapter's training arguments (LLaMA-Factory's USE_MCA=1 backend, examples/megatron/).
MEGATRON_KEYS = (
    "tensor_model_parallel_size",
    "pipeline_model_parallel_size",
    "expert_model_parallel_size",
    "context_parallel_size",
    "use_distributed_optimizer",
    "recompute_granularity",
)


def unsupported(cfg: Mapping[str, Any]) -> str | None:
    """Why a config is outside the model (one line), or None. Checked before the config's keys are."""
    if cfg.get("stage") == "ppo":
        return PPO_REFUSED
    if cfg.get("use_kt"):
        return (
            "use_kt: KTransformers keeps the MoE experts in CPU memory and runs them with its own kernels "
            "(LLaMA-Factory's examples/ktransformers/); lf-tuner does not estimate that split"
        )
    megatron = [key for key in MEGATRON_KEYS if key in cfg]
    if megatron:
        return (
            f"{megatron[0]}: a Megatron-Core config (USE_MCA=1, examples/megatron/); its tensor, pipeline and "
            "expert parallelism are not estimated"
        )
    return None


@dataclass(frozen=True)
class EvalSetup:
    """The evaluation a run does (HF Trainer.evaluate during or after training), with HF/LLaMA-Factory defaults."""

    batch_size: int = 8  # per_device_eval_batch_size: transformers' default is 8, not the training batch
    accumulation_steps: int | None = None  # eval_accumulation_steps: None keeps every prediction on the GPU
    prediction_loss_only: bool = False
    compute_accuracy: bool = False
    predict_with_generate: bool = False
    max_new_tokens: int = 1024  # GeneratingArguments.max_new_tokens
    samples: int | None = None  # eval samples, when the config tells (val_size as a count, max_samples)

    def __post_init__(self) -> None:
        if self.batch_size <= 0:
            raise LfTunerError(f"per_device_eval_batch_size must be positive, got {self.batch_size}")
        if self.accumulation_steps is not None and self.accumulation_steps <= 0:
            raise LfTunerError(f"eval_accumulation_steps must be positive, got {self.accumulation_steps}")


@dataclass(frozen=True)
class TrainSetup:
    """Everything about a run that decides its peak memory (LLaMA-Factory 0.9.5 semantics)."""

    arch: ModelArch
    method: str = "lora"
    stage: str = "sft"
    cutoff_len: int = 2048
    batch_size: int = 1
    grad_accum: int = 1
    lora_rank: int = 8
    lora_target: tuple[str, ...] = ("all",)
    additional_target: tuple[str, ...] = ()
    oft_block_size: int = 32
    oft_rank: int = 0
    freeze_trainable_layers: int = 2
    quantization_bit: int | None = None
    double_quantization: bool = True
    optim: str = DEFAULT_OPTIM
    custom_optimizer: str | None = None  # galore, apollo, badam, adam_mini, muon (use_* keys)
    optimizer_rank: int = 16  # galore_rank / apollo_rank
    layerwise: bool = False  # galore_layerwise / apollo_layerwise
    badam_mode: str = "layer"
    badam_ratio: float = 0.05
    pure_bf16: bool = False
    gradient_checkpointing: bool = True
    unsloth_gc: bool = False
    attention: str = "sdpa"
    liger: bool = False
    pref_loss: str = "sigmoid"
    sft_loss: str = "ce"
    ref_model: bool = False  # a separate reference checkpoint (`ref_model:`)
    ref_quantization_bit: int | None = None
    deepspeed: DeepSpeed | None = None
    fsdp: Fsdp | None = None
    gpus: int = 1  # data-parallel processes in all nodes
    nodes: int = 1
    packing: bool = False
    neat_packing: bool = False
    eval: EvalSetup | None = None
    do_train: bool = True
    vision: VisionSetup = field(default_factory=VisionSetup)
    notes: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        problems = [p for check in _CHECKS for p in check(self)]
        if problems:
            raise LfTunerError("; ".join(problems))

    @property
    def quant_bits(self) -> int | None:
        """Bits of the quantized base weights: a pre-quantized checkpoint's own (LLaMA-Factory then ignores
        quantization_bit), else bitsandbytes' on-the-fly quantization_bit."""
        ptq = self.arch.quantization
        if ptq is not None:
            return None if ptq.dequantized else max(1, round(ptq.bits))
        if self.method == "qlora":
            return self.quantization_bit or 4
        return self.quantization_bit

    @property
    def is_lora(self) -> bool:
        return self.method in ("lora", "qlora")

    @property
    def is_adapter(self) -> bool:
        """LoRA or OFT: PEFT adapters on a frozen base model."""
        return self.method in ("lora", "qlora", "oft")

    @property
    def sequence_len(self) -> int:
        """Tokens per sequence: batches are padded to a multiple of 8, at most cutoff_len (exactly it when packed)."""
        return self.cutoff_len if self.packing else 8 * math.ceil(self.cutoff_len / 8)

    @property
    def tokens(self) -> int:
        """Tokens per micro-batch of the training data (one side of a preference pair)."""
        return self.batch_size * self.sequence_len

    @property
    def zero_stage(self) -> int | None:
        return None if self.deepspeed is None else self.deepspeed.stage

    @property
    def offload(self) -> bool:
        return bool(self.deepspeed and self.deepspeed.offload)

    @property
    def trainable_layers(self) -> int:
        """Decoder layers freeze tuning trains (the last or first `freeze_trainable_layers`)."""
        return min(abs(self.freeze_trainable_layers), self.arch.num_layers)

    @property
    def uses_reference(self) -> bool:
        """DPO with a reference-based loss, and KTO, score every batch under a reference model too."""
        return self.stage == "kto" or (self.stage == "dpo" and self.pref_loss not in REFERENCE_FREE_LOSSES)

    @property
    def layout(self) -> str:
        """One word for the layout: single, ddp, the ZeRO kind or the FSDP name."""
        if self.deepspeed is not None:
            return f"DeepSpeed {self.deepspeed.kind}"
        if self.fsdp is not None:
            return self.fsdp.name
        return "ddp" if self.gpus > 1 else "single"


def _check_sizes(s: TrainSetup) -> list[str]:
    out = []
    if s.cutoff_len <= 0:
        out.append(f"cutoff_len must be positive, got {s.cutoff_len}")
    if s.batch_size <= 0:
        out.append(f"per_device_train_batch_size must be positive, got {s.batch_size}")
    if s.grad_accum <= 0:
        out.append(f"gradient_accumulation_steps must be positive, got {s.grad_accum}")
    if s.is_lora and s.lora_rank <= 0:
        out.append(f"lora_rank must be positive, got {s.lora_rank}")
    if s.method == "oft" and s.oft_block_size <= 0 and s.oft_rank <= 0:
        out.append("OFT needs oft_block_size or oft_rank above 0")
    if s.gpus <= 0 or s.nodes <= 0:
        out.append(f"the number of GPUs and nodes must be positive, got {s.gpus} GPUs on {s.nodes} node(s)")
    elif s.gpus % s.nodes:
        out.append(f"{s.gpus} GPUs do not split evenly over {s.nodes} nodes")
    return out


def _check_method(s: TrainSetup) -> list[str]:
    out = []
    if s.method not in METHODS:
        out.append(f"unknown method `{s.method}`; use one of {', '.join(METHODS)}")
    if s.quantization_bit not in (None, 2, 3, 4, 5, 6, 8):
        out.append(f"quantization_bit must be 4 or 8 (bitsandbytes), got {s.quantization_bit}")
    if s.quantization_bit and s.method in ("freeze", "full"):
        out.append(
            "quantization works with LoRA or OFT only (LLaMA-Factory refuses it); drop quantization_bit"
        )
    ptq = s.arch.quantization
    if ptq is not None and not ptq.dequantized and s.method in ("freeze", "full"):
        out.append(
            f"{s.arch.name} is a {ptq.label} checkpoint: LLaMA-Factory trains quantized models with LoRA or OFT "
            "only; use finetuning_type: lora, or the unquantized checkpoint"
        )
    if s.ref_quantization_bit not in (None, 4, 8):
        out.append(f"ref_model_quantization_bit must be 4 or 8, got {s.ref_quantization_bit}")
    if s.attention not in ATTENTIONS:
        out.append(f"unknown attention `{s.attention}`; use one of {', '.join(ATTENTIONS)}")
    return out


def _check_stage(s: TrainSetup) -> list[str]:
    if s.stage == "ppo":
        return [PPO_REFUSED]
    if s.stage not in STAGES:
        return [f"unknown stage `{s.stage}`; use one of {', '.join(STAGES)}"]
    if s.pref_loss not in PREF_LOSSES:
        return [f"unknown pref_loss `{s.pref_loss}`; use one of {', '.join(PREF_LOSSES)}"]
    if s.sft_loss not in SFT_LOSSES:
        return [f"unknown SFT loss `{s.sft_loss}`; use one of {', '.join(SFT_LOSSES)}"]
    return []


def _check_optimizer(s: TrainSetup) -> list[str]:
    out = []
    if s.optim not in OPTIMIZERS:
        out.append(f"unknown optim `{s.optim}`;{did_you_mean(s.optim, OPTIMIZERS)}".rstrip(";"))
    if s.custom_optimizer is not None and s.custom_optimizer not in CUSTOM_OPTIMIZERS:
        out.append(f"unknown optimizer `{s.custom_optimizer}`; use one of {', '.join(CUSTOM_OPTIMIZERS)}")
    if s.custom_optimizer in ("galore", "apollo", "badam") and s.is_adapter:
        out.append(
            f"{s.custom_optimizer} trains full or freeze models, not adapters (LLaMA-Factory refuses it)"
        )
    if s.deepspeed is not None and s.fsdp is not None:
        out.append("DeepSpeed and FSDP exclude each other; keep one")
    return out


_CHECKS = (_check_sizes, _check_method, _check_stage, _check_optimizer)


# ---------------------------------------------------------------------------------------------------------
# Reading a LLaMA-Factory config


def _as_tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return tuple(str(v) for v in value)


_ATTENTION = {
    "auto": "sdpa",
    "sdpa": "sdpa",
    "fa2": "fa2",
    "fa3": "fa2",
    "disabled": "eager",
    "eager": "eager",
}
_CUSTOM_KEYS = {
    "use_galore": "galore",
    "use_apollo": "apollo",
    "use_badam": "badam",
    "use_adam_mini": "adam_mini",
    "use_muon": "muon",
}


class _Reader:
    """Typed access to a config mapping with one-line errors."""

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        self.cfg = cfg

    def integer(self, key: str, default: int) -> int:
        value = self.cfg.get(key, default)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
            raise LfTunerError(f"{key}: expected an integer, got {value!r}")
        return int(value)

    def opt_int(self, key: str) -> int | None:
        value = self.cfg.get(key)
        return None if value in (None, "") else self.integer(key, 0)

    def number(self, key: str, default: float) -> float:
        value = self.cfg.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise LfTunerError(f"{key}: expected a number, got {value!r}")
        return float(value)

    def flag(self, key: str, default: bool = False) -> bool:
        return bool(self.cfg.get(key, default))


def _attention(cfg: Mapping[str, Any], arch: ModelArch) -> str:
    flash_attn = str(cfg.get("flash_attn", "auto"))
    attention = _ATTENTION.get(flash_attn)
    if flash_attn == "auto" and arch.model_type == "gemma2":
        attention = "eager"  # LLaMA-Factory: gemma2 gets fa2 if installed, else eager (soft-capping)
    if attention is None:
        raise LfTunerError(
            f"flash_attn: unknown value {cfg.get('flash_attn')!r}; use auto, sdpa, fa2 or disabled"
        )
    return attention


def _custom_optimizer(cfg: Mapping[str, Any]) -> str | None:
    chosen = [name for key, name in _CUSTOM_KEYS.items() if cfg.get(key)]
    if len(chosen) > 1:
        raise LfTunerError(
            f"use_{chosen[1]}: cannot be used together with use_{chosen[0]} (LLaMA-Factory refuses it)"
        )
    return chosen[0] if chosen else None


def _eval_samples(r: _Reader) -> int | None:
    """Eval samples when the config tells: val_size as a count, or a fraction of max_samples."""
    val = r.cfg.get("val_size")
    max_samples = r.opt_int("max_samples")
    if r.cfg.get("eval_dataset"):
        return max_samples
    if isinstance(val, int | float) and not isinstance(val, bool) and val > 0:
        if val >= 1:
            return int(val)
        if max_samples:
            return max(1, int(val * max_samples))
    return None


def eval_from_config(cfg: Mapping[str, Any]) -> EvalSetup | None:
    """The evaluation of a config, or None when it does not evaluate (no eval_strategy, do_eval or do_predict)."""
    r = _Reader(cfg)
    strategy = str(cfg.get("eval_strategy") or "no").lower()
    if strategy == "no" and not r.flag("do_eval") and not r.flag("do_predict"):
        return None
    return EvalSetup(
        batch_size=r.integer("per_device_eval_batch_size", 8),
        accumulation_steps=r.opt_int("eval_accumulation_steps"),
        prediction_loss_only=r.flag("prediction_loss_only"),
        compute_accuracy=r.flag("compute_accuracy"),
        predict_with_generate=r.flag("predict_with_generate"),
        max_new_tokens=r.integer("max_new_tokens", 1024),
        samples=_eval_samples(r),
    )


def _sft_loss(cfg: Mapping[str, Any]) -> str:
    chosen = [name for name in SFT_LOSSES[1:] if cfg.get(f"use_{name}_loss")]
    return chosen[0] if chosen else "ce"


def _notes(cfg: Mapping[str, Any], custom: str | None, optim: str) -> tuple[str, ...]:
    """What LLaMA-Factory will do differently from what the config suggests (the estimate follows the config)."""
    notes = []
    ev = eval_from_config(cfg)
    if cfg.get("use_asft_loss") and cfg.get("finetuning_type", "lora") == "lora":
        notes.append(
            "use_asft_loss: LLaMA-Factory 0.9.5 builds no reference model for LoRA (create_ref_model returns "
            "None) and ASFT's compute_loss then fails; use finetuning_type full, freeze or oft"
        )
    if cfg.get("use_asft_loss") and ev is not None:
        notes.append(
            "use_asft_loss: evaluation fails in LLaMA-Factory 0.9.5 (train/sft/trainer.py compute_loss returns no "
            "outputs to prediction_step); drop eval_strategy/do_eval"
        )
    if custom in ("galore", "apollo"):
        allowed: tuple[str, ...] = (
            "adamw_torch",
            "adamw_8bit",
            "adamw_bnb_8bit",
            "paged_adamw_8bit",
            "adafactor",
        )
        if custom == "apollo":
            allowed = ("adamw_torch",)
        if optim not in allowed:
            notes.append(
                f"{custom}: LLaMA-Factory builds it only for optim {', '.join(allowed)} "
                f"(train/trainer_utils.py create_custom_optimizer); `{optim}` raises NotImplementedError, "
                "set optim: adamw_torch"
            )
    if cfg.get("oft_target") not in (None, "all") and cfg.get("finetuning_type") == "oft":
        notes.append(
            "oft_target: LLaMA-Factory 0.9.5 adapts the modules of lora_target (model/adapter.py:205)"
        )
    gathers = (
        ev is not None and (ev.compute_accuracy or ev.predict_with_generate) and not ev.prediction_loss_only
    )
    if ev is not None and gathers and ev.accumulation_steps is None and ev.samples is None:
        notes.append(
            "evaluation: predictions gather on the GPU for the whole eval set, whose size the config does not "
            "tell (counted for one eval batch); set eval_accumulation_steps: 1"
        )
    if cfg.get("fp8"):
        notes.append("fp8: FP8 matmuls (torchao) are not modelled; estimated as bf16 training")
    return tuple(notes)


def model_notes(setup: TrainSetup) -> list[str]:
    """What the estimate assumed about the model: how its architecture was derived, quantization, media."""
    arch = setup.arch
    lines = [f"model: {note}" for note in arch.notes]
    if arch.quantization is not None:
        lines.append(f"model: {arch.quantization.label} checkpoint (quantization_config)")
    if arch.vision is not None:
        vs = setup.vision
        videos = f" and {vs.videos} video(s) of {vs.video_maxlen} frames of {vs.video_max_pixels:,} px"
        media = f"{vs.images} image(s) of at most {vs.image_max_pixels:,} px" + (videos if vs.videos else "")
        lines.append(
            f"vision: {arch.vision_params / 1e9:.2f}B tower + {arch.projector_params / 1e6:.0f}M projector; "
            f"{media} per sample ({patches_per_sample(arch, vs)} patches; --images/--videos to change)"
        )
    return lines


def setup_from_config(
    cfg: Mapping[str, Any],
    arch: ModelArch | None = None,
    gpus: int = 1,
    *,
    nodes: int = 1,
    fsdp: Fsdp | None = None,
    base_dir: Path | None = None,
) -> TrainSetup:
    """A TrainSetup from a LLaMA-Factory training config (defaults as in LLaMA-Factory 0.9.5).

    `fsdp` comes from an accelerate config (`layout.fsdp_from_accelerate`); its process count, when above 1,
    sets the GPUs. A `deepspeed:` path is read relative to `base_dir` (or the working directory).
    """
    refusal = unsupported(cfg)
    if refusal:
        raise LfTunerError(refusal)
    if arch is None:
        arch = resolve_config(cfg)
    r = _Reader(cfg)
    method = str(cfg.get("finetuning_type", "lora"))
    if method not in ("lora", "oft", "freeze", "full"):
        raise LfTunerError(f"finetuning_type: `{method}` is not one of lora, oft, freeze, full")
    stage = str(cfg.get("stage", "sft"))
    fsdp = fsdp or fsdp_from_training_args(cfg.get("fsdp"), cfg.get("fsdp_config"))
    evaluates = r.flag("do_eval") or r.flag("do_predict")
    custom = _custom_optimizer(cfg)
    optim = str(cfg.get("optim", DEFAULT_OPTIM))
    rank_key = "apollo_rank" if custom == "apollo" else "galore_rank"
    layer_key = "apollo_layerwise" if custom == "apollo" else "galore_layerwise"
    if fsdp is not None and fsdp.processes > 1:
        gpus, nodes = fsdp.processes, fsdp.machines
    return TrainSetup(
        arch=arch,
        method=method,
        stage=stage,
        cutoff_len=r.integer("cutoff_len", 2048),
        batch_size=r.integer("per_device_train_batch_size", 8),
        grad_accum=r.integer("gradient_accumulation_steps", 1),
        lora_rank=r.integer("lora_rank", 8),
        lora_target=_as_tuple(cfg.get("lora_target", "all")) or ("all",),
        additional_target=_as_tuple(cfg.get("additional_target")),
        oft_block_size=r.integer("oft_block_size", 32),
        oft_rank=r.integer("oft_rank", 0),
        freeze_trainable_layers=r.integer("freeze_trainable_layers", 2),
        quantization_bit=r.opt_int("quantization_bit"),
        double_quantization=r.flag("double_quantization", True),
        optim=optim,
        custom_optimizer=custom,
        optimizer_rank=r.integer(rank_key, 16),
        layerwise=r.flag(layer_key),
        badam_mode=str(cfg.get("badam_mode", "layer")),
        badam_ratio=r.number("badam_update_ratio", 0.05),
        pure_bf16=r.flag("pure_bf16"),
        gradient_checkpointing=not r.flag("disable_gradient_checkpointing"),
        unsloth_gc=r.flag("use_unsloth_gc"),
        attention=_attention(cfg, arch),
        liger=r.flag("enable_liger_kernel"),
        pref_loss=str(cfg.get("pref_loss", "sigmoid")),
        sft_loss=_sft_loss(cfg),
        ref_model=bool(cfg.get("ref_model")),
        ref_quantization_bit=r.opt_int("ref_model_quantization_bit"),
        deepspeed=load_deepspeed(cfg.get("deepspeed"), base_dir),
        fsdp=fsdp,
        gpus=gpus,
        nodes=nodes,
        # hparams/parser.py:520 (packing defaults to stage == "pt"); data_args.py:185 (neat_packing implies it)
        packing=r.flag("neat_packing")
        or (r.flag("packing") if cfg.get("packing") is not None else stage == "pt"),
        neat_packing=r.flag("neat_packing"),
        eval=eval_from_config(cfg),
        # HF's do_train defaults to false; a config that only evaluates or predicts does not train
        do_train=r.flag("do_train", not evaluates),
        vision=vision_setup_from_config(cfg),
        notes=_notes(cfg, custom, optim),
    )
