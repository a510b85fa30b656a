"""The memory model's use of the model facts: vision-language models and pre-quantized checkpoints.

What trains is checked against LLaMA-Factory itself: a small model of each family built by transformers, passed
through LLaMA-Factory 0.9.5's own `init_adapter` with the same finetuning arguments, and its trainable parameters
counted. Image patches are checked against LLaMA-Factory's image preprocessing and transformers' processor.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from lf_tuner.errors import LfTunerError
from lf_tuner.memory import VisionSetup, estimate, patches_per_sample, setup_from_config, trainable_params
from lf_tuner.models import arch_from_config, resolve_model
from tests.conftest import requires_llamafactory
from tests.tiny import SMALL_TEXT, SMALL_VISION

VISION = {
    **{kind: SMALL_VISION[kind] for kind in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")},
    "gemma3": {**SMALL_VISION["siglip"], "vision_use_head": False},
}
RUNS: list[tuple[str, dict[str, Any]]] = [
    ("full", {}),
    ("full", {"freeze_vision_tower": False}),
    ("full", {"freeze_multi_modal_projector": False}),
    ("full", {"freeze_language_model": True, "freeze_vision_tower": False}),
    ("freeze", {}),
    ("freeze", {"freeze_multi_modal_projector": False}),
    ("lora", {}),
    ("lora", {"freeze_vision_tower": False}),
    ("lora", {"lora_target": "q_proj,v_proj"}),
]


def _config(model_type: str) -> dict[str, Any]:
    return {"model_type": model_type, "text_config": dict(SMALL_TEXT), "vision_config": VISION[model_type]}


def _llamafactory_trainable(raw: dict[str, Any], method: str, args: dict[str, Any]) -> int:
    """Trainable parameters after LLaMA-Factory 0.9.5's init_adapter, on the model transformers builds."""
    from llamafactory.hparams import FinetuningArguments, ModelArguments
    from llamafactory.model.adapter import init_adapter
    from transformers import AutoConfig

    from lf_tuner.models.meta import _model_class

    config = AutoConfig.for_model(raw["model_type"], **{k: v for k, v in raw.items() if k != "model_type"})
    model = _model_class(config).from_config(config)
    finetuning = FinetuningArguments(
        finetuning_type=method, lora_rank=8, freeze_trainable_layers=1, **{"lora_target": "all", **args}
    )
    model = init_adapter(
        config, model, ModelArguments(model_name_or_path="unused"), finetuning, is_trainable=True
    )
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@requires_llamafactory
@pytest.mark.llamafactory
@pytest.mark.parametrize("model_type", sorted(VISION))
@pytest.mark.parametrize("method, args", RUNS, ids=[f"{m}-{'-'.join(a) or 'defaults'}" for m, a in RUNS])
def test_trainable_parameters_equal_llamafactorys(model_type: str, method: str, args: dict[str, Any]) -> None:
    raw = _config(model_type)
    arch = arch_from_config(raw, model_type)
    setup = setup_from_config(
        {"finetuning_type": method, "lora_rank": 8, "freeze_trainable_layers": 1, **args}, arch=arch
    )
    assert trainable_params(setup) == _llamafactory_trainable(raw, method, args)


@requires_llamafactory
@pytest.mark.llamafactory
@pytest.mark.parametrize("side", [768, 1000, 1600])
def test_image_patches_equal_llamafactorys_preprocessing(side: int) -> None:
    """A square image at or above image_max_pixels: LLaMA-Factory's resize, then Qwen2-VL's image processor."""
    from llamafactory.data.mm_plugin import get_mm_plugin
    from PIL import Image
    from transformers import Qwen2VLImageProcessor

    plugin = get_mm_plugin("qwen2_vl", image_token="<|image_pad|>")
    image = plugin._preprocess_image(
        Image.new("RGB", (side, side)), image_max_pixels=768 * 768, image_min_pixels=1024
    )
    grid = Qwen2VLImageProcessor()(images=[image], return_tensors="np")["image_grid_thw"][0]
    arch = resolve_model("Qwen/Qwen2-VL-7B-Instruct")
    assert patches_per_sample(arch, VisionSetup()) == int(grid.prod())


