"""From a config.json to a ModelArch: the one path every config takes (a user's, a cached one, a catalog entry).

The fast path (no torch) computes the parameter inventory for the families in `FAMILIES` from the config's
numbers, each rule written from that family's transformers modeling code. Any other `model_type` goes to
`models.meta`, which builds the model with transformers on the meta device. `tests/test_models_meta.py` holds the
fast path to the meta-device model, exactly, for every family here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from lf_tuner.errors import LfTunerError
from lf_tuner.models.arch import Linear, ModelArch, Quantization, VisionTower

_REQUIRED = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")


@dataclass(frozen=True)
class Family:
    """How one transformers text-decoder family lays out its parameters.

    A bias is True, False or the name of the config key that switches it. `defaults` are the values the
    family's transformers config class takes when config.json leaves a key out (a test checks them against
    transformers).
    """

    qkv_bias: bool | str = False
    o_bias: bool | str = False
    mlp_bias: bool | str = False
    qk_norm: str = (
        ""  # "head": q_norm/k_norm over head_dim (Qwen3, Gemma 3); "full": over q_dim/kv_dim (OLMo 2)
    )
    norms: int = 2  # RMSNorms per layer
    fused_qkv: bool = False
    fused_gate_up: bool = False
    moe: str = ""  # "mixtral", "qwen2_moe", "qwen3_moe"
    vision: str = ""  # "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "siglip"
    defaults: dict[str, Any] = field(default_factory=dict)


_LLAMA_DEFAULTS = {"tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False}
_LLAMA = Family(
    qkv_bias="attention_bias", o_bias="attention_bias", mlp_bias="mlp_bias", defaults=_LLAMA_DEFAULTS
)
_GEMMA3_TEXT = Family(
    qkv_bias="attention_bias",
    o_bias="attention_bias",
    qk_norm="head",
    norms=4,
    defaults={"tie_word_embeddings": True, "attention_bias": False, "head_dim": 256},
)
_QWEN3 = Family(
    qkv_bias="attention_bias",
    o_bias="attention_bias",
    qk_norm="head",
    defaults={"tie_word_embeddings": False, "attention_bias": False, "head_dim": 128},
)
_QWEN3_MOE = Family(
    qkv_bias="attention_bias",
    o_bias="attention_bias",
    qk_norm="head",
    moe="qwen3_moe",
    defaults={"tie_word_embeddings": False, "attention_bias": False, "decoder_sparse_step": 1},
)

# model_type -> family. The multimodal ones read their text part from `text_config`.
FAMILIES: dict[str, Family] = {
    "llama": _LLAMA,
    "mistral": Family(defaults={"tie_word_embeddings": False}),
    "mixtral": Family(moe="mixtral", defaults={"tie_word_embeddings": False}),
    "qwen2": Family(qkv_bias=True, defaults={"tie_word_embeddings": False}),
    "qwen2_moe": Family(
        qkv_bias="qkv_bias",
        moe="qwen2_moe",
        defaults={"tie_word_embeddings": False, "qkv_bias": True, "decoder_sparse_step": 1},
    ),
    "qwen3": _QWEN3,
    "qwen3_moe": _QWEN3_MOE,
    "gemma": Family(
        qkv_bias="attention_bias",
        o_bias="attention_bias",
        defaults={"tie_word_embeddings": True, "attention_bias": False, "head_dim": 256},
    ),
    "gemma2": Family(
        qkv_bias="attention_bias",
        o_bias="attention_bias",
        norms=4,
        defaults={"tie_word_embeddings": True, "attention_bias": False, "head_dim": 256},
    ),
    "gemma3_text": _GEMMA3_TEXT,
    "phi3": Family(fused_qkv=True, fused_gate_up=True, defaults={"tie_word_embeddings": False}),
    "glm": Family(
        qkv_bias="attention_bias",
        fused_gate_up=True,
        defaults={"tie_word_embeddings": False, "attention_bias": True, "head_dim": 128},
    ),
    "glm4": Family(
        qkv_bias="attention_bias",
        fused_gate_up=True,
        norms=4,
        defaults={"tie_word_embeddings": False, "attention_bias": True, "head_dim": 128},
    ),
    "granite": _LLAMA,
    "seed_oss": Family(
        qkv_bias="attention_bias",
        o_bias="attention_out_bias",
        mlp_bias="mlp_bias",
        defaults={
            "tie_word_embeddings": False,
            "attention_bias": True,
            "attention_out_bias": False,
            "mlp_bias": False,
            "head_dim": 128,
        },
    ),
    "smollm3": replace(_LLAMA, defaults={**_LLAMA_DEFAULTS, "tie_word_embeddings": True}),
    "olmo2": Family(
        qkv_bias="attention_bias",
        o_bias="attention_bias",
        qk_norm="full",
        defaults={"tie_word_embeddings": False, "attention_bias": False},
    ),
    # vision-language: the text decoder of the family named, plus the vision tower
    "gemma3": replace(_GEMMA3_TEXT, vision="siglip"),
    "qwen2_vl": Family(qkv_bias=True, vision="qwen2_vl", defaults={"tie_word_embeddings": False}),
    "qwen2_5_vl": Family(qkv_bias=True, vision="qwen2_5_vl", defaults={"tie_word_embeddings": False}),
    "qwen3_vl": replace(_QWEN3, vision="qwen3_vl"),
    "qwen3_vl_moe": replace(_QWEN3_MOE, vision="qwen3_vl"),
}

# LLaMA-Factory's chat template per model family, for configs whose Hub id LLaMA-Factory does not register.
_TEMPLATE_BY_TYPE = {
    "qwen2": "qwen",
    "qwen2_moe": "qwen",
    "qwen3": "qwen3",
    "qwen3_moe": "qwen3",
    "qwen2_vl": "qwen2_vl",
    "qwen2_5_vl": "qwen2_vl",
    "qwen3_vl": "qwen3_vl",
    "qwen3_vl_moe": "qwen3_vl",
    "mistral": "mistral",
    "mixtral": "mistral",
    "gemma": "gemma",
    "gemma2": "gemma",
    "gemma3": "gemma3",
    "gemma3_text": "gemma3",
    "phi3": "phi",
    "glm": "glm4",
    "glm4": "glm4",
    "granite": "granite3",
    "seed_oss": "seed_oss",
    "smollm3": "smollm",
    "olmo2": "olmo",
    "deepseek_v3": "deepseek3",
}


def template_for(model_type: str, vocab_size: int) -> str:
    """LLaMA-Factory's template for a model family; `default` when the family is unknown."""
    if model_type == "llama":
        return "llama3" if vocab_size >= 128_000 else "llama2"
    if model_type == "phi3" and vocab_size >= 100_000:
        return "phi4"
    return _TEMPLATE_BY_TYPE.get(model_type, "default")


