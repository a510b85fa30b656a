"""The architecture facts the memory model needs, and the parameter counts derived from them.

A `ModelArch` is built from a `config.json` in one of two ways (`models.config`): the fast path computes the
parameter inventory from the config's numbers for the families it knows, and `models.meta` reads it off the model
that transformers builds on the meta device for any other. Both fill the same fields; `tests/test_models_meta.py`
checks that they agree exactly for every family of the fast path.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Linear:
    """One kind of linear layer in the decoder stack (or the vision tower), with PEFT's module name."""

    name: str
    in_features: int
    out_features: int
    bias: bool = False
    per_expert: bool = (
        False  # one per routed expert: a 3-D parameter in transformers 5 (no LoRA, no bitsandbytes)
    )
    layers: int = 0  # how many layers hold it; 0: every layer

    @property
    def params(self) -> int:
        return self.in_features * self.out_features + (self.out_features if self.bias else 0)


@dataclass(frozen=True)
class VisionTower:
    """The vision encoder and projector of a vision-language model, split the way LLaMA-Factory splits them
    (`model/model_utils/visual.py`: COMPOSITE_MODELS' vision_model_keys and projector_keys)."""

    params: int  # the vision tower (frozen by LLaMA-Factory's default `freeze_vision_tower: true`)
    projector_params: int  # the multi-modal projector (`freeze_multi_modal_projector: true` by default)
    linears: tuple[Linear, ...]  # the tower's linear layers, `layers` = how many blocks hold each
    hidden_size: int
    depth: int
    intermediate_size: int
    patch_size: int
    merge_size: int = 1  # patches merged into one LLM token per side (Qwen-VL: 2, so 4 patches a token)
    temporal_patch_size: int = 1  # video frames per patch (Qwen-VL: 2)
    image_size: int = 0  # fixed input resolution (SigLIP: 896); 0 when the tower takes any resolution
    tokens_per_image: int = 0  # fixed LLM tokens per image (Gemma 3: 256); 0 when it follows the pixels


@dataclass(frozen=True)
class Quantization:
    """A pre-quantized checkpoint's `quantization_config`, as LLaMA-Factory 0.9.5 loads it."""

    method: str  # gptq, awq, aqlm, bitsandbytes, eetq, hqq, fp8, mxfp4
    bits: float  # bits per quantized weight in the checkpoint
    bytes_per_weight: float  # bytes per quantized weight as loaded, scales and zero points included
    dequantized: bool = False  # LLaMA-Factory loads MXFP4 and FP8 checkpoints dequantized (bf16)
    experts: bool = True  # expert weights quantized too (bitsandbytes skips transformers' 3-D expert tensors)
    per_linear_bytes: float = 0.0  # fixed bytes per quantized linear layer (AQLM's codebooks)

    @property
    def label(self) -> str:
        if self.dequantized:
            return f"{self.method} (dequantized to bf16 on load)"
        return f"{self.method} {self.bits:g}-bit"


@dataclass(frozen=True)
class ModelArch:
    """Facts from a checkpoint's config.json and the parameter inventory derived from it.

    The text facts (hidden size, heads, experts...) drive the activation model; the inventory (`layer_linears`,
    the embeddings, the rest of the decoder and the vision tower) gives every parameter count.
    """

    name: str  # what the user passed: a Hub id, a catalog name or a path
    model_type: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    vocab_size: int
    tie_embeddings: bool
    max_positions: int
    layer_linears: tuple[Linear, ...]
    embedding_params: int  # input embeddings (and any other embedding tables of the language model)
    lm_head_params: int  # 0 when tied to the input embeddings
    layer_other_params: int  # decoder-layer parameters outside linear layers (norms, router biases, convs...)
    other_params: int  # language-model parameters outside the layers and embeddings (the final norm...)
    head_dim: int = 0  # 0: hidden_size // num_heads
    num_experts: int = 0
    experts_per_token: int = 0
    moe_intermediate_size: int = 0
    logit_softcap: bool = False  # Gemma 2: final_logit_softcapping
    vision: VisionTower | None = None
    quantization: Quantization | None = None
    template: str = "default"
    hf_id: str = ""
    derived_by: str = "config"  # "config": the fast path; "transformers": the model built on the meta device
    source: str = ""  # where its config.json came from (a path, the Hugging Face cache, the catalog...)
    notes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def hd(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.hd

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.hd

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def mlp_size(self) -> int:
        """Intermediate size of the MLP a token passes through (one expert for MoE)."""
        return self.moe_intermediate_size if self.is_moe else self.intermediate_size

    def linears(self) -> list[Linear]:
        """The linear layer kinds of the decoder stack (each in `layers` layers, or all)."""
        return list(self.layer_linears)

    def layers_of(self, lin: Linear) -> int:
        """How many decoder layers hold this linear layer."""
        return lin.layers or self.num_layers

    def instances(self, lin: Linear) -> int:
        """How many copies of this linear layer the model holds (experts included)."""
        return self.layers_of(lin) * (self.num_experts if lin.per_expert else 1)

    @property
    def linear_params(self) -> int:
        """Parameters in decoder-layer linear layers (experts included)."""
        return sum(lin.params * self.instances(lin) for lin in self.layer_linears)

    @property
    def expert_params(self) -> int:
        return sum(lin.params * self.instances(lin) for lin in self.layer_linears if lin.per_expert)

    def norm_params_per_layer(self) -> int:
        return round(self.layer_other_params / self.num_layers)

    @property
    def layer_params(self) -> int:
        """Parameters of one decoder layer (the mean, for stacks whose layers differ)."""
        return round((self.linear_params + self.layer_other_params) / self.num_layers)

    @property
    def language_params(self) -> int:
        """The language model: embeddings, decoder layers, final norm and an untied lm_head."""
        return (
            self.embedding_params
            + self.lm_head_params
            + self.linear_params
            + self.layer_other_params
            + self.other_params
        )

    @property
    def vision_params(self) -> int:
        return self.vision.params if self.vision else 0

    @property
    def projector_params(self) -> int:
        return self.vision.projector_params if self.vision else 0

    @property
    def total_params(self) -> int:
        """Distinct parameters as loaded (tied embeddings counted once), vision tower and projector included."""
        return self.language_params + self.vision_params + self.projector_params

    @property
    def active_params(self) -> int:
        """Parameters a token passes through (MoE: only the routed experts)."""
        if not self.is_moe:
            return self.total_params
        idle_share = (self.num_experts - self.experts_per_token) / self.num_experts
        return self.total_params - round(self.expert_params * idle_share)