def test_vision_activations_grow_with_media_and_an_unfrozen_tower() -> None:
    setup = setup_from_config(
        {"model_name_or_path": "Qwen/Qwen2.5-VL-7B-Instruct", "per_device_train_batch_size": 1}
    )
    base = estimate(setup).phases["loss"]
    more = estimate(replace(setup, vision=replace(setup.vision, images=4))).phases["loss"]
    video = estimate(replace(setup, vision=replace(setup.vision, videos=1))).phases["loss"]
    trained = estimate(replace(setup, vision=replace(setup.vision, freeze_vision_tower=False))).phases[
        "backward"
    ]
    assert more > base and video > base and trained > estimate(setup).phases["backward"]
    text_only = setup_from_config(
        {"model_name_or_path": "Qwen/Qwen2.5-7B-Instruct", "per_device_train_batch_size": 1}
    )
    assert patches_per_sample(text_only.arch, text_only.vision) == 0


def test_estimate_json_counts_the_vision_tower() -> None:
    arch = resolve_model("Qwen/Qwen2.5-VL-7B-Instruct")
    out = estimate(
        setup_from_config({"model_name_or_path": "Qwen/Qwen2.5-VL-7B-Instruct"}, arch=arch)
    ).as_dict()
    assert out["params"] == arch.total_params == 8_292_166_656  # the published count, vision tower included
    assert out["model"] == "Qwen/Qwen2.5-VL-7B-Instruct"


# ------------------------------------------------------------------------------------------ pre-quantized


def _weights(spec: str, **cfg: Any) -> float:
    setup = setup_from_config({"model_name_or_path": spec, "finetuning_type": "lora", **cfg})
    return estimate(setup).components["weights"]


def test_gptq_and_awq_checkpoints_load_their_own_bytes() -> None:
    bf16, awq = _weights("Qwen/Qwen2.5-7B-Instruct"), _weights("Qwen/Qwen2.5-7B-Instruct-AWQ")
    gptq8 = _weights("Qwen/Qwen2.5-7B-Instruct-GPTQ-Int8")
    arch = resolve_model("Qwen/Qwen2.5-7B-Instruct-AWQ")
    linear, rest = arch.linear_params, arch.total_params - arch.linear_params
    assert awq == round(
        linear * (0.5 + 2.5 / 128) + rest * 2
    )  # 4-bit, an fp16 scale and zero per 128 weights
    assert awq < gptq8 < bf16


def test_quantization_bit_is_ignored_for_a_prequantized_checkpoint() -> None:
    """LLaMA-Factory: "`quantization_bit` will not affect on the PTQ-quantized models"."""
    assert _weights("Qwen/Qwen2.5-7B-Instruct-AWQ", quantization_bit=8) == _weights(
        "Qwen/Qwen2.5-7B-Instruct-AWQ"
    )


def test_fp8_checkpoints_are_dequantized_on_load() -> None:
    assert _weights("deepseek-ai/DeepSeek-V3") == _weights("deepseek-ai/DeepSeek-V3-0324-BF16")
    full = setup_from_config({"model_name_or_path": "deepseek-ai/DeepSeek-V3", "finetuning_type": "full"})
    assert full.quant_bits is None


def test_aqlm_counts_its_codebooks() -> None:
    arch = resolve_model("ISTA-DASLab/Meta-Llama-3-8B-Instruct-AQLM-2Bit-1x16")
    codebooks = (
        2**16 * 8 * 2 * 7 * 32
    )  # one fp16 codebook of 2^16 x 8 weights for each of 7 linears x 32 layers
    rest = arch.total_params - arch.linear_params
    assert _weights(arch.name) == round(arch.linear_params * 0.25 + rest * 2 + codebooks)


def test_lora_on_a_quantized_checkpoint_trains_what_it_does_unquantized() -> None:
    quantized = setup_from_config({"model_name_or_path": "TechxGenus/Meta-Llama-3-8B-Instruct-GPTQ"})
    plain = setup_from_config({"model_name_or_path": "meta-llama/Meta-Llama-3-8B-Instruct"})
    assert trainable_params(quantized) == trainable_params(plain) > 0
    assert quantized.quant_bits == 4 and plain.quant_bits is None


def test_full_tuning_of_a_quantized_checkpoint_is_refused() -> None:
    with pytest.raises(
        LfTunerError, match=r"is a gptq 4-bit checkpoint: LLaMA-Factory trains quantized models with LoRA"
    ):
        setup_from_config(
            {"model_name_or_path": "Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4", "finetuning_type": "full"}
        )