def text_config(raw: dict[str, Any]) -> dict[str, Any]:
    """The language model's part of a config: `text_config` over the top level (vision-language configs)."""
    text = raw.get("text_config")
    if not isinstance(text, dict):
        return raw
    top = {k: v for k, v in raw.items() if k not in ("text_config", "vision_config", "model_type")}
    return {**top, **text}


def arch_from_config(
    raw: dict[str, Any], name: str, *, template: str | None = None, hf_id: str = "", source: str = ""
) -> ModelArch:
    """The architecture of a config.json: the fast path for the families it knows, else transformers."""
    if not isinstance(raw, dict):
        raise LfTunerError(f"{name}: config.json is not a JSON object; pass a model's config.json")
    model_type = str(raw.get("model_type") or "")
    quant = quantization_from_config(raw, name)
    if model_type in FAMILIES:
        arch = _fast_path(raw, name, FAMILIES[model_type])
    else:
        from lf_tuner.models.meta import arch_from_transformers

        arch = arch_from_transformers(raw, name)
    text = text_config(raw)
    return replace(
        arch,
        quantization=quant,
        template=template or template_for(str(text.get("model_type", model_type)), arch.vocab_size),
        hf_id=hf_id,
        source=source,
    )


# --------------------------------------------------------------------------------------------------------
# The fast path


def _int(cfg: dict[str, Any], key: str, default: int = 0) -> int:
    value = cfg.get(key)
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


def _flag(cfg: dict[str, Any], fam: Family, rule: bool | str) -> bool:
    if isinstance(rule, bool):
        return rule
    return bool(cfg.get(rule, fam.defaults.get(rule, False)))


