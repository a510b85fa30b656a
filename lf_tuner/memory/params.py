"""Parameter counts and base-weight bytes: what trains, and what the loaded model weighs.

Pure functions of a TrainSetup / ModelArch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lf_tuner.memory.optimizers import lora_targets
from lf_tuner.memory.vision import extra_trainable, frozen_parts, vision_lora_params

if TYPE_CHECKING:
    from lf_tuner.memory.setup import TrainSetup
    from lf_tuner.models import ModelArch

NF4_BYTES = (
    0.5625  # 4 bit + one fp32 absmax per 64 weights (bitsandbytes functional.quantize_4bit, blocksize 64)
)
NF4_DQ_BYTES = (
    0.516  # double quantization: 8-bit absmax per 64 + fp32 per 256 blocks (QLoRA paper, 4.127 bit)
)
# LLM.int8 (bitsandbytes nn.Int8Params): int8 weight CB (1 B) and one fp32 row scale SCB per output row, which
# adds 4 / in_features B a weight: under 0.2% for hidden >= 2048, left out.
INT8_BYTES = 1.0


def lora_params(setup: TrainSetup) -> int:
    """r * (in + out) per adapted linear layer; MoE experts are 3-D parameters, not nn.Linear, so PEFT skips them.
    A vision tower gets adapters when it is not frozen; `freeze_language_model` keeps them off the language model."""
    arch = setup.arch
    targets = set() if setup.vision.freeze_language_model and arch.vision else lora_targets(setup)
    language = sum(
        setup.lora_rank * (lin.in_features + lin.out_features) * arch.instances(lin)
        for lin in arch.linears()
        if lin.name in targets and not lin.per_expert
    )
    return language + vision_lora_params(arch, setup.vision, setup.lora_rank, setup.lora_target)


def oft_block(setup: TrainSetup, in_features: int) -> int:
    """OFT's block size for one layer (peft/tuners/oft/layer.py update_layer, lines 446-460): `oft_rank` blocks
    when given, else `oft_block_size`, adjusted down to a divisor of in_features."""
    if setup.oft_rank > 0:
        r = setup.oft_rank
        while in_features % r:
            r -= 1
        return in_features // r
    b = min(setup.oft_block_size, in_features)
    while in_features % b:
        b -= 1
    return b


def oft_params(setup: TrainSetup) -> int:
    """OFT (peft OFTRotationModule): per adapted linear, in_features / b blocks of b (b - 1) / 2 skew-symmetric
    entries. LLaMA-Factory 0.9.5 adapts the modules of `lora_target` (model/adapter.py:205-213)."""
    targets = lora_targets(setup)
    per_layer = 0
    for lin in setup.arch.linears():
        if lin.name in targets:
            b = oft_block(setup, lin.in_features)
            per_layer += (lin.in_features // b) * b * (b - 1) // 2
    return per_layer * setup.arch.num_layers


def additional_params(setup: TrainSetup) -> int:
    """Modules trained in full next to the adapters (`additional_target`, e.g. embed_tokens,lm_head)."""
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
    """Parameters the optimizer updates (for BAdam: the block that trains at a time)."""
    arch = setup.arch
    value_head = arch.hidden_size + 1 if setup.stage == "rm" else 0  # trl ValueHead: Linear(hidden, 1)
    if setup.custom_optimizer == "badam" and setup.badam_mode == "layer":
        return arch.layer_params + value_head
    if setup.method == "full":
        return arch.total_params - frozen_parts(arch, setup.vision) + value_head
    if setup.method == "freeze":
        layers = 0 if setup.vision.freeze_language_model else setup.trainable_layers * arch.layer_params
        return layers + extra_trainable(arch, setup.vision, "freeze") + value_head
    adapters = oft_params(setup) if setup.method == "oft" else lora_params(setup)
    return adapters + additional_params(setup) + value_head


def quantized_params(arch: ModelArch) -> int:
    """Decoder linears that are quantized: bitsandbytes leaves MoE experts (3-D parameters in transformers 5) out;
    a GPTQ/AWQ/AQLM/HQQ/EETQ checkpoint has them quantized."""
    if arch.quantization is not None and arch.quantization.experts:
        return arch.linear_params
    return arch.linear_params - arch.expert_params


def base_weight_bytes(arch: ModelArch, bits: int | None, double_quantization: bool = True) -> float:
    """The model as loaded: bf16, or decoder linears quantized (embeddings, lm_head, norms and a vision tower stay
    bf16: transformers' bitsandbytes integration keeps the output layer, `get_keys_to_not_convert`). A
    pre-quantized checkpoint stores its own bytes per weight (scales, zero points and AQLM's codebooks included);
    LLaMA-Factory loads FP8 and MXFP4 ones dequantized to bf16 (`bits` is None then)."""
    quantizable = quantized_params(arch)
    ptq = arch.quantization
    if bits is not None and ptq is not None:
        codebooks = ptq.per_linear_bytes * sum(
            arch.instances(lin) for lin in arch.linears() if ptq.experts or not lin.per_expert
        )
        return quantizable * ptq.bytes_per_weight + (arch.total_params - quantizable) * 2.0 + codebooks
    if bits is None:
        per = 2.0
    elif bits >= 8:
        per = INT8_BYTES
    elif bits == 4:
        per = NF4_DQ_BYTES if double_quantization else NF4_BYTES
    else:
        per = bits / 8 + 0.0625
    return quantizable * per + (arch.total_params - quantizable) * 2.0


def weight_bytes(setup: TrainSetup) -> float:
    """Base weights of the policy as loaded."""
    return base_weight_bytes(setup.arch, setup.quant_bits, setup.double_quantization)
