from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lf_tuner.errors import LfTunerError
from lf_tuner.memory import (
    CE_BYTES_PER_LOGIT,
    GIB,
    DeepSpeed,
    TrainSetup,
    estimate,
    fit_changes,
    lora_params,
    max_cutoff,
    setup_from_config,
)
from lf_tuner.models import resolve_model

Q7 = resolve_model("Qwen2.5-7B")
ARCHS = [
    resolve_model(n) for n in ("Qwen2.5-0.5B", "Qwen2.5-7B", "Llama-3.1-8B", "gemma-2-2b", "Qwen3-30B-A3B")
]


def total(**kw) -> int:
    return estimate(TrainSetup(arch=kw.pop("arch", Q7), **kw)).total_bytes


def test_lora_params_all_linear_rank8_qwen7b() -> None:
    # r * (in + out) over q,k,v,o,gate,up,down, 28 layers: the count PEFT prints for this model
    assert lora_params(TrainSetup(arch=Q7)) == 20_185_088


def test_lora_target_list_counts_only_those_modules() -> None:
    qv = lora_params(TrainSetup(arch=Q7, lora_target=("q_proj", "v_proj")))
    assert qv == 8 * ((3584 + 3584) + (3584 + 512)) * 28


def test_components_sum_to_total_and_name_the_parts() -> None:
    est = estimate(TrainSetup(arch=Q7, cutoff_len=4096))
    assert sum(est.components.values()) == est.total_bytes
    assert {"weights", "activations", "logits_loss", "cuda_context", "allocator_overhead"} <= set(
        est.components
    )
    # the logits term is tokens x vocab x bytes per logit
    assert est.components["logits_loss"] == 4096 * 152064 * CE_BYTES_PER_LOGIT


def test_liger_removes_the_logits_term() -> None:
    est = estimate(TrainSetup(arch=Q7, cutoff_len=8192, liger=True))
    assert est.components.get("logits_loss", 0) < 0.1 * 8192 * 152064 * CE_BYTES_PER_LOGIT


@settings(max_examples=60, deadline=None)
@given(
    arch=st.sampled_from(ARCHS),
    method=st.sampled_from(["lora", "qlora", "freeze", "full"]),
    cutoff=st.integers(1, 64).map(lambda k: 128 * k),
    batch=st.integers(1, 8),
    rank=st.integers(1, 128),
    liger=st.booleans(),
    gc=st.booleans(),
)
def test_total_grows_with_cutoff_batch_and_rank(arch, method, cutoff, batch, rank, liger, gc) -> None:
    s = TrainSetup(
        arch=arch,
        method=method,
        cutoff_len=cutoff,
        batch_size=batch,
        lora_rank=rank,
        liger=liger,
        gradient_checkpointing=gc,
    )
    base = estimate(s).total_bytes
    assert estimate(replace(s, cutoff_len=cutoff + 128)).total_bytes >= base
    assert estimate(replace(s, batch_size=batch + 1)).total_bytes >= base
    if method in ("lora", "qlora"):
        assert estimate(replace(s, lora_rank=rank + 8)).total_bytes >= base
    # Liger never raises it
    assert estimate(replace(s, liger=True)).total_bytes <= estimate(replace(s, liger=False)).total_bytes


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: a.name)
@pytest.mark.parametrize("cutoff", [512, 4096])
def test_qlora_below_lora_below_full(arch, cutoff) -> None:
    qlora = total(arch=arch, method="qlora", cutoff_len=cutoff)
    lora = total(arch=arch, method="lora", cutoff_len=cutoff)
    full = total(arch=arch, method="full", cutoff_len=cutoff)
    assert qlora < lora < full


def test_checkpointing_off_costs_more() -> None:
    assert total(cutoff_len=2048, gradient_checkpointing=False) > total(cutoff_len=2048)


def test_zero3_shards_full_finetuning() -> None:
    one = total(method="full", cutoff_len=1024)
    z3 = total(method="full", cutoff_len=1024, deepspeed=DeepSpeed.from_kind("z3"), gpus=8)
    offload = total(method="full", cutoff_len=1024, deepspeed=DeepSpeed.from_kind("z3-offload"), gpus=8)
    assert offload < z3 < one / 4