def _fast_path(raw: dict[str, Any], name: str, fam: Family) -> ModelArch:
    cfg = text_config(raw)
    missing = [key for key in _REQUIRED if not _int(cfg, key) > 0]
    if missing:
        fields = ", ".join(f"`{k}`" for k in missing)
        raise LfTunerError(
            f"{name}: config.json lacks {fields} (needed for the memory model); use the checkpoint's own "
            "config.json, or a model name from `lf-tuner models`"
        )
    h, layers, heads = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]
    kv_heads = _int(cfg, "num_key_value_heads", heads)
    head_dim = _int(cfg, "head_dim", _int(fam.defaults, "head_dim")) or h // heads
    vocab, f = cfg["vocab_size"], cfg["intermediate_size"]
    q, kv = heads * head_dim, kv_heads * head_dim
    qkv_b, o_b, mlp_b = (
        _flag(cfg, fam, fam.qkv_bias),
        _flag(cfg, fam, fam.o_bias),
        _flag(cfg, fam, fam.mlp_bias),
    )

    linears: list[Linear] = []
    if fam.fused_qkv:
        linears.append(Linear("qkv_proj", h, q + 2 * kv, qkv_b))
    else:
        linears += [
            Linear("q_proj", h, q, qkv_b),
            Linear("k_proj", h, kv, qkv_b),
            Linear("v_proj", h, kv, qkv_b),
        ]
    linears.append(Linear("o_proj", q, h, o_b))
    other = fam.norms * h * layers
    if fam.qk_norm == "head":
        other += 2 * head_dim * layers
    elif fam.qk_norm == "full":
        other += (q + kv) * layers

    experts = top_k = moe_f = 0
    if fam.moe:
        experts, top_k, moe_f, moe_linears, moe_other = _moe(cfg, fam, h, f, layers)
        linears += moe_linears
        other += moe_other
    elif fam.fused_gate_up:
        linears += [Linear("gate_up_proj", h, 2 * f, mlp_b), Linear("down_proj", f, h, mlp_b)]
    else:
        linears += [
            Linear("gate_proj", h, f, mlp_b),
            Linear("up_proj", h, f, mlp_b),
            Linear("down_proj", f, h, mlp_b),
        ]

    tied = bool(
        raw.get("tie_word_embeddings", cfg.get("tie_word_embeddings", fam.defaults["tie_word_embeddings"]))
    )
    vision = _vision(raw, fam, h) if fam.vision else None
    return ModelArch(
        name=name,
        model_type=str(raw.get("model_type")),
        hidden_size=h,
        intermediate_size=f,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=vocab,
        tie_embeddings=tied,
        max_positions=_int(cfg, "max_position_embeddings") or _int(cfg, "seq_length"),
        layer_linears=tuple(linears),
        embedding_params=vocab * h,
        lm_head_params=0 if tied else vocab * h,
        layer_other_params=other,
        other_params=h,  # the final norm
        num_experts=experts,
        experts_per_token=top_k,
        moe_intermediate_size=moe_f,
        logit_softcap=bool(cfg.get("final_logit_softcapping")),
        vision=vision,
    )


def _moe(
    cfg: dict[str, Any], fam: Family, h: int, f: int, layers: int
) -> tuple[int, int, int, list[Linear], int]:
    """Experts (3-D parameters in transformers 5), the router and any dense or shared MLPs."""
    experts = _int(cfg, "num_local_experts") or _int(cfg, "num_experts")
    top_k = _int(cfg, "num_experts_per_tok")
    moe_f = f if fam.moe == "mixtral" else _int(cfg, "moe_intermediate_size", f)
    sparse = layers
    if fam.moe in ("qwen2_moe", "qwen3_moe"):
        # transformers: a layer is sparse when it is not in mlp_only_layers and (i + 1) % decoder_sparse_step == 0
        step = _int(cfg, "decoder_sparse_step", fam.defaults.get("decoder_sparse_step", 1))
        dense_only = set(cfg.get("mlp_only_layers") or [])
        sparse = sum(1 for i in range(layers) if i not in dense_only and step > 0 and (i + 1) % step == 0)
    dense = layers - sparse
    linears = [
        Linear("gate_up_proj", h, 2 * moe_f, per_expert=True, layers=sparse),
        Linear("down_proj", moe_f, h, per_expert=True, layers=sparse),
    ]
    other = experts * h * sparse  # the router's weight (a parameter, not nn.Linear, in transformers 5)
    if fam.moe == "qwen2_moe":
        shared = _int(cfg, "shared_expert_intermediate_size")
        linears += [
            Linear("gate_proj", h, shared, layers=sparse),
            Linear("up_proj", h, shared, layers=sparse),
            Linear("down_proj", shared, h, layers=sparse),
            Linear("shared_expert_gate", h, 1, layers=sparse),
        ]
    if dense:
        linears += [
            Linear("gate_proj", h, f, layers=dense),
            Linear("up_proj", h, f, layers=dense),
            Linear("down_proj", f, h, layers=dense),
        ]
    return experts, top_k, moe_f, linears, other


