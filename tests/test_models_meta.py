"""The fast path against transformers' own model built on the meta device: equal, for every family it knows.

Runs where transformers is installed (the train extra, as in CI). For each family of the fast path: every
architecture in the catalog (real sizes) and a minimal config that leaves every optional key to the family's
defaults. Equal means the same total, the same embeddings / lm_head / other parameters, and the same multiset
of linear layers (name, in, out, bias, copies), vision tower and projector included.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from lf_tuner.errors import LfTunerError
from lf_tuner.models import FAMILIES, ModelArch, resolve_model
from lf_tuner.models.catalog import entries
from lf_tuner.models.config import _fast_path, text_config
from lf_tuner.models.meta import _arch, arch_from_transformers, cache_path, derive
from tests.tiny import SMALL_TEXT, SMALL_VISION

pytest.importorskip("transformers")

_MOE = {"num_experts": 4, "num_local_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
        "shared_expert_intermediate_size": 48}  # fmt: skip


def _minimal(model_type: str) -> dict[str, Any]:
    """The smallest config of a family: every optional key left to the family's default."""
    family = FAMILIES[model_type]
    text = dict(SMALL_TEXT, **(_MOE if family.moe else {}))
    if not family.vision:
        return {"model_type": model_type, **text}
    return {"model_type": model_type, "text_config": text, "vision_config": SMALL_VISION[family.vision]}


def _cases() -> list[tuple[str, dict[str, Any]]]:
    """Every distinct architecture of the fast path in the catalog, and a minimal config per family."""
    cases: dict[str, tuple[str, dict[str, Any]]] = {}
    for item in entries():
        config = {
            k: v
            for k, v in item.config.items()
            if k not in ("quantization_config", "max_position_embeddings")
        }
        if config.get("model_type") in FAMILIES:
            cases.setdefault(json.dumps(config, sort_keys=True), (item.key, config))
    variants = {
        "llama+biases": {"model_type": "llama", **SMALL_TEXT, "attention_bias": True, "mlp_bias": True},
        "granite+biases": {"model_type": "granite", **SMALL_TEXT, "attention_bias": True, "mlp_bias": True},
        "qwen3_moe+dense layers": {"model_type": "qwen3_moe", **SMALL_TEXT, **_MOE, "num_hidden_layers": 4,
                                   "mlp_only_layers": [0], "decoder_sparse_step": 2},
        "qwen2_moe+dense layers": {"model_type": "qwen2_moe", **SMALL_TEXT, **_MOE, "num_hidden_layers": 3,
                                   "mlp_only_layers": [1], "qkv_bias": False},
        "gemma3 with a vision head": {**_minimal("gemma3"), "vision_config": {**SMALL_VISION["siglip"], "vision_use_head": True}},
    }  # fmt: skip
    out = [(f"minimal {t}", _minimal(t)) for t in FAMILIES] + list(variants.items()) + list(cases.values())
    return out


CASES = _cases()


def _inventory(arch: ModelArch) -> dict[str, Any]:
    """Everything the comparison holds equal; linear layers as a multiset of (name, in, out, bias, expert): copies."""
    layers: Counter[tuple[str, int, int, bool, bool]] = Counter()
    for lin in arch.layer_linears:
        per = arch.num_experts if lin.per_expert else 1
        layers[(lin.name, lin.in_features, lin.out_features, lin.bias, lin.per_expert)] += (
            arch.instances(lin) // per
        )
    vision: Counter[tuple[str, int, int, bool]] = Counter()
    for lin in arch.vision.linears if arch.vision else ():
        vision[(lin.name, lin.in_features, lin.out_features, lin.bias)] += lin.layers or 1
    return {
        "total": arch.total_params,
        "embeddings": arch.embedding_params,
        "lm_head": arch.lm_head_params,
        "tied": arch.tie_embeddings,
        "linears": dict(layers),
        "layer other": arch.layer_other_params,
        "other": arch.other_params,
        "vision": arch.vision_params,
        "projector": arch.projector_params,
        "vision linears": dict(vision),
        "experts": arch.num_experts,
        "layers": arch.num_layers,
    }


def test_every_family_has_a_case() -> None:
    covered = {config["model_type"] for _, config in CASES}
    assert covered == set(FAMILIES)


@pytest.mark.parametrize("label, config", CASES, ids=[label for label, _ in CASES])
def test_fast_path_equals_the_meta_device_model(label: str, config: dict[str, Any]) -> None:
    fast = _fast_path(config, label, FAMILIES[config["model_type"]])
    meta = _arch(derive(config, label), label, "")
    assert _inventory(fast) == _inventory(meta)


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_family_defaults_are_transformers_defaults(model_type: str) -> None:
    from transformers import AutoConfig

    config = AutoConfig.for_model(model_type)
    text = config.get_text_config(decoder=True)
    for key, value in FAMILIES[model_type].defaults.items():
        owner = config if key == "tie_word_embeddings" and text is not config else text
        assert getattr(owner, key) == value, key


# -------------------------------------------------------------------------------------- the fallback itself


def _write(tmp_path: Path, config: dict[str, Any]) -> str:
    (tmp_path / "config.json").write_text(json.dumps(config))
    return str(tmp_path)


STARCODER2 = {"model_type": "starcoder2", "hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 500, "use_bias": True}  # fmt: skip


def test_an_unknown_family_is_built_with_transformers_and_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = _write(tmp_path, STARCODER2)
    arch = resolve_model(spec)
    cfg = AutoConfig.for_model("starcoder2", **{k: v for k, v in STARCODER2.items() if k != "model_type"})
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    assert arch.total_params == sum(p.numel() for p in model.parameters())
    assert arch.derived_by == "transformers" and "on the meta device" in arch.notes[0]
    assert {lin.name for lin in arch.linears()} == {"q_proj", "k_proj", "v_proj", "o_proj", "c_fc", "c_proj"}
    assert cache_path(STARCODER2).is_file()
    assert str(cache_path(STARCODER2)).startswith(str(tmp_path / "lf-tuner-home"))  # under LF_TUNER_HOME

    def fail(*args: Any) -> None:
        raise AssertionError("derived again instead of read from the cache")

    monkeypatch.setattr("lf_tuner.models.meta.derive", fail)
    again = resolve_model(spec)
    assert again.total_params == arch.total_params and "derived earlier" in again.notes[0]


def test_without_transformers_a_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(LfTunerError, match=r"model_type `starcoder2` is not one lf-tuner's fast path knows, and "
                       r"transformers is not installed.*pip install 'lf-tuner\[train\]'"):  # fmt: skip
        arch_from_transformers(STARCODER2, "m")


def test_a_model_type_transformers_does_not_know(tmp_path: Path) -> None:
    with pytest.raises(
        LfTunerError, match=r"model_type `chatglm` is unknown to transformers .*trust_remote_code"
    ):
        resolve_model(_write(tmp_path, {"model_type": "chatglm", "hidden_size": 64}))


def test_a_vision_model_outside_the_fast_path_is_split_as_llamafactory_splits_it() -> None:
    """InternVL: vision_tower and multi_modal_projector (LLaMA-Factory's COMPOSITE_MODELS)."""
    from transformers import AutoConfig

    config = AutoConfig.for_model("internvl").to_dict()
    arch = _arch(derive(config, "internvl"), "internvl", "")
    assert arch.vision is not None and arch.vision_params > 0 and arch.projector_params > 0
    text = text_config(config)
    assert arch.num_layers == text["num_hidden_layers"] and arch.hidden_size == text["hidden_size"]
