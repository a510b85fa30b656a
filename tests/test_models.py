from __future__ import annotations

import json
from pathlib import Path

import pytest

from lf_tuner.errors import LfTunerError
from lf_tuner.models import catalog, resolve_model
from lf_tuner.models.catalog import CATALOG

REQUIRED = [
    "Qwen2.5-0.5B", "Qwen2.5-1.5B", "Qwen2.5-3B", "Qwen2.5-7B", "Qwen2.5-14B", "Qwen2.5-32B", "Qwen2.5-72B",
    "Qwen2.5-Coder-7B", "Qwen2.5-Math-7B", "Qwen3-0.6B", "Qwen3-1.7B", "Qwen3-4B", "Qwen3-8B", "Qwen3-14B",
    "Qwen3-32B", "Qwen3-30B-A3B", "Llama-3.1-8B", "Llama-3.1-70B", "Llama-3.2-1B", "Llama-3.2-3B",
    "Llama-3.3-70B", "Mistral-7B-v0.3", "Mistral-Nemo-12B", "Mixtral-8x7B", "gemma-2-2b", "gemma-2-9b",
    "gemma-2-27b", "gemma-3-1b", "gemma-3-4b", "gemma-3-12b", "gemma-3-27b", "Phi-3.5-mini", "Phi-4",
    "GLM-4-9B", "Yi-1.5-6B", "Yi-1.5-9B", "Yi-1.5-34B", "DeepSeek-R1-Distill-Qwen-1.5B",
    "DeepSeek-R1-Distill-Qwen-7B", "DeepSeek-R1-Distill-Qwen-14B", "DeepSeek-R1-Distill-Qwen-32B",
]  # fmt: skip


@pytest.mark.parametrize("name", REQUIRED)
def test_catalog_covers_the_issue_list(name: str) -> None:
    assert resolve_model(name).total_params > 0


@pytest.mark.parametrize("arch", CATALOG, ids=lambda a: a.name)
def test_parameter_count_matches_published_within_half_a_percent(arch) -> None:
    assert arch.published_params > 0
    assert abs(arch.total_params - arch.published_params) / arch.published_params < 0.005


@pytest.mark.parametrize(
    "spec",
    [
        "Qwen2.5-7B",
        "Qwen/Qwen2.5-7B-Instruct",
        "qwen2.5-7b",
        "QWEN2.5-7B-INSTRUCT",
        "Qwen2.5-Coder-7B-Instruct",
    ],
)
def test_name_forms_resolve_to_the_same_architecture(spec: str) -> None:
    arch = resolve_model(spec)
    assert (arch.hidden_size, arch.num_layers, arch.vocab_size) == (3584, 28, 152064)


def test_moe_active_parameters() -> None:
    arch = resolve_model("Qwen3-30B-A3B")
    assert 3.2e9 < arch.active_params < 3.5e9  # "A3B": 3.3B active
    assert resolve_model("mistralai/Mixtral-8x7B-Instruct-v0.1").active_params == pytest.approx(
        12.9e9, rel=0.01
    )


def test_unknown_name_lists_closest_and_the_local_directory_way() -> None:
    with pytest.raises(
        LfTunerError, match=r"unknown model `qwen2\.5-7x`\. Closest: .*Qwen2\.5-7B.*local model directory"
    ):
        resolve_model("qwen2.5-7x")


def test_local_directory_and_config_file(tmp_path: Path) -> None:
    cfg = {
        "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": False,
        "max_position_embeddings": 131072,
    }  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    from_dir = resolve_model(str(tmp_path))
    from_file = resolve_model(str(tmp_path / "config.json"))
    assert from_dir.total_params == from_file.total_params == resolve_model("Llama-3.1-8B").total_params


def test_multimodal_config_uses_text_config(tmp_path: Path) -> None:
    text = {
        "hidden_size": 2560,
        "intermediate_size": 10240,
        "num_hidden_layers": 34,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 256,
        "vocab_size": 262208,
        "model_type": "gemma3_text",
    }
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gemma3", "text_config": text}))
    arch = resolve_model(str(tmp_path))
    assert arch.tie_embeddings and arch.norms_per_layer == 4 and arch.qk_norm


def test_config_without_needed_fields(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    with pytest.raises(LfTunerError, match=r"lacks `intermediate_size`, `num_hidden_layers`"):
        resolve_model(str(tmp_path))


def test_directory_without_config(tmp_path: Path) -> None:
    with pytest.raises(LfTunerError, match="has no config.json"):
        resolve_model(str(tmp_path))


def test_every_alias_is_unique() -> None:
    keys = catalog()
    assert len({a.name for a in CATALOG}) == len(CATALOG)
    assert keys["qwen2.5-7b"].name == "Qwen2.5-7B"


@pytest.mark.parametrize(
    "model_type, vocab, template",
    [("qwen2", 151936, "qwen"), ("llama", 128256, "llama3"), ("llama", 32000, "llama2"), ("phi3", 100352, "phi4"),
     ("gemma2", 256000, "gemma"), ("made_up", 1000, "default")],
)  # fmt: skip
def test_local_config_gets_its_family_template(
    tmp_path: Path, model_type: str, vocab: int, template: str
) -> None:
    cfg = {"model_type": model_type, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
           "num_attention_heads": 4, "vocab_size": vocab}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert resolve_model(str(tmp_path)).template == template