# --------------------------------------------------------------------------------------------------------
# Vision towers (transformers' modeling code of each family; LLaMA-Factory's split into tower and projector)


def _vision(raw: dict[str, Any], fam: Family, text_hidden: int) -> VisionTower:
    vc = raw.get("vision_config") or {}
    if fam.vision == "siglip":
        return _siglip(raw, vc, text_hidden)
    return _qwen_vision(vc, fam.vision, text_hidden)


def _qwen_vision(vc: dict[str, Any], kind: str, text_hidden: int) -> VisionTower:
    """Qwen2-VL, Qwen2.5-VL and Qwen3-VL vision transformers; the projector is `visual.merger`."""
    depth = _int(vc, "depth", 32)
    e = _int(vc, "embed_dim") if kind == "qwen2_vl" else _int(vc, "hidden_size")
    e = e or 1280
    patch = _int(vc, "patch_size", 16 if kind == "qwen3_vl" else 14)
    temporal = _int(vc, "temporal_patch_size", 2)
    merge = _int(vc, "spatial_merge_size", 2)
    channels = _int(vc, "in_channels", _int(vc, "in_chans", 3))
    if kind == "qwen2_vl":  # its vision config's hidden_size is the language model's width
        out = _int(vc, "hidden_size", text_hidden)
        inter = e * _int(vc, "mlp_ratio", 4)
        mlp = [Linear("fc1", e, inter, True, layers=depth), Linear("fc2", inter, e, True, layers=depth)]
        norm = 2 * e  # LayerNorm: weight and bias
    elif kind == "qwen2_5_vl":
        inter = _int(vc, "intermediate_size", 3420)
        mlp = [
            Linear("gate_proj", e, inter, True, layers=depth),
            Linear("up_proj", e, inter, True, layers=depth),
            Linear("down_proj", inter, e, True, layers=depth),
        ]
        norm = e  # RMSNorm
        out = _int(vc, "out_hidden_size", text_hidden)
    else:
        inter = _int(vc, "intermediate_size", 4304)
        mlp = [
            Linear("linear_fc1", e, inter, True, layers=depth),
            Linear("linear_fc2", inter, e, True, layers=depth),
        ]
        norm = 2 * e
        out = _int(vc, "out_hidden_size", text_hidden)
    attn = [Linear("qkv", e, 3 * e, True, layers=depth), Linear("proj", e, e, True, layers=depth)]
    linears = attn + mlp
    tower = channels * temporal * patch * patch * e + depth * 2 * norm
    tower += sum(lin.params * lin.layers for lin in linears)
    merged = e * merge * merge
    merger = [Linear("mlp.0", merged, merged, True), Linear("mlp.2", merged, out, True)]
    projector = norm + sum(lin.params for lin in merger)
    if kind == "qwen3_vl":
        tower += e + _int(vc, "num_position_embeddings", 2304) * e  # the patch embedding's bias, pos_embed
        deepstack = len(vc.get("deepstack_visual_indexes") or [8, 16, 24])
        tower += deepstack * (2 * merged + merged * merged + merged + merged * out + out)  # norm over merged
        linears += [
            Linear("linear_fc1", merged, merged, True, layers=deepstack),
            Linear("linear_fc2", merged, out, True, layers=deepstack),
        ]
    return VisionTower(
        params=tower,
        projector_params=projector,
        linears=tuple(linears),
        hidden_size=e,
        depth=depth,
        intermediate_size=inter,
        patch_size=patch,
        merge_size=merge,
        temporal_patch_size=temporal,
    )


