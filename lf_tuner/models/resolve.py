"""Turn what the user passed to `--model` into a ModelArch: a catalog name, a model directory or a config.json."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from lf_tuner.errors import LfTunerError, closest
from lf_tuner.models.arch import ModelArch
from lf_tuner.models.catalog import CATALOG

_SUFFIXES = re.compile(r"-(instruct|chat|it|pt|base|hf)$")
_REQUIRED = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
_TIED_BY_DEFAULT = ("gemma", "gemma2", "gemma3", "gemma3_text")
_FUSED_QKV = ("phi3",)
_FUSED_GATE_UP = ("phi3", "glm")
_QKV_BIAS = ("qwen2", "qwen2_moe", "qwen2_vl")
# LLaMA-Factory's chat template per model family (the catalog names it per checkpoint).
_TEMPLATE_BY_TYPE = {
    "qwen2": "qwen",
    "qwen2_moe": "qwen",
    "qwen3": "qwen3",
    "qwen3_moe": "qwen3",
    "mistral": "mistral",
    "mixtral": "mistral",
    "gemma": "gemma",
    "gemma2": "gemma",
    "gemma3": "gemma3",
    "gemma3_text": "gemma3",
    "phi3": "phi",
    "glm": "glm4",
    "glm4": "glm4",
    "deepseek_v3": "deepseek3",
}


def template_for(model_type: str, vocab_size: int) -> str:
    """LLaMA-Factory's template for a model family; `default` when the family is unknown."""
    if model_type == "llama":
        return "llama3" if vocab_size >= 128_000 else "llama2"
    if model_type == "phi3" and vocab_size >= 100_000:
        return "phi4"
    return _TEMPLATE_BY_TYPE.get(model_type, "default")


def _key(name: str) -> str:
    """Lower case without the organisation and the chat/instruct suffixes."""
    key = name.strip().lower().rsplit("/", 1)[-1]
    while True:
        stripped = _SUFFIXES.sub("", key)
        if stripped == key:
            return key
        key = stripped


@cache
def catalog() -> dict[str, ModelArch]:
    """Lookup key -> architecture, for every catalog name and alias."""
    table: dict[str, ModelArch] = {}
    for arch in CATALOG:
        for name in (arch.name, arch.hf_id, *arch.aliases):
            if name:
                table.setdefault(_key(name), arch)
    return table


def resolve_model(spec: str) -> ModelArch:
    """A catalog name (case-insensitive, with or without org and -Instruct), a model directory or a config.json."""
    path = Path(spec).expanduser()
    if path.is_dir():
        config = path / "config.json"
        if not config.is_file():
            raise LfTunerError(
                f"{path} has no config.json; pass the directory of a downloaded Hugging Face model "
                "(the one holding config.json) or a catalog name from `lf-tuner models`"
            )
        return from_config_file(config)
    if path.suffix == ".json" or path.is_file():
        if not path.is_file():
            raise LfTunerError(f"{path} does not exist; pass an existing config.json or model directory")
        return from_config_file(path)
    arch = catalog().get(_key(spec))
    if arch is not None:
        return arch
    names = sorted({a.name for a in CATALOG})
    near = closest(_key(spec), catalog().keys(), n=3, cutoff=0.5)
    hint = ""
    if near:
        hint = " Closest: " + ", ".join(sorted({catalog()[k].name for k in near})) + "."
    raise LfTunerError(
        f"unknown model `{spec}`.{hint} Pass a local model directory (with config.json) "
        f"or one of the {len(names)} names in `lf-tuner models`."
    )


def from_config_file(path: Path) -> ModelArch:
    """Read a Hugging Face config.json."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LfTunerError(f"{path}: cannot read it as JSON ({exc}); pass a model's config.json") from exc
    if not isinstance(raw, dict):
        raise LfTunerError(f"{path}: expected a JSON object; pass a model's config.json")
    return from_config(raw, name=path.parent.name or str(path))


def from_config(raw: dict[str, Any], name: str) -> ModelArch:
    """Architecture facts from a config dict; multimodal configs use their text_config."""
    model_type = str(raw.get("model_type", "unknown"))
    cfg = dict(raw)
    text = raw.get("text_config")
    if isinstance(text, dict):
        cfg = {**text, "tie_word_embeddings": raw.get("tie_word_embeddings", text.get("tie_word_embeddings"))}
    missing = [key for key in _REQUIRED if not isinstance(cfg.get(key), int) or cfg[key] <= 0]
    if missing:
        fields = ", ".join(f"`{k}`" for k in missing)
        raise LfTunerError(
            f"{name}: config.json lacks {fields} (needed for the memory model); use the checkpoint's own "
            "config.json, or a catalog name from `lf-tuner models`"
        )
    heads = cfg["num_attention_heads"]
    experts = int(cfg.get("num_experts") or cfg.get("num_local_experts") or cfg.get("n_routed_experts") or 0)
    tied = cfg.get("tie_word_embeddings")
    if tied is None:
        tied = model_type in _TIED_BY_DEFAULT
    mt = str(cfg.get("model_type", model_type))
    return ModelArch(
        name=name,
        model_type=model_type,
        hidden_size=cfg["hidden_size"],
        intermediate_size=cfg["intermediate_size"],
        num_layers=cfg["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
        head_dim=int(cfg.get("head_dim") or 0),
        vocab_size=cfg["vocab_size"],
        tie_embeddings=bool(tied),
        max_positions=int(cfg.get("max_position_embeddings") or cfg.get("seq_length") or 0),
        num_experts=experts,
        experts_per_token=int(cfg.get("num_experts_per_tok") or 0) if experts else 0,
        moe_intermediate_size=int(cfg.get("moe_intermediate_size") or cfg["intermediate_size"])
        if experts
        else 0,
        qkv_bias=bool(cfg.get("attention_bias") or cfg.get("qkv_bias") or mt in _QKV_BIAS),
        qk_norm=mt.startswith(("qwen3", "gemma3")),
        norms_per_layer=4 if mt.startswith("gemma") else 2,
        fused_qkv=mt in _FUSED_QKV,
        fused_gate_up=mt in _FUSED_GATE_UP,
        logit_softcap=bool(cfg.get("final_logit_softcapping")),
        template=template_for(mt, cfg["vocab_size"]),
    )
