"""The VRAM model: peak GPU memory of one LLaMA-Factory training process, per GPU.

Pure functions, no I/O (reading a config into a TrainSetup is `setup.py`'s job). The training peak is the largest of
three moments of a step, each the sum of named components in bytes:

- loss: the end of the forward pass, when the logits and the loss buffers are alive;
- backward: a checkpointed layer recomputed and back-propagated (or, without checkpointing, the
  start of backward with every layer's activations alive);
- step: the end of backward and the optimizer step, when gradients and optimizer states are alive.

Static memory (weights, trainable parameters, optimizer states from the second step on) is present in every
moment. Then come what the caching allocator holds beyond live tensors and the CUDA context, which is what
nvidia-smi shows for the process. When the run evaluates, the evaluation step (a forward under no_grad with its own
batch size) is a second peak; the verdict takes the larger. Every coefficient is a count of bytes per parameter,
per token or per logit; docs/memory-model.md derives each one and names its source.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from lf_tuner.memory.optimizers import optimizer_cost
from lf_tuner.memory.params import lora_params, quantized_params, trainable_params, weight_bytes
from lf_tuner.memory.setup import EvalSetup, TrainSetup
from lf_tuner.memory.stages import StageCost, reference_weight_bytes, stage_cost
from lf_tuner.memory.vision import vision_activation_bytes

__all__ = ["Estimate", "Peak", "estimate", "layer_activation_bytes", "lora_params", "trainable_params"]

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
# A checkpointed layer's backward holds its recomputed activations and their gradients.
BACKWARD_FACTOR = 2.0

LIGER_MODEL_TYPES = (
    "llama", "mistral", "mixtral", "qwen2", "qwen2_vl", "qwen2_5_vl", "qwen3", "qwen3_moe", "gemma", "gemma2",
    "gemma3", "gemma3_text", "glm4", "phi3", "granite", "olmo2", "mllama", "paligemma",
)  # fmt: skip


@dataclass(frozen=True)
class Peak:
    """One peak (training or evaluation) per GPU and its parts (bytes), at the moment that peaks."""

    components: dict[str, int]
    phase: str
    phases: dict[str, int]

    @property
    def total_bytes(self) -> int:
        return sum(self.components.values())


@dataclass(frozen=True)
class Estimate:
    """The training peak, the evaluation peak when the run evaluates, and the larger of the two (`total_bytes`)."""

    setup: TrainSetup
    train: Peak | None  # None: the run only evaluates or predicts (do_train off)
    trainable_params: int
    eval: Peak | None = None

    @property
    def main(self) -> Peak:
        """The training peak, or the evaluation peak of a run that does not train."""
        peak = self.train or self.eval
        assert peak is not None
        return peak

    @property
    def components(self) -> dict[str, int]:
        return self.main.components

    @property
    def phase(self) -> str:
        return self.main.phase

    @property
    def phases(self) -> dict[str, int]:
        return self.main.phases

    @property
    def train_bytes(self) -> int:
        return 0 if self.train is None else self.train.total_bytes

    @property
    def total_bytes(self) -> int:
        """The peak that decides whether the run fits: training or evaluation, whichever is larger."""
        return max(self.train_bytes, self.eval.total_bytes if self.eval else 0)

    @property
    def total_gib(self) -> float:
        return self.total_bytes / GIB

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.setup.arch.name,
            "stage": self.setup.stage,
            "layout": self.setup.layout,
            "total_gib": round(self.total_gib, 3),
            "total_bytes": self.total_bytes,
            "train_gib": round(self.train_bytes / GIB, 3),
            "peak_phase": self.phase,
            "components": {name: round(value / GIB, 3) for name, value in self.components.items()},
            "params": self.setup.arch.total_params,
            "trainable_params": self.trainable_params,
            "tokens_per_micro_batch": self.setup.tokens * stage_cost(self.setup).sequences,
            "notes": list(self.setup.notes),
        }
        if self.eval is not None:
            out["eval_gib"] = round(self.eval.total_bytes / GIB, 3)
            out["eval_components"] = {k: round(v / GIB, 3) for k, v in self.eval.components.items()}
        return out


# ---------------------------------------------------------------------------------------------------------
# Static memory: weights, trainable parameters, gradients, optimizer


@dataclass(frozen=True)
class Static:
    """Bytes per GPU of what outlives a step, and the gradients and optimizer work of the step."""

    weights: float  # frozen (or not yet upcast) base weights, and a reference model
    params: float  # trainable parameters in their training dtype (and an optimizer's master copy)
    grads: float  # all gradients at the end of backward
    grads_early: float  # gradients already there during backward (full tuning: the output layer's)
    opt_states: float
    step_temp: float  # the optimizer step's temporaries
    backward_temp: float = 0.0  # optimizer work done inside backward (layer-wise GaLore/APOLLO)
    buffers: float = 0.0  # DeepSpeed buckets and gathered parameters, FSDP's unsharded units
    fp32_master: bool = True  # trainable parameters upcast to fp32 (autocast copies them to bf16)


def _fp32_master(setup: TrainSetup) -> bool:
    """model/adapter.py init_adapter (lines 313-325): trainable parameters are cast to fp32 unless pure_bf16 or
    BAdam, or under ZeRO-3 without quantization (DeepSpeed keeps its own fp32 copy)."""
    if setup.pure_bf16 or setup.custom_optimizer == "badam":
        return False
    return not (setup.zero_stage == 3 and setup.quant_bits is None)


def _static(setup: TrainSetup, n_train: int) -> Static:
    """One GPU, or plain data parallelism: everything replicated."""
    fp32_master = _fp32_master(setup)
    p_bytes = 4 if fp32_master else 2
    weights = weight_bytes(setup) + reference_weight_bytes(setup)
    cost = optimizer_cost(setup, n_train, p_bytes)
    largest = max(lin.params for lin in setup.arch.linears())
    if setup.custom_optimizer == "badam":  # the model stays bf16; the training block has an fp32 copy
        return Static(
            weights=weights,
            params=cost.master,
            grads=4.0
            * n_train,  # _grad_to_hp: the fp32 copy's gradients (the bf16 ones are freed one by one)
            grads_early=2.0 * n_train,
            opt_states=cost.states,
            step_temp=cost.step_temp,
            fp32_master=False,
        )
    if not setup.is_adapter:  # the trained part of the base model is held in the trainable dtype
        weights -= 2.0 * n_train
    # During backward only the gradients of the output layer exist yet (full tuning); the rest come at the end.
    head = (setup.arch.lm_head_params or setup.arch.embedding_params) if setup.method == "full" else 0
    grads = float(n_train * p_bytes)
    grads_early = min(grads, float(head * p_bytes))
    backward_temp = 0.0
    step_temp = cost.step_temp
    if cost.in_backward:  # each parameter steps and drops its gradient as soon as it is accumulated
        grads = grads_early = float(p_bytes * max(largest, head))
        backward_temp, step_temp = step_temp, 0.0
    return Static(
        weights=weights,
        params=float(n_train * p_bytes),
        grads=grads,
        grads_early=grads_early,
        opt_states=cost.states,
        step_temp=step_temp,
        backward_temp=backward_temp,
        fp32_master=fp32_master,
    )


def _zero(setup: TrainSetup, n_train: int, static: Static) -> Static:
    """DeepSpeed ZeRO (deepspeed/runtime/zero/stage_1_and_2.py, stage3.py): the module in bf16 and, per optimizer
    partition, an fp32 master copy, fp32 gradients and the optimizer states in fp32; ZeRO-1/2 shard the optimizer
    (and ZeRO-2 the gradients) over every GPU of every node, ZeRO-3 the weights too. Offload moves the optimizer
    side (master, fp32 gradients, states) and, under ZeRO-3 `offload_param`, the bf16 weights to the CPU."""
    ds = setup.deepspeed
    assert ds is not None
    arch, n = setup.arch, setup.gpus
    stage = ds.stage
    shard_opt = n if stage >= 1 else 1
    shard_grad = n if stage >= 2 else 1
    shard_param = n if stage == 3 else 1
    weights = static.weights / shard_param
    params = 2.0 * n_train / shard_param
    grads = 2.0 * n_train / shard_grad
    opt_states = (optimizer_cost(setup, n_train, 4).states + 8.0 * n_train) / shard_opt
    h = arch.hidden_size
    if stage == 3:
        # gathered parameters of the layers in use: the current layer and the largest module (the embedding or
        # lm_head, gathered for the forward's first and last step), each in bf16, at most stage3_max_live_parameters
        largest = max(arch.layer_params, arch.embedding_params)
        buffers = 2.0 * min(arch.layer_params + largest, ds.max_live_parameters + largest)
    elif stage >= 1 and ds.contiguous_gradients:
        # the reduce (IPG) bucket: reduce_bucket_size elements in bf16, allocated with contiguous_gradients
        # (stage_1_and_2.py setup_buckets), doubled with overlap_comm; "auto" is hidden^2
        bucket = ds.reduce_bucket_size if ds.reduce_bucket_size is not None else float(h * h)
        buffers = 2.0 * bucket * (2 if ds.overlap_comm else 1)
    else:
        buffers = 0.0
    if ds.offload_optimizer:
        opt_states = grads = 0.0
    if ds.offload_param:
        weights = params = 0.0
    return replace(
        static,
        weights=weights,
        params=params,
        grads=grads,
        grads_early=min(static.grads_early, grads),
        opt_states=opt_states,
        step_temp=0.0,
        buffers=buffers,
    )


def _fsdp(setup: TrainSetup, n_train: int, static: Static) -> Static:
    """FSDP through accelerate (torch/distributed/fsdp): each decoder layer is a unit (TRANSFORMER_BASED_WRAP) whose
    parameters, gradients and optimizer states are sharded over the GPUs (HYBRID_SHARD: over one node's GPUs);
    mixed precision all-gathers a unit in bf16 for its forward and backward. Counted beside the shards: the unit in
    use and the one prefetched (BACKWARD_PRE) with their unsharded gradients, and the root unit (embeddings, lm_head,
    final norm), which FSDP does not reshard after forward (torch/distributed/fsdp/_runtime_utils.py
    `_post_forward_reshard`: `not state._is_root`). SHARD_GRAD_OP keeps every gathered unit from forward to
    backward. CPU offload (`fsdp_offload_params`) keeps the shards, gradients and states on the CPU."""
    fsdp = setup.fsdp
    assert fsdp is not None
    arch = setup.arch
    shard = 1
    if fsdp.shards_params:
        shard = max(1, setup.gpus // setup.nodes) if fsdp.hybrid else setup.gpus
    per_param = weight_bytes(setup) / arch.total_params if setup.quant_bits else 2.0
    root = 2.0 * (arch.embedding_params + arch.lm_head_params)
    unit = per_param * arch.layer_params
    gathered = root + (2 * unit if fsdp.reshards_after_forward else arch.num_layers * unit)
    layer_train = n_train / arch.num_layers if setup.method == "full" or setup.is_adapter else 0.0
    gathered += 2.0 * 2.0 * layer_train  # unsharded bf16 gradients of the unit in backward
    if fsdp.offload_params:
        return replace(
            static, weights=0.0, params=0.0, grads=0.0, grads_early=0.0, opt_states=0.0, buffers=gathered
        )
    return replace(
        static,
        weights=static.weights / shard,
        params=static.params / shard,
        grads=static.grads / shard,
        grads_early=static.grads_early / shard,
        opt_states=static.opt_states / shard,
        step_temp=static.step_temp / shard,
        buffers=gathered,
    )


def static_memory(setup: TrainSetup, n_train: int) -> Static:
    """What outlives a step, per GPU, for the run's layout."""
    static = _static(setup, n_train)
    if setup.deepspeed is not None:
        return _zero(setup, n_train, static)
    if setup.fsdp is not None:
        return _fsdp(setup, n_train, static)
    return static


# ---------------------------------------------------------------------------------------------------------
# Activations, per token (bytes)


def layer_activation_bytes(setup: TrainSetup, trainable_layer: bool = False) -> float:
    """Bytes per token that autograd keeps for one decoder layer (bf16, fp32 norm copies).

    RMSNorm: fp32 copy of its input (4h) and its bf16 output (2h), plus the normalized input (2h) when the
    norm weight trains. Attention: q, k, v, the output and its contiguous copy for o_proj, fp32 log-sum-exp.
    Gated MLP: gate, up, act(gate) and the product (4 x 2f); Liger's SwiGLU recomputes act(gate) (3 x 2f)
    and its RMSNorm keeps only the bf16 input. MoE: each token passes through its routed experts. OFT: each
    adapted linear casts its input to fp32 and its rotation (an einsum) saves that copy (4 B x in_features,
    peft/tuners/oft/layer.py OFTRotationModule.forward).
    """
    arch = setup.arch
    h, kv, q = arch.hidden_size, arch.kv_dim, arch.q_dim
    norms = 2 * (2 * h if setup.liger else 6 * h)
    if trainable_layer or _trains_every_layer(setup):
        norms += 2 * 2 * h
    attention = 2 * q + 2 * 2 * kv + 2 * q + 2 * q + 4 * arch.num_heads
    mlp_factor = 6 if setup.liger else 8
    mlp = mlp_factor * arch.mlp_size * max(1, arch.experts_per_token)
    if arch.is_moe:
        mlp += 4 * arch.num_experts + 2 * h  # router logits (fp32) and the combined output
    oft = 0.0
    if setup.method == "oft":
        from lf_tuner.memory.optimizers import lora_targets

        targets = lora_targets(setup)
        oft = sum(4.0 * lin.in_features for lin in arch.linears() if lin.name in targets)
    return norms + attention + mlp + oft


def _trains_every_layer(setup: TrainSetup) -> bool:
    return setup.method == "full" and not (setup.custom_optimizer == "badam" and setup.badam_mode == "layer")


def no_grad_layer_bytes(setup: TrainSetup) -> float:
    """Bytes per token one layer holds in a forward without gradients (evaluation, reference and KL forwards):
    the hidden state and the residual (2 x 2h), the norm's fp32 copy (4h), and the wider of attention
    (q, k, v, output) and the gated MLP's gate, up and activation (3 x 2f)."""
    arch = setup.arch
    attention = 4 * arch.q_dim + 4 * arch.kv_dim
    mlp = 6 * arch.mlp_size * max(1, arch.experts_per_token)
    return 8.0 * arch.hidden_size + max(attention, mlp)


def _eager_attention_bytes(setup: TrainSetup, sequences: int = 1) -> float:
    """Eager attention materialises scores: bf16 scores, fp32 softmax, bf16 probabilities per head."""
    if setup.attention != "eager":
        return 0.0
    seq = setup.sequence_len
    return 8.0 * setup.arch.num_heads * seq * seq * setup.batch_size * sequences


def _neat_packing_mask_bytes(setup: TrainSetup) -> float:
    if not setup.neat_packing or setup.attention == "fa2":
        return 0.0
    seq = setup.sequence_len
    return 2.0 * setup.batch_size * seq * seq


def _loss_bytes(setup: TrainSetup, cost: StageCost) -> float:
    """Logits and loss at the end of the forward pass (stages.py derives the bytes per logit)."""
    arch, tokens = setup.arch, setup.tokens
    if setup.liger and cost.fused_loss:
        # Fused linear cross-entropy: chunks of ~tokens/ceil(V/h) rows, the input gradient computed in forward.
        rows = max(1, math.ceil(tokens / math.ceil(arch.vocab_size / arch.hidden_size)))
        chunk = min(1 << (rows - 1).bit_length(), tokens)
        return chunk * arch.vocab_size * 6.0 + tokens * arch.hidden_size * 2.0
    # Gemma 2 caps its logits (logits / c, tanh, * c): tanh keeps its bf16 output for backward.
    softcap = 2.0 * cost.sequences if arch.logit_softcap else 0.0
    return float(tokens) * arch.vocab_size * (cost.logits.train + softcap)


@dataclass(frozen=True)
class Activations:
    loss: float  # at the loss: checkpoints, final norm, masks (the logits are `logits`)
    backward: float  # a recomputed layer and its gradients, with the checkpoints
    logits: float
    dequant: float  # a quantized weight dequantized for its matmul


def activations(setup: TrainSetup, cost: StageCost) -> Activations:
    """Activations of one micro-batch (chosen and rejected together for DPO and RM)."""
    arch = setup.arch
    tokens = setup.tokens * cost.sequences
    h = arch.hidden_size
    trainable_layers = setup.trainable_layers if setup.method == "freeze" else 0
    if setup.custom_optimizer == "badam" and setup.badam_mode == "layer":
        trainable_layers = 1
    eager = _eager_attention_bytes(setup, cost.sequences)
    layer = layer_activation_bytes(setup) * tokens + eager
    layer_trainable = layer_activation_bytes(setup, trainable_layer=True) * tokens + eager
    mask = _neat_packing_mask_bytes(setup)
    final = tokens * h * 6.0  # final norm: fp32 copy and bf16 output
    if setup.gradient_checkpointing:
        kept_layers = 2 if setup.unsloth_gc else arch.num_layers + 1
        checkpoints = 2.0 * h * tokens * kept_layers
        act_loss = checkpoints + final + mask
        act_backward = checkpoints + BACKWARD_FACTOR * max(layer, layer_trainable) + mask
    else:
        all_layers = (arch.num_layers - trainable_layers) * layer + trainable_layers * layer_trainable
        act_loss = 2.0 * h * tokens + all_layers + final + mask
        act_backward = act_loss + (BACKWARD_FACTOR - 1) * max(layer, layer_trainable)
    if setup.liger and cost.fused_loss:
        act_backward += tokens * h * 2.0  # FLCE keeps the input gradient until backward reaches it
    # The vision tower's own activations for the micro-batch's images and videos (memory/vision.py).
    vision = vision_activation_bytes(
        arch, setup.vision, setup.batch_size * cost.sequences, setup.gradient_checkpointing
    )
    act_loss += vision
    act_backward += 0.0 if setup.vision.freeze_vision_tower else vision
    dequant = 0.0
    if setup.quant_bits is not None:
        dequant = 2.0 * max(lin.params for lin in arch.linears() if not lin.per_expert)
    return Activations(act_loss, act_backward, _loss_bytes(setup, cost), dequant)


# ---------------------------------------------------------------------------------------------------------
# The training peak


def _transients(setup: TrainSetup, static: Static, n_train: int) -> tuple[float, float]:
    """(autocast copies, a gradient computed next to the one already stored)."""
    arch = setup.arch
    # Autocast caches a bf16 copy of each fp32 trainable weight during the forward pass (FSDP's mixed precision
    # gathers the weights in bf16 already; DeepSpeed runs its module in bf16).
    plain = setup.deepspeed is None and setup.fsdp is None
    autocast = 2.0 * n_train if (static.fp32_master and plain) else 0.0
    # The embedding's backward builds a dense fp32 gradient that is added to the tied lm_head's (or cast to a
    # bf16 weight's dtype, or added under accumulation).
    p_bytes = 4 if _fp32_master(setup) else 2
    grad_transient = 0.0
    if setup.method == "full" and (arch.tie_embeddings or setup.grad_accum > 1 or p_bytes != 4):
        grad_transient = 4.0 * arch.embedding_params
    elif not setup.is_adapter and setup.grad_accum > 1:
        grad_transient = p_bytes * max(lin.params for lin in arch.linears())
    return autocast, grad_transient


def _fragmentation(setup: TrainSetup, churn: float, logits_block: float) -> float:
    """What the caching allocator holds beyond live tensors: a share of the memory allocated and freed within a
    step, at least a floor sized by the fp32 logits block."""
    floor = min(
        FRAGMENTATION_FLOOR_CAP, FRAGMENTATION_FLOOR_BASE + FRAGMENTATION_FLOOR_LOGIT_BLOCKS * logits_block
    )
    multi = setup.gpus > 1 or setup.deepspeed is not None or setup.fsdp is not None
    return max(FRAGMENTATION_RATIO * churn, floor) * (EXPANDABLE_SHARE if multi else 1.0)


def _overheads(setup: TrainSetup, static: Static, parts: dict[str, float], frag: float) -> dict[str, int]:
    """The layout's buffers, NCCL, the allocator and the CUDA context, after the moment's own parts."""
    if static.buffers:
        parts["deepspeed_buffers" if setup.deepspeed is not None else "fsdp_buffers"] = static.buffers
    if setup.gpus > 1 or setup.deepspeed is not None or setup.fsdp is not None:
        parts["comm_buffers"] = float(NCCL_BYTES)
    parts["allocator_overhead"] = frag
    parts["cuda_context"] = float(CUDA_CONTEXT_BYTES)
    return {k: int(round(v)) for k, v in parts.items()}


def _train_peak(setup: TrainSetup, n_train: int, static: Static, cost: StageCost) -> Peak:
    act = activations(setup, cost)
    autocast, grad_transient = _transients(setup, static, n_train)
    base = {
        "weights": static.weights,
        "trainable_params": static.params,
        "optimizer_states": static.opt_states,
    }
    moments: dict[str, dict[str, float]] = {
        "loss": {
            **base,
            "autocast_cache": autocast,
            "activations": act.loss + act.dequant,
            "logits_loss": act.logits,
        },
        "backward": {
            **base,
            "gradients": static.grads_early,
            "activations": act.backward + act.dequant,
            "optimizer_step_temp": static.backward_temp,
        },
        "step": {**base, "gradients": static.grads, "optimizer_step_temp": static.step_temp + grad_transient},
    }
    phases = {name: sum(parts.values()) for name, parts in moments.items()}
    phase = max(phases, key=lambda k: phases[k])
    parts = {k: v for k, v in moments[phase].items() if v > 0}

    # The caching allocator keeps freed blocks that the next requests cannot reuse: a share of the memory
    # allocated and freed within each step (activations, logits, autocast copies, bf16 gradients under AMP).
    plain = setup.deepspeed is None and setup.fsdp is None
    bf16_grads = 2.0 * n_train if (static.fp32_master and plain) else 0.0
    churn = max(act.loss + act.logits, act.backward) + autocast + bf16_grads + static.step_temp
    # LLM.int8 materialises each weight in 16 bit for the backward pass (bitsandbytes autograd/_functions.py
    # MatMul8bitLt.backward: `state.CB.to(ctx.dtype_A, copy=True)`), once per quantized weight per step.
    if setup.quant_bits == 8:
        churn += 2.0 * quantized_params(setup.arch)
    logits_block = 0.0
    if not (setup.liger and cost.fused_loss):
        logits_block = 4.0 * setup.tokens * cost.sequences * setup.arch.vocab_size
    frag = _fragmentation(setup, churn, logits_block)
    # Eager attention: one layer's scores, masked scores, fp32 softmax, probabilities and the softmax gradient
    # (14 B per head x query x key) stay cached by the allocator between layers.
    frag += 14.0 / 8.0 * _eager_attention_bytes(setup, cost.sequences)
    if phase != "step" and plain:
        # Gradients freed by zero_grad stay cached in blocks sized per parameter; in the next forward only the
        # autocast copies (half their size) fit in them, the logits and activations need other blocks.
        frag += 0.75 * max(0.0, static.grads - autocast)
    return Peak(_overheads(setup, static, parts, frag), phase, {k: int(v) for k, v in phases.items()})


# ---------------------------------------------------------------------------------------------------------
# The evaluation peak


@dataclass(frozen=True)
class EvalWork:
    """What one evaluation step allocates beyond the static part (bytes)."""

    activations: float  # one layer's no-grad working set, and generation's KV cache
    logits: float
    gathered: float  # predictions and labels kept on the GPU between eval steps
    logits_block: float  # the fp32 logits block the allocator's floor is sized by


def eval_work(setup: TrainSetup, ev: EvalSetup, cost: StageCost) -> EvalWork:
    """An evaluation step (HF Trainer.evaluation_loop / prediction_step) under no_grad with
    `per_device_eval_batch_size`. SFT with `predict_with_generate` generates instead: a KV cache of prompt plus
    `max_new_tokens` (transformers' DynamicCache, 2 x layers x kv_dim x 2 B per token) and the last position's
    logits only. Its generated ids, or `compute_accuracy`'s argmax ids (train/sft/metric.py eval_logit_processor),
    gather on the GPU with the labels (int64, 8 B per token each) until `eval_accumulation_steps` moves them to the
    CPU; without it, for the whole eval set when the config tells its size."""
    arch, seq = setup.arch, setup.sequence_len
    tokens = ev.batch_size * seq * cost.sequences
    layer = no_grad_layer_bytes(setup) * tokens
    layer += _eager_attention_bytes(replace(setup, batch_size=ev.batch_size), cost.sequences)
    if ev.predict_with_generate and setup.stage == "sft":
        cache = 2.0 * arch.num_layers * arch.kv_dim * 2.0 * ev.batch_size * (seq + ev.max_new_tokens)
        logits = 2 * 4.0 * ev.batch_size * arch.vocab_size  # the last position's logits and a processed copy
        per_sample = 8.0 * (2 * seq + ev.max_new_tokens)
        block = 0.0
    else:
        cache = 0.0
        softcap = 2.0 * cost.sequences if arch.logit_softcap else 0.0
        logits = ev.batch_size * seq * arch.vocab_size * (cost.logits.eval + softcap)
        per_sample = 16.0 * seq if (ev.compute_accuracy and setup.stage in ("sft", "pt")) else 0.0
        block = 4.0 * ev.batch_size * seq * arch.vocab_size
    kept = ev.batch_size * (ev.accumulation_steps or 1)
    if ev.accumulation_steps is None and ev.samples is not None:
        kept = max(kept, ev.samples)
    gathered = 0.0 if ev.prediction_loss_only else per_sample * kept
    return EvalWork(layer + cache, logits, gathered, block)


def _eval_peak(setup: TrainSetup, n_train: int, static: Static, cost: StageCost) -> Peak | None:
    """The evaluation step next to the weights, trainable parameters and optimizer states (the optimizer step's
    zero_grad freed the gradients); a run that does not train holds no trainable state."""
    if setup.eval is None:
        return None
    work = eval_work(setup, setup.eval, cost)
    autocast, _ = _transients(setup, static, n_train)
    if not setup.do_train:  # prediction only: the model is loaded for inference, nothing trains
        static = replace(static, params=0.0, opt_states=0.0)
        autocast = 0.0
    parts = {
        "weights": static.weights,
        "trainable_params": static.params,
        "optimizer_states": static.opt_states,
        "autocast_cache": autocast,
        "activations": work.activations,
        "logits_loss": work.logits,
        "eval_predictions": work.gathered,
    }
    parts = {k: v for k, v in parts.items() if v > 0}
    total = sum(parts.values())
    frag = _fragmentation(setup, work.activations + work.logits, work.logits_block)
    return Peak(_overheads(setup, static, parts, frag), "eval", {"eval": int(total)})


def estimate(setup: TrainSetup) -> Estimate:
    """The per-GPU peak of a training step (and of an evaluation step when the run evaluates), by component."""
    n_train = trainable_params(setup)
    cost = stage_cost(setup)
    static = static_memory(setup, n_train)
    evaluation = _eval_peak(setup, n_train, static, cost)
    if not setup.do_train and evaluation is not None:
        return Estimate(setup, None, 0, evaluation)
    return Estimate(setup, _train_peak(setup, n_train, static, cost), n_train, evaluation)