def test_pure_bf16_halves_full_states() -> None:
    fp32 = estimate(TrainSetup(arch=Q7, method="full"))
    bf16 = estimate(TrainSetup(arch=Q7, method="full", pure_bf16=True))
    assert bf16.components["optimizer_states"] * 2 == pytest.approx(
        fp32.components["optimizer_states"], rel=1e-6
    )


def test_8bit_optimizer_states() -> None:
    est = estimate(TrainSetup(arch=Q7, method="full", optim="adamw_8bit"))
    # 2 B per parameter, except the embedding, whose states transformers keeps in 32 bit (8 B)
    expected = 2 * est.trainable_params + 6 * Q7.embedding_params
    assert est.components["optimizer_states"] == pytest.approx(expected, rel=1e-6)


def test_eager_attention_adds_a_quadratic_term() -> None:
    sdpa = total(cutoff_len=4096, gradient_checkpointing=False)
    eager = total(cutoff_len=4096, gradient_checkpointing=False, attention="eager")
    assert eager - sdpa > 28 * 28 * 4096 * 4096 * 4  # at least the scores of every layer


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"cutoff_len": 0}, "cutoff_len must be positive"),
        ({"batch_size": -1}, "per_device_train_batch_size must be positive"),
        ({"lora_rank": 0}, "lora_rank must be positive"),
        ({"method": "dora"}, "unknown method `dora`"),
        ({"optim": "adamw_torh"}, "did you mean `adamw_torch`"),
        ({"method": "full", "quantization_bit": 4}, "quantization works with LoRA or OFT only"),
    ],
)
def test_bad_setups(kw, message) -> None:
    with pytest.raises(LfTunerError, match=message):
        TrainSetup(arch=Q7, **kw)


def test_setup_from_config_honours_llamafactory_keys(tmp_path: Path) -> None:
    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps({"zero_optimization": {"stage": 3, "offload_param": {"device": "cpu"}}}))
    cfg = {
        "model_name_or_path": "Qwen/Qwen2.5-7B-Instruct", "finetuning_type": "lora", "quantization_bit": 4,
        "cutoff_len": 3000, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 4,
        "lora_rank": 16, "lora_target": "q_proj,v_proj", "enable_liger_kernel": True, "flash_attn": "disabled",
        "disable_gradient_checkpointing": True, "deepspeed": str(ds), "optim": "paged_adamw_8bit",
    }  # fmt: skip
    s = setup_from_config(cfg, gpus=4)
    assert (s.cutoff_len, s.batch_size, s.grad_accum, s.lora_rank) == (3000, 2, 4, 16)
    assert s.lora_target == ("q_proj", "v_proj") and s.quant_bits == 4 and s.liger
    assert (
        s.attention == "eager"
        and not s.gradient_checkpointing
        and s.deepspeed is not None
        and s.deepspeed.kind == "z3-offload"
        and s.gpus == 4
    )
    assert s.tokens == 2 * 3000  # padded to a multiple of 8


def test_setup_from_config_defaults_are_llamafactory_defaults() -> None:
    s = setup_from_config({"model_name_or_path": "Qwen2.5-0.5B"})
    assert (s.method, s.cutoff_len, s.batch_size, s.lora_rank, s.gradient_checkpointing) == (
        "lora",
        2048,
        8,
        8,
        True,
    )


def test_setup_from_config_rejects_wrong_types() -> None:
    with pytest.raises(LfTunerError, match=r"cutoff_len: expected an integer, got 'abc'"):
        setup_from_config({"model_name_or_path": "Qwen2.5-0.5B", "cutoff_len": "abc"})


def test_max_cutoff_is_the_largest_that_fits() -> None:
    s = TrainSetup(arch=Q7, cutoff_len=8192)
    budget = 24 * GIB
    cut = max_cutoff(s, budget)
    assert cut % 128 == 0 and cut > 0
    assert estimate(replace(s, cutoff_len=cut)).total_bytes <= budget
    assert estimate(replace(s, cutoff_len=cut + 128)).total_bytes > budget


def test_fit_changes_each_fit_and_keep_the_effective_batch() -> None:
    s = TrainSetup(arch=Q7, cutoff_len=8192, batch_size=2, grad_accum=4)
    budget = 24 * GIB
    changes = fit_changes(s, budget)
    assert changes
    for change in changes:
        assert change.total_bytes <= budget
        assert estimate(change.setup).total_bytes == change.total_bytes
        assert change.setup.batch_size * change.setup.grad_accum == 8
    assert any(c.overrides.get("enable_liger_kernel") for c in changes)