def _siglip(raw: dict[str, Any], vc: dict[str, Any], text_hidden: int) -> VisionTower:
    """Gemma 3's SigLIP encoder (`vision_tower`) and its `multi_modal_projector`."""
    e = _int(vc, "hidden_size", 1152)
    inter = _int(vc, "intermediate_size", 4304)
    depth = _int(vc, "num_hidden_layers", 27)
    patch = _int(vc, "patch_size", 14)
    size = _int(vc, "image_size", 896)
    channels = _int(vc, "num_channels", 3)
    linears = [Linear(n, e, e, True, layers=depth) for n in ("q_proj", "k_proj", "v_proj", "out_proj")] + [
        Linear("fc1", e, inter, True, layers=depth),
        Linear("fc2", inter, e, True, layers=depth),
    ]
    tower = channels * patch * patch * e + e + (size // patch) ** 2 * e  # patch and position embeddings
    tower += depth * 2 * (2 * e) + 2 * e  # two LayerNorms per layer, post_layernorm
    tower += sum(lin.params * lin.layers for lin in linears)
    if vc.get("vision_use_head", True):  # SiglipVisionConfig's default; Gemma 3's configs say false
        head = [Linear("out_proj", e, e, True), Linear("fc1", e, inter, True), Linear("fc2", inter, e, True)]
        tower += e + 3 * e * e + 3 * e + 2 * e + sum(lin.params for lin in head)  # probe, in_proj, layernorm
        linears += head
    return VisionTower(
        params=tower,
        projector_params=e * text_hidden + e,  # mm_input_projection_weight and mm_soft_emb_norm
        linears=tuple(linears),
        hidden_size=e,
        depth=depth,
        intermediate_size=inter,
        patch_size=patch,
        image_size=size,
        tokens_per_image=_int(raw, "mm_tokens_per_image", 256),
    )


# --------------------------------------------------------------------------------------------------------
# Pre-quantized checkpoints


def quantization_from_config(raw: dict[str, Any], name: str) -> Quantization | None:
    """A checkpoint's `quantization_config` as LLaMA-Factory 0.9.5 loads it (model_utils/quantization.py)."""
    qc = raw.get("quantization_config")
    if qc is None:
        text = raw.get("text_config")
        qc = text.get("quantization_config") if isinstance(text, dict) else None
    if not isinstance(qc, dict):
        return None
    method = str(qc.get("quant_method", "")).lower()
    group = _int(qc, "group_size", 128)
    if method in ("gptq", "awq"):
        bits = _int(qc, "bits", _int(qc, "w_bit", 4))
        per_group = 2 + bits / 8  # an fp16 scale and a packed zero point per group of weights
        return Quantization(method, bits, bits / 8 + (per_group / group if group > 0 else 0.0))
    if method == "aqlm":
        # codes of nbits_per_codebook bits per in_group_size x out_group_size weights, per codebook
        nbits, books = _int(qc, "nbits_per_codebook", 16), _int(qc, "num_codebooks", 1)
        weights = _int(qc, "in_group_size", 8) * _int(qc, "out_group_size", 1)
        code_bits = nbits * books / weights
        codebooks = books * 2**nbits * weights * 2.0  # fp16 codebooks of every quantized layer
        return Quantization(method, code_bits, code_bits / 8, per_linear_bytes=codebooks)
    if method == "bitsandbytes":
        if qc.get("load_in_4bit"):
            double = bool(qc.get("bnb_4bit_use_double_quant", False))
            return Quantization(method, 4, 0.516 if double else 0.5625, experts=False)
        if qc.get("load_in_8bit"):
            return Quantization(method, 8, 1.0, experts=False)
    if method == "eetq":
        return Quantization(method, 8, 1.0)
    if method == "hqq":
        bits = _int(qc, "nbits", 4)
        group = _int(qc, "group_size", 64)
        return Quantization(method, bits, bits / 8 + 4 / group)  # fp16 scale and zero per group
    if method in ("fp8", "mxfp4"):
        # LLaMA-Factory passes FineGrainedFP8Config / Mxfp4Config(dequantize=True): bf16 weights on the GPU
        return Quantization(method, 8 if method == "fp8" else 4, 2.0, dequantized=True)
    raise LfTunerError(
        f"{name}: quantization_config with quant_method `{method or '?'}` is not modelled (lf-tuner knows gptq, "
        "awq, aqlm, bitsandbytes, eetq, hqq, fp8 and mxfp4); estimate the unquantized checkpoint instead"
    )
