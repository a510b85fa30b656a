"""The architecture facts the memory model needs, and parameter counts derived from them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Linear:
    """One linear layer kind inside a decoder block (counted once per layer, or per expert)."""

    name: str
    in_features: int
    out_features: int
    bias: bool = False
    per_expert: bool = False

    @property
    def params(self) -> int:
        return self.in_features * self.out_features + (self.out_features if self.bias else 0)


@dataclass(frozen=True)
class ModelArch:
    """Facts from a checkpoint's config.json (decoder-only transformer with gated MLP)."""

    name: str
    model_type: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    vocab_size: int
    tie_embeddings: bool
    max_positions: int
    head_dim: int = 0  # 0: hidden_size // num_heads
    num_experts: int = 0
    experts_per_token: int = 0
    moe_intermediate_size: int = 0
    qkv_bias: bool = False
    qk_norm: bool = False
    norms_per_layer: int = 2
    fused_qkv: bool = False
    fused_gate_up: bool = False
    logit_softcap: bool = False  # Gemma 2: final_logit_softcapping
    extra_frozen_params: int = 0  # e.g. a vision tower that LLaMA-Factory keeps frozen
    template: str = "default"
    hf_id: str = ""
    published_params: int = 0
    aliases: tuple[str, ...] = field(default_factory=tuple)

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
        """The linear layers of one decoder block, with LLaMA-Factory/PEFT module names."""
        h, b = self.hidden_size, self.qkv_bias
        if self.fused_qkv:
            attn = [Linear("qkv_proj", h, self.q_dim + 2 * self.kv_dim, b)]
        else:
            attn = [
                Linear("q_proj", h, self.q_dim, b),
                Linear("k_proj", h, self.kv_dim, b),
                Linear("v_proj", h, self.kv_dim, b),
            ]
        attn.append(Linear("o_proj", self.q_dim, h))
        f, moe = self.mlp_size, self.is_moe
        if self.fused_gate_up:
            mlp = [Linear("gate_up_proj", h, 2 * f, per_expert=moe)]
        else:
            mlp = [Linear("gate_proj", h, f, per_expert=moe), Linear("up_proj", h, f, per_expert=moe)]
        mlp.append(Linear("down_proj", f, h, per_expert=moe))
        if moe:
            mlp.append(Linear("gate", h, self.num_experts))  # the router
        return attn + mlp

    def linear_params_per_layer(self) -> int:
        return sum(lin.params * (self.num_experts if lin.per_expert else 1) for lin in self.linears())

    def norm_params_per_layer(self) -> int:
        return self.norms_per_layer * self.hidden_size + (2 * self.hd if self.qk_norm else 0)

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        return 0 if self.tie_embeddings else self.vocab_size * self.hidden_size

    @property
    def linear_params(self) -> int:
        """Parameters in decoder-block linear layers: the ones bitsandbytes quantizes."""
        return self.num_layers * self.linear_params_per_layer()

    @property
    def layer_params(self) -> int:
        return self.linear_params_per_layer() + self.norm_params_per_layer()

    @property
    def total_params(self) -> int:
        """Distinct parameters (tied embeddings counted once), extra frozen towers included."""
        return (
            self.embedding_params
            + self.lm_head_params
            + self.num_layers * self.layer_params
            + self.hidden_size  # final norm
            + self.extra_frozen_params
        )

    @property
    def active_params(self) -> int:
        """Parameters a token passes through (MoE: only the routed experts)."""
        if not self.is_moe:
            return self.total_params
        expert = sum(lin.params for lin in self.linears() if lin.per_expert)
        idle = self.num_layers * expert * (self.num_experts - self.experts_per_token)
        return self.total_params - idle
