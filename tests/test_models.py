"""Model names, the catalog and config.json reading (no network, no cache: see test_models_hub.py for those)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lf_tuner.errors import LfTunerError
from lf_tuner.models import FAMILIES, arch_from_config, configs, model_template, registry, resolve_model
from lf_tuner.models.catalog import closest, entries, family_size, lookup
from lf_tuner.models.config import quantization_from_config

REQUIRED = [
    "Qwen2.5-0.5B", "Qwen2.5-1.5B", "Qwen2.5-3B", "Qwen2.5-7B", "Qwen2.5-14B", "Qwen2.5-32B", "Qwen2.5-72B",
    "Qwen2.5-Coder-7B", "Qwen2.5-Math-7B", "Qwen3-0.6B", "Qwen3-1.7B", "Qwen3-4B", "Qwen3-8B", "Qwen3-14B",
    "Qwen3-32B", "Qwen3-30B-A3B", "Llama-3.1-8B", "Llama-3.1-70B", "Llama-3.2-1B", "Llama-3.2-3B",
    "Llama-3.3-70B", "Mistral-7B-v0.3", "Mistral-Nemo-12B", "Mixtral-8x7B", "gemma-2-2b", "gemma-2-9b",
    "gemma-2-27b", "gemma-3-1b", "gemma-3-4b", "gemma-3-12b", "gemma-3-27b", "Phi-3.5-mini", "Phi-4",
    "GLM-4-9B", "Yi-1.5-6B", "Yi-1.5-9B", "Yi-1.5-34B", "DeepSeek-R1-Distill-Qwen-1.5B",
    "DeepSeek-R1-Distill-Qwen-7B", "DeepSeek-R1-Distill-Qwen-14B", "DeepSeek-R1-Distill-Qwen-32B",
    # LLaMA-Factory's own first example, and its registered names
    "Qwen/Qwen3-4B-Instruct-2507", "Qwen3-4B-Instruct-2507", "Qwen2.5-VL-7B-Instruct", "Meta-Llama-3-8B-Instruct",
]  # fmt: skip

FAST = [item for item in entries() if item.config.get("model_type") in FAMILIES]


@pytest.mark.parametrize("name", REQUIRED)
def test_catalog_covers_the_issue_list(name: str) -> None:
    arch = resolve_model(name)
    assert arch.total_params > 0 and arch.name == name


@pytest.mark.parametrize("item", [i for i in entries() if i.published_params], ids=lambda i: i.key)
def test_parameter_count_equals_the_published_one(item) -> None:
    """The catalog's config facts give the count the checkpoint publishes (fast path, else transformers)."""
    if item not in FAST:
        pytest.importorskip("transformers")
    assert arch_from_config(dict(item.config), item.key).total_params == item.published_params


def test_catalog_names_and_ids_are_unique() -> None:
    seen: dict[str, str] = {}
    for item in entries():
        for alias in (*item.ids, *item.names):
            assert alias.lower() not in seen, f"{alias} in {item.key} and {seen.get(alias.lower())}"
            seen[alias.lower()] = item.key


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
    assert arch.name == spec  # what the user gave, in the output


def test_moe_active_parameters() -> None:
    arch = resolve_model("Qwen3-30B-A3B")
    assert 3.2e9 < arch.active_params < 3.5e9  # "A3B": 3.3B active
    assert resolve_model("mistralai/Mixtral-8x7B-Instruct-v0.1").active_params == pytest.approx(
        12.9e9, rel=0.01
    )


def test_unknown_name_lists_what_was_tried_and_the_same_family_at_the_nearest_size() -> None:
    with pytest.raises(LfTunerError) as info:
        resolve_model("Qwen/Qwen3-5B-Instruct")
    message = str(info.value)
    assert (
        "Tried: a local directory `Qwen/Qwen3-5B-Instruct` (there is none); the Hugging Face cache" in message
    )
    assert "a download (skipped: HF_HUB_OFFLINE is set)" in message
    closest_part = message.split("Closest: ")[1].split(".")[0]
    assert closest_part.startswith("Qwen/Qwen3-4B") and "Mistral" not in closest_part


@pytest.mark.parametrize(
    "spec, family, size",
    [("Qwen/Qwen3-4B-Instruct-2507", "qwen3", 4.0), ("Mixtral-8x7B", "mixtral", 56.0),
     ("HuggingFaceTB/SmolLM2-135M", "smollm2", 0.135), ("google/gemma-3-27b-it", "gemma-3", 27.0),
     ("Qwen3-30B-A3B", "qwen3", 30.0), ("gpt2", "gpt2", 0.0)],
)  # fmt: skip
def test_family_and_size_of_a_name(spec: str, family: str, size: float) -> None:
    assert family_size(spec) == (family, pytest.approx(size))


def test_closest_keeps_to_the_family() -> None:
    near = closest("meta-llama/Llama-3.2-2B")
    assert near[0] == "meta-llama/Llama-3.2-3B" and all(n.startswith("meta-llama/Llama-3.2-") for n in near)
    assert all("gemma-2-" in name for name in closest("google/gemma-2-8b-it"))


def test_registered_model_without_config_says_how_to_get_it() -> None:
    with pytest.raises(LfTunerError, match=r"`Qwen/Qwen3.5-4B` is a LLaMA-Factory model \(template qwen3_5\).*"
                       r"Unset HF_HUB_OFFLINE to download config.json"):  # fmt: skip
        resolve_model("Qwen/Qwen3.5-4B")


