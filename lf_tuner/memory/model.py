"""The VRAM model: peak GPU memory of one LLaMA-Factory training process, per GPU.

Pure functions, no I/O. The peak is the largest of three moments of a training step, each the sum of
named components in bytes:

- loss: the end of the forward pass, when the logits and the cross-entropy buffers are alive;
- backward: a checkpointed layer recomputed and back-propagated (or, without checkpointing, the
  start of backward with every layer's activations alive);
- step: the end of backward and the optimizer step, when gradients and optimizer states are alive.

Static memory (weights, trainable parameters, optimizer states from the second step on) is present in
every moment. Then come what the caching allocator holds beyond live tensors and the CUDA context,
which is what nvidia-smi shows for the process. Every coefficient is a count of bytes per parameter,
per token or per logit, derived from what PyTorch, PEFT, transformers and LLaMA-Factory keep in
memory (see docs in shared/reference/vram-estimation.md), not a constant fitted to a single run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lf_tuner.errors import LfTunerError
from lf_tuner.models import ModelArch, resolve_model

GIB = 1 << 30
MIB = 1 << 20

# Measured on an H100 with torch 2.11 / CUDA 13: nvidia-smi minus torch's reserved memory, constant over
# every calibration run (context, cuBLAS/cuDNN handles, loaded kernels). Other GPUs and CUDA versions
# come in lower (300-600 MiB), so this errs on the safe side.
CUDA_CONTEXT_BYTES = 758 * MIB
# Several GPUs: NCCL communicators and their buffers per process.
NCCL_BYTES = 512 * MIB
# The caching allocator holds freed blocks that do not fit the next request: about a quarter of the
# transient activation memory of a step on the calibration runs, and at least a floor. The floor is a base
# plus one and a half fp32 logits blocks (4 B x tokens x vocab, freed by the loss and too large or too small
# for what comes next), capped at 1 GiB; under Liger's fused loss no logits block exists and the base is left.
FRAGMENTATION_RATIO = 0.25
FRAGMENTATION_FLOOR_BASE = 256 * MIB
FRAGMENTATION_FLOOR_LOGIT_BLOCKS = 1.5
FRAGMENTATION_FLOOR_CAP = 1024 * MIB
# With PYTORCH_CUDA_ALLOC_CONF=expandable_segments (set by LLaMA-Factory's torchrun path) fragmentation
# mostly disappears; not measured here, so half the single-GPU share and floor are kept.
EXPANDABLE_SHARE = 0.5

# Bytes per logit element at the loss with transformers' cross-entropy: bf16 logits kept by the model
# output (2), the fp32 upcast (4), the log-softmax output kept for backward (4) and its gradient... the
# live set at the peak measures 12 B per (token x vocab) element.
CE_BYTES_PER_LOGIT = 12
# A checkpointed layer's backward holds its recomputed activations and their gradients.
BACKWARD_FACTOR = 2.0

NF4_BYTES = 0.5625  # 4 bit + one fp32 absmax per 64 weights
NF4_DQ_BYTES = 0.516  # double quantization: 8-bit absmax per 64 + fp32 per 256 blocks
INT8_BYTES = 1.0

METHODS = ("lora", "qlora", "freeze", "full")
ATTENTIONS = ("sdpa", "fa2", "eager")
DEEPSPEED = ("z0", "z2", "z3", "z2-offload", "z3-offload")

# optimizer name -> (state bytes per trainable parameter as a multiple of its dtype size, fixed bytes per
# parameter or None, step temporaries as a multiple of the parameter dtype size)
_ADAM = (2.0, None, 0.0)
OPTIMIZERS: dict[str, tuple[float, float | None, float]] = {
    "adamw_torch_fused": _ADAM,
    "adamw_torch": (2.0, None, 1.0),  # foreach implementation: one temporary per parameter at the step
    "adamw_torch_xla": _ADAM,
    "adamw_apex_fused": _ADAM,
    "adamw_anyprecision": _ADAM,
    "adamw_torch_4bit": (0.0, 1.0, 0.0),
    "adamw_torch_8bit": (0.0, 2.0, 0.0),
    "adamw_8bit": (0.0, 2.0, 0.0),
    "adamw_bnb_8bit": (0.0, 2.0, 0.0),
    "paged_adamw_8bit": (0.0, 2.0, 0.0),
    "paged_adamw_32bit": (0.0, 8.0, 0.0),
    "paged_adamw": (0.0, 8.0, 0.0),
    "adamw_hf": (2.0, None, 1.0),
    "adafactor": (0.0, 0.0, 0.0),  # factored second moments: counted from the matrix shapes below
    "sgd": (0.0, 0.0, 0.0),
    "adagrad": (1.0, None, 0.0),
    "rmsprop": (1.0, None, 0.0),
    "lion_32bit": (0.0, 4.0, 0.0),
    "paged_lion_32bit": (0.0, 4.0, 0.0),
    "lion_8bit": (0.0, 1.0, 0.0),
    "paged_lion_8bit": (0.0, 1.0, 0.0),
}
DEFAULT_OPTIM = "adamw_torch_fused"  # transformers 5 default, which LLaMA-Factory keeps

LIGER_MODEL_TYPES = (
    "llama", "mistral", "mixtral", "qwen2", "qwen2_vl", "qwen2_5_vl", "qwen3", "qwen3_moe", "gemma", "gemma2",
    "gemma3", "gemma3_text", "glm4", "phi3", "granite", "olmo2", "mllama", "paligemma",
)  # fmt: skip


@dataclass(frozen=True)
class TrainSetup:
    """Everything about a run that decides its peak memory (LLaMA-Factory 0.9.5 semantics)."""

    arch: ModelArch
    method: str = "lora"
    cutoff_len: int = 2048
    batch_size: int = 1
    grad_accum: int = 1
    lora_rank: int = 8
    lora_target: tuple[str, ...] = ("all",)
    additional_target: tuple[str, ...] = ()
    freeze_trainable_layers: int = 2
    quantization_bit: int | None = None
    double_quantization: bool = True
    optim: str = DEFAULT_OPTIM
    pure_bf16: bool = False
    gradient_checkpointing: bool = True
    unsloth_gc: bool = False
    attention: str = "sdpa"
    liger: bool = False
    deepspeed: str | None = None
    gpus: int = 1
    packing: bool = False
    neat_packing: bool = False
    stage: str = "sft"
    notes: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        problems = []
        if self.method not in METHODS:
            problems.append(f"unknown method `{self.method}`; use one of {', '.join(METHODS)}")
        if self.cutoff_len <= 0:
            problems.append(f"cutoff_len must be positive, got {self.cutoff_len}")
        if self.batch_size <= 0:
            problems.append(f"per_device_train_batch_size must be positive, got {self.batch_size}")
        if self.grad_accum <= 0:
            problems.append(f"gradient_accumulation_steps must be positive, got {self.grad_accum}")
        if self.method in ("lora", "qlora") and self.lora_rank <= 0:
            problems.append(f"lora_rank must be positive, got {self.lora_rank}")
        if self.gpus <= 0:
            problems.append(f"the number of GPUs must be positive, got {self.gpus}")
        if self.quantization_bit not in (None, 2, 3, 4, 5, 6, 8):
            problems.append(f"quantization_bit must be 4 or 8 (bitsandbytes), got {self.quantization_bit}")
        if self.quantization_bit and self.method in ("freeze", "full"):
            problems.append(
                "quantization works with LoRA only (LLaMA-Factory refuses it); drop quantization_bit"
            )
        if self.attention not in ATTENTIONS:
            problems.append(f"unknown attention `{self.attention}`; use one of {', '.join(ATTENTIONS)}")
        if self.deepspeed is not None and self.deepspeed not in DEEPSPEED:
            problems.append(f"unknown deepspeed `{self.deepspeed}`; use one of {', '.join(DEEPSPEED)}")
        if self.optim not in OPTIMIZERS:
            from lf_tuner.errors import did_you_mean

            problems.append(
                f"unknown optim `{self.optim}`;{did_you_mean(self.optim, OPTIMIZERS)}".rstrip(";")
            )
        if self.stage not in ("sft", "pt"):
            problems.append(f"stage `{self.stage}` is not modelled; the estimate covers sft and pt")
        if problems:
            raise LfTunerError("; ".join(problems))

    @property
    def quant_bits(self) -> int | None:
        if self.method == "qlora":
            return self.quantization_bit or 4
        return self.quantization_bit

    @property
    def is_lora(self) -> bool:
        return self.method in ("lora", "qlora")

    @property
    def tokens(self) -> int:
        """Tokens per micro-batch: batches are padded to a multiple of 8, at most cutoff_len."""
        seq = self.cutoff_len if self.packing else 8 * math.ceil(self.cutoff_len / 8)
        return self.batch_size * seq

    @property
    def zero_stage(self) -> int | None:
        return None if self.deepspeed is None else int(self.deepspeed[1])

    @property
    def trainable_layers(self) -> int:
        """Decoder layers freeze tuning trains (the last or first `freeze_trainable_layers`)."""
        return min(abs(self.freeze_trainable_layers), self.arch.num_layers)

    @property
    def offload(self) -> bool:
        return bool(self.deepspeed and self.deepspeed.endswith("offload"))


@dataclass(frozen=True)
class Estimate:
    """Per-GPU peak and its parts (bytes), at the moment of the step that peaks."""

    setup: TrainSetup
    components: dict[str, int]
    phase: str
    trainable_params: int
    phases: dict[str, int]

    @property
    def total_bytes(self) -> int:
        return sum(self.components.values())

    @property
    def total_gib(self) -> float:
        return self.total_bytes / GIB

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.setup.arch.name,
            "total_gib": round(self.total_gib, 3),
            "total_bytes": self.total_bytes,
            "peak_phase": self.phase,
            "components": {name: round(value / GIB, 3) for name, value in self.components.items()},
            "trainable_params": self.trainable_params,
            "tokens_per_micro_batch": self.setup.tokens,
        }


# ---------------------------------------------------------------------------------------------------------
# Parameters


def _lora_targets(setup: TrainSetup) -> set[str]:
    names = {lin.name for lin in setup.arch.linears() if not lin.per_expert}
    if "all" in setup.lora_target:
        return names
    return names & set(setup.lora_target)


def lora_params(setup: TrainSetup) -> int:
    """r * (in + out) per adapted linear layer; MoE experts are 3-D parameters, not nn.Linear, so PEFT skips them."""
    targets = _lora_targets(setup)
    per_layer = sum(
        setup.lora_rank * (lin.in_features + lin.out_features)
        for lin in setup.arch.linears()
        if lin.name in targets
    )
    return per_layer * setup.arch.num_layers


def _additional_params(setup: TrainSetup) -> int:
    """Modules trained in full next to LoRA (`additional_target`, e.g. embed_tokens,lm_head)."""
    arch, total = setup.arch, 0
    for name in setup.additional_target:
        if name in ("embed_tokens", "wte", "word_embeddings"):
            total += arch.embedding_params
        elif name in ("lm_head", "output"):
            total += arch.lm_head_params or arch.embedding_params
        elif name.endswith("norm"):
            total += arch.hidden_size * (arch.num_layers if name != "norm" else 1)
    return total


def trainable_params(setup: TrainSetup) -> int:
    arch = setup.arch
    if setup.method == "full":
        return arch.total_params - arch.extra_frozen_params
    if setup.method == "freeze":
        return setup.trainable_layers * arch.layer_params
    return lora_params(setup) + _additional_params(setup)


def _weight_bytes(setup: TrainSetup) -> float:
    """Base weights as loaded: bf16, or decoder linears quantized (embeddings, lm_head and norms stay bf16)."""
    arch = setup.arch
    quantizable = _quantized_params(arch)
    bits = setup.quant_bits
    if bits is None:
        per = 2.0
    elif bits >= 8:
        per = INT8_BYTES
    elif bits == 4:
        per = NF4_DQ_BYTES if setup.double_quantization else NF4_BYTES
    else:
        per = bits / 8 + 0.0625
    return quantizable * per + (arch.total_params - quantizable) * 2.0


def _quantized_params(arch: ModelArch) -> int:
    """Decoder linears that bitsandbytes replaces (MoE experts are 3-D parameters in transformers 5: left out)."""
    expert = sum(lin.params for lin in arch.linears() if lin.per_expert) * arch.num_experts * arch.num_layers
    return arch.linear_params - expert


def _optimizer_state_bytes(setup: TrainSetup, n_train: int, dtype_bytes: int) -> float:
    """Optimizer states of the trainable parameters, whose dtype is dtype_bytes wide."""
    state_mult, state_fixed, _ = OPTIMIZERS[setup.optim]
    if setup.optim == "adafactor":
        return _adafactor_state(setup)
    if setup.optim.startswith("paged_"):
        # bitsandbytes keeps paged states in CUDA unified memory, which pages out to the CPU under pressure:
        # they cannot cause an out-of-memory error and nvidia-smi does not count them for the process.
        return 0.0
    if state_fixed is None:
        return n_train * state_mult * dtype_bytes
    states = n_train * state_fixed
    if state_fixed < 4 and setup.method == "full":
        # transformers' Trainer keeps nn.Embedding states in 32 bit under bitsandbytes' 8-bit optimizers
        states += setup.arch.embedding_params * (8.0 - state_fixed)
    return states


def _adafactor_state(setup: TrainSetup) -> float:
    """Adafactor keeps a row and a column vector per matrix (4 B each) and a full state per vector."""
    arch = setup.arch
    if setup.is_lora:
        targets = _lora_targets(setup)
        per_layer = sum(
            4 * 2 * (setup.lora_rank + lin.in_features + lin.out_features)
            for lin in arch.linears()
            if lin.name in targets
        )
        return per_layer * arch.num_layers
    per_layer = (
        sum(4 * (lin.in_features + lin.out_features) for lin in arch.linears())
        + 4 * arch.norm_params_per_layer()
    )
    layers = arch.num_layers if setup.method == "full" else setup.trainable_layers
    embed = 4 * (arch.vocab_size + arch.hidden_size) * (1 if arch.tie_embeddings else 2)
    return per_layer * layers + (embed if setup.method == "full" else 0)


# ---------------------------------------------------------------------------------------------------------
# Activations, per token (bytes)


def layer_activation_bytes(setup: TrainSetup, trainable_layer: bool = False) -> float:
    """Bytes per token that autograd keeps for one decoder layer (bf16, fp32 norm copies).

    RMSNorm: fp32 copy of its input (4h) and its bf16 output (2h), plus the normalized input (2h) when the
    norm weight trains. Attention: q, k, v, the output and its contiguous copy for o_proj, fp32 log-sum-exp.
    Gated MLP: gate, up, act(gate) and the product (4 x 2f); Liger's SwiGLU recomputes act(gate) (3 x 2f)
    and its RMSNorm keeps only the bf16 input. MoE: each token passes through its routed experts.
    """
    arch = setup.arch
    h, kv, q = arch.hidden_size, arch.kv_dim, arch.q_dim
    norms = 2 * (2 * h if setup.liger else 6 * h)
    if trainable_layer or setup.method == "full":
        norms += 2 * 2 * h
    attention = 2 * q + 2 * 2 * kv + 2 * q + 2 * q + 4 * arch.num_heads
    mlp_factor = 6 if setup.liger else 8
    mlp = mlp_factor * arch.mlp_size * max(1, arch.experts_per_token)
    if arch.is_moe:
        mlp += 4 * arch.num_experts + 2 * h  # router logits (fp32) and the combined output
    return norms + attention + mlp


def _eager_attention_bytes(setup: TrainSetup) -> float:
    """Eager attention materialises scores: bf16 scores, fp32 softmax, bf16 probabilities per head."""
    if setup.attention != "eager":
        return 0.0
    seq = setup.tokens // setup.batch_size
    return 8.0 * setup.arch.num_heads * seq * seq * setup.batch_size


def _neat_packing_mask_bytes(setup: TrainSetup) -> float:
    if not setup.neat_packing or setup.attention == "fa2":
        return 0.0
    seq = setup.tokens // setup.batch_size
    return 2.0 * setup.batch_size * seq * seq


def _loss_bytes(setup: TrainSetup) -> float:
    """Logits and cross-entropy at the end of the forward pass."""
    arch, tokens = setup.arch, setup.tokens
    if setup.liger:
        # Fused linear cross-entropy: chunks of ~tokens/ceil(V/h) rows, the input gradient computed in forward.
        rows = max(1, math.ceil(tokens / math.ceil(arch.vocab_size / arch.hidden_size)))
        chunk = min(1 << (rows - 1).bit_length(), tokens)
        return chunk * arch.vocab_size * 6.0 + tokens * arch.hidden_size * 2.0
    # Gemma 2 caps its logits (logits / c, tanh, * c): tanh keeps its bf16 output for backward.
    softcap = 2.0 if arch.logit_softcap else 0.0
    return float(tokens) * arch.vocab_size * (CE_BYTES_PER_LOGIT + softcap)


# ---------------------------------------------------------------------------------------------------------
# The estimate


def estimate(setup: TrainSetup) -> Estimate:
    """The per-GPU peak of a training step and its components."""
    arch = setup.arch
    n = setup.gpus
    stage = setup.zero_stage
    n_train = trainable_params(setup)

    # Trainable parameters: LLaMA-Factory upcasts them to fp32 unless pure_bf16 (or ZeRO-3 without quantization).
    fp32_master = not setup.pure_bf16 and not (stage == 3 and setup.quant_bits is None)
    p_bytes = 4 if fp32_master else 2
    weights = _weight_bytes(setup)
    if not setup.is_lora:  # the trained part of the base model is held in the trainable dtype
        weights -= 2.0 * n_train
    params = float(n_train * p_bytes)
    grads = float(n_train * p_bytes)

    step_tmp_mult = OPTIMIZERS[setup.optim][2]
    opt_states = _optimizer_state_bytes(setup, n_train, p_bytes)
    step_temp = n_train * step_tmp_mult * p_bytes

    ds_buffers = 0.0
    if stage is not None:
        # DeepSpeed holds the module in bf16 and, per optimizer partition, an fp32 master copy, fp32 gradients
        # and the optimizer states in fp32 (ZeRO-1/2 shard the optimizer and gradients, ZeRO-3 the weights too).
        shard_opt = n if stage >= 1 else 1
        shard_grad = n if stage >= 2 else 1
        shard_param = n if stage == 3 else 1
        weights /= shard_param
        params = 2.0 * n_train / shard_param
        grads = 2.0 * n_train / shard_grad
        opt_states = (_optimizer_state_bytes(setup, n_train, 4) + 8.0 * n_train) / shard_opt
        step_temp = 0.0
        if stage == 3:
            largest = max(arch.layer_params, arch.embedding_params)
            ds_buffers = 2.0 * (arch.layer_params + largest)  # gathered parameters of the layers in use
        elif stage == 2:
            ds_buffers = 2.0 * 5e8  # the reduce (IPG) bucket of LLaMA-Factory's ds_z2_config.json
        if setup.offload:
            opt_states = 0.0
            grads = 0.0
            if stage == 3:
                weights = params = 0.0

    # Activations per micro-batch.
    tokens = setup.tokens
    h = arch.hidden_size
    trainable_layers = setup.trainable_layers if setup.method == "freeze" else 0
    layer = layer_activation_bytes(setup) * tokens + _eager_attention_bytes(setup)
    layer_trainable = layer_activation_bytes(setup, trainable_layer=True) * tokens + _eager_attention_bytes(
        setup
    )
    mask = _neat_packing_mask_bytes(setup)
    final = tokens * h * 6.0  # final norm: fp32 copy and bf16 output
    loss = _loss_bytes(setup)

    if setup.gradient_checkpointing:
        kept_layers = 2 if setup.unsloth_gc else arch.num_layers + 1
        checkpoints = 2.0 * h * tokens * kept_layers
        act_loss = checkpoints + final + mask
        act_backward = checkpoints + BACKWARD_FACTOR * max(layer, layer_trainable) + mask
    else:
        all_layers = (arch.num_layers - trainable_layers) * layer + trainable_layers * layer_trainable
        act_loss = 2.0 * h * tokens + all_layers + final + mask
        act_backward = act_loss + (BACKWARD_FACTOR - 1) * max(layer, layer_trainable)
    if setup.liger:
        act_backward += tokens * h * 2.0  # FLCE keeps the input gradient until backward reaches it

    # Autocast caches a bf16 copy of each fp32 trainable weight during the forward pass.
    autocast = 2.0 * n_train if (fp32_master and stage is None) else 0.0
    # A gradient computed next to the one already stored: the embedding's backward builds a dense fp32 gradient
    # that is added to the tied lm_head's (or cast to a bf16 weight's dtype, or added under accumulation).
    grad_transient = 0.0
    if setup.method == "full" and (arch.tie_embeddings or setup.grad_accum > 1 or p_bytes != 4):
        grad_transient = 4.0 * arch.embedding_params
    elif not setup.is_lora and setup.grad_accum > 1:
        grad_transient = p_bytes * max(lin.params for lin in arch.linears())
    if setup.quant_bits is not None:
        dequant = 2.0 * max(lin.params for lin in arch.linears() if not lin.per_expert)
    else:
        dequant = 0.0

    # During backward only the gradients of the output layer exist yet (full tuning); the rest come at the end.
    head = (arch.lm_head_params or arch.embedding_params) if setup.method == "full" else 0
    grads_early = min(grads, float(head * p_bytes))

    static = {"weights": weights, "trainable_params": params, "optimizer_states": opt_states}
    moments: dict[str, dict[str, float]] = {
        "loss": {
            **static,
            "autocast_cache": autocast,
            "activations": act_loss + dequant,
            "logits_loss": loss,
        },
        "backward": {**static, "gradients": grads_early, "activations": act_backward + dequant},
        "step": {**static, "gradients": grads, "optimizer_step_temp": step_temp + grad_transient},
    }
    phases = {name: sum(parts.values()) for name, parts in moments.items()}
    phase = max(phases, key=lambda k: phases[k])
    parts = {k: v for k, v in moments[phase].items() if v > 0}

    # The caching allocator keeps freed blocks that the next requests cannot reuse: a share of the memory
    # allocated and freed within each step (activations, logits, autocast copies, bf16 gradients under AMP).
    bf16_grads = 2.0 * n_train if (fp32_master and stage is None) else 0.0
    churn = max(act_loss + loss, act_backward) + autocast + bf16_grads + step_temp
    # LLM.int8 materialises each weight in 16 bit for the backward pass (MatMul8bitLt).
    if setup.quant_bits == 8:
        churn += 2.0 * _quantized_params(arch)
    logits_block = 0.0 if setup.liger else 4.0 * tokens * arch.vocab_size
    floor = min(
        FRAGMENTATION_FLOOR_CAP, FRAGMENTATION_FLOOR_BASE + FRAGMENTATION_FLOOR_LOGIT_BLOCKS * logits_block
    )
    multi = n > 1 or stage is not None
    frag = max(FRAGMENTATION_RATIO * churn, floor) * (EXPANDABLE_SHARE if multi else 1.0)
    # Eager attention: one layer's scores, masked scores, fp32 softmax, probabilities and the softmax gradient
    # (14 B per head x query x key) stay cached by the allocator between layers.
    frag += 14.0 / 8.0 * _eager_attention_bytes(setup)
    if phase != "step" and stage is None:
        # Gradients freed by zero_grad stay cached in blocks sized per parameter; in the next forward only the
        # autocast copies (half their size) fit in them, the logits and activations need other blocks.
        frag += 0.75 * max(0.0, grads - autocast)
    if ds_buffers:
        parts["deepspeed_buffers"] = ds_buffers
    if multi:
        parts["comm_buffers"] = float(NCCL_BYTES)
    parts["allocator_overhead"] = frag
    parts["cuda_context"] = float(CUDA_CONTEXT_BYTES)
    components = {k: int(round(v)) for k, v in parts.items()}
    return Estimate(
        setup=setup,
        components=components,
        phase=phase,
        trainable_params=n_train,
        phases={k: int(v) for k, v in phases.items()},
    )


# ---------------------------------------------------------------------------------------------------------
# Reading a LLaMA-Factory config


def _as_tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return tuple(str(v) for v in value)


def _deepspeed_kind(value: Any) -> str | None:
    """`deepspeed:` is a path to a JSON file (or an inline dict); read its stage and offload."""
    import json
    from pathlib import Path

    if value in (None, "", False):
        return None
    config: Any = value
    if isinstance(value, str):
        path = Path(value).expanduser()
        if path.is_file():
            try:
                config = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise LfTunerError(f"deepspeed: cannot read {path} as JSON ({exc})") from exc
        else:
            low = value.lower()
            stage = 3 if "z3" in low else 2 if "z2" in low else 0 if "z0" in low else None
            if stage is None:
                raise LfTunerError(
                    f"deepspeed: {value} does not exist; pass the path of a DeepSpeed JSON config"
                )
            return f"z{stage}" + ("-offload" if "offload" in low else "")
    if not isinstance(config, Mapping):
        raise LfTunerError("deepspeed: expected a path to a DeepSpeed JSON config or a mapping")
    zero = config.get("zero_optimization", {}) or {}
    stage = int(zero.get("stage", 0))
    if stage == 1:
        stage = 2
    offload = any(
        isinstance(zero.get(key), Mapping) and zero[key].get("device", "none") not in ("none", None)
        for key in ("offload_optimizer", "offload_param")
    )
    return f"z{stage}" + ("-offload" if offload and stage in (2, 3) else "")


_ATTENTION = {
    "auto": "sdpa",
    "sdpa": "sdpa",
    "fa2": "fa2",
    "fa3": "fa2",
    "disabled": "eager",
    "eager": "eager",
}


def setup_from_config(cfg: Mapping[str, Any], arch: ModelArch | None = None, gpus: int = 1) -> TrainSetup:
    """A TrainSetup from a LLaMA-Factory training config (defaults as in LLaMA-Factory 0.9.5)."""
    if arch is None:
        model = cfg.get("model_name_or_path")
        if not model:
            raise LfTunerError("model_name_or_path: missing; set it in the config or pass --model")
        arch = resolve_model(str(model))

    def get_int(key: str, default: int) -> int:
        value = cfg.get(key, default)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
            raise LfTunerError(f"{key}: expected an integer, got {value!r}")
        return int(value)

    method = str(cfg.get("finetuning_type", "lora"))
    if method not in ("lora", "freeze", "full"):
        raise LfTunerError(f"finetuning_type: `{method}` is not modelled; use lora, freeze or full")
    qbit = cfg.get("quantization_bit")
    flash_attn = str(cfg.get("flash_attn", "auto"))
    attention = _ATTENTION.get(flash_attn)
    if flash_attn == "auto" and arch.model_type == "gemma2":
        attention = "eager"  # LLaMA-Factory: gemma2 gets fa2 if installed, else eager (soft-capping)
    if attention is None:
        raise LfTunerError(
            f"flash_attn: unknown value {cfg.get('flash_attn')!r}; use auto, sdpa, fa2 or disabled"
        )
    packing = bool(cfg.get("packing")) or bool(cfg.get("neat_packing")) or cfg.get("stage") == "pt"
    return TrainSetup(
        arch=arch,
        method=method,
        cutoff_len=get_int("cutoff_len", 2048),
        batch_size=get_int("per_device_train_batch_size", 8),
        grad_accum=get_int("gradient_accumulation_steps", 1),
        lora_rank=get_int("lora_rank", 8),
        lora_target=_as_tuple(cfg.get("lora_target", "all")) or ("all",),
        additional_target=_as_tuple(cfg.get("additional_target")),
        freeze_trainable_layers=get_int("freeze_trainable_layers", 2),
        quantization_bit=int(qbit) if qbit not in (None, "") else None,
        double_quantization=bool(cfg.get("double_quantization", True)),
        optim=str(cfg.get("optim", DEFAULT_OPTIM)),
        pure_bf16=bool(cfg.get("pure_bf16", False)),
        gradient_checkpointing=not bool(cfg.get("disable_gradient_checkpointing", False)),
        unsloth_gc=bool(cfg.get("use_unsloth_gc", False)),
        attention=attention,
        liger=bool(cfg.get("enable_liger_kernel", False)),
        deepspeed=_deepspeed_kind(cfg.get("deepspeed")),
        gpus=gpus,
        packing=packing,
        neat_packing=bool(cfg.get("neat_packing", False)),
        stage=str(cfg.get("stage", "sft")),
    )