def test_template_comes_from_the_registry_without_a_config() -> None:
    assert model_template("Qwen/Qwen3.5-4B") == "qwen3_5"
    assert model_template("Qwen2.5-7B-Instruct") == "qwen"
    assert model_template("someone/unknown") is None


def test_registry_holds_every_template_it_registers() -> None:
    from lf_tuner.chat import template_names

    known = set(template_names())
    missing = {reg.template for reg in registry().values() if reg.template and reg.template not in known}
    assert not missing


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
    assert from_dir.name == str(tmp_path) and from_dir.source.startswith("local directory")


def test_multimodal_config_uses_text_config(tmp_path: Path) -> None:
    text = {"hidden_size": 2560, "intermediate_size": 10240, "num_hidden_layers": 34, "num_attention_heads": 8,
            "num_key_value_heads": 4, "head_dim": 256, "vocab_size": 262208, "model_type": "gemma3_text"}  # fmt: skip
    vision = {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "patch_size": 14,
              "image_size": 896, "vision_use_head": False}  # fmt: skip
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "gemma3", "text_config": text, "vision_config": vision})
    )
    arch = resolve_model(str(tmp_path))
    assert arch.tie_embeddings and arch.vision is not None and arch.vision.tokens_per_image == 256
    assert arch.total_params == resolve_model("google/gemma-3-4b-it").total_params


def test_config_without_needed_fields(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    with pytest.raises(LfTunerError, match=r"lacks `intermediate_size`, `num_hidden_layers`"):
        resolve_model(str(tmp_path))


def test_directory_without_config(tmp_path: Path) -> None:
    with pytest.raises(LfTunerError, match="has no config.json"):
        resolve_model(str(tmp_path))


def test_missing_config_file() -> None:
    with pytest.raises(LfTunerError, match="does not exist; pass an existing config.json"):
        resolve_model("./nowhere/config.json")


@pytest.mark.parametrize(
    "model_type, vocab, template",
    [("qwen2", 151936, "qwen"), ("llama", 128256, "llama3"), ("llama", 32000, "llama2"), ("phi3", 100352, "phi4"),
     ("gemma2", 256000, "gemma"), ("qwen2_5_vl", 151936, "qwen2_vl")],
)  # fmt: skip
def test_local_config_gets_its_family_template(
    tmp_path: Path, model_type: str, vocab: int, template: str
) -> None:
    cfg = {"model_type": model_type, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
           "num_attention_heads": 4, "vocab_size": vocab}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert resolve_model(str(tmp_path)).template == template


def test_catalog_entries_that_extend_another_keep_its_facts() -> None:
    base, awq = resolve_model("Qwen/Qwen2.5-7B-Instruct"), resolve_model("Qwen/Qwen2.5-7B-Instruct-AWQ")
    assert awq.total_params == base.total_params and base.quantization is None
    assert awq.quantization is not None and awq.quantization.method == "awq"
    padded = resolve_model("Qwen/Qwen2.5-72B-Instruct-GPTQ-Int4")
    assert padded.intermediate_size == 29696  # the 72B quantized checkpoints pad the MLP


@pytest.mark.parametrize(
    "qc, method, per_weight, dequantized",
    [
        ({"quant_method": "gptq", "bits": 4, "group_size": 128}, "gptq", 0.5 + 2.5 / 128, False),
        ({"quant_method": "gptq", "bits": 8, "group_size": 128}, "gptq", 1.0 + 3.0 / 128, False),
        ({"quant_method": "awq", "bits": 4, "group_size": 64}, "awq", 0.5 + 2.5 / 64, False),
        ({"quant_method": "aqlm", "nbits_per_codebook": 16, "num_codebooks": 1, "in_group_size": 8,
          "out_group_size": 1}, "aqlm", 0.25, False),
        ({"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_use_double_quant": True}, "bitsandbytes",
         0.516, False),
        ({"quant_method": "bitsandbytes", "load_in_8bit": True}, "bitsandbytes", 1.0, False),
        ({"quant_method": "eetq"}, "eetq", 1.0, False),
        ({"quant_method": "hqq", "nbits": 4, "group_size": 64}, "hqq", 0.5 + 4 / 64, False),
        ({"quant_method": "fp8", "weight_block_size": [128, 128]}, "fp8", 2.0, True),
        ({"quant_method": "mxfp4"}, "mxfp4", 2.0, True),
    ],
)  # fmt: skip
def test_quantization_config_as_llamafactory_loads_it(
    qc, method: str, per_weight: float, dequantized: bool
) -> None:
    quant = quantization_from_config({"quantization_config": qc}, "m")
    assert quant is not None
    assert (quant.method, quant.dequantized) == (method, dequantized)
    assert quant.bytes_per_weight == pytest.approx(per_weight)


def test_unknown_quantization_is_one_line() -> None:
    with pytest.raises(LfTunerError, match="quant_method `compressed-tensors` is not modelled"):
        quantization_from_config({"quantization_config": {"quant_method": "compressed-tensors"}}, "m")


def test_lookup_by_registered_name_and_hub_id() -> None:
    by_name, by_id = lookup("Qwen3-VL-4B-Instruct"), lookup("qwen/qwen3-vl-4b-instruct")
    assert (
        by_name is not None
        and by_id is not None
        and by_name.hf_id == by_id.hf_id == "Qwen/Qwen3-VL-4B-Instruct"
    )
    assert by_name.registered is not None and by_name.registered.multimodal
    assert configs()["qwen/qwen3-vl-4b-thinking"].key == "Qwen/Qwen3-VL-4B-Instruct"
