"""The memory model beyond plain SFT: stages, OFT, optimizers, layouts, the evaluation peak."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lf_tuner.errors import LfTunerError
from lf_tuner.memory import (
    PPO_REFUSED,
    DeepSpeed,
    EvalSetup,
    Fsdp,
    TrainSetup,
    estimate,
    fit_changes,
    fsdp_from_accelerate,
    load_deepspeed,
    oft_params,
    parse_kind,
    setup_from_config,
    stage_cost,
    trainable_params,
)
from lf_tuner.memory.layout import fsdp_from_training_args
from lf_tuner.memory.model import activations
from lf_tuner.models import resolve_model
from tests.conftest import requires_llamafactory

Q7 = resolve_model("Qwen2.5-7B")
Q05 = resolve_model("Qwen2.5-0.5B")
L8 = resolve_model("Llama-3.1-8B")


def setup(**kw: object) -> TrainSetup:
    return TrainSetup(arch=kw.pop("arch", Q7), **kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- stages


def test_dpo_runs_chosen_and_rejected_with_a_reference() -> None:
    sft = estimate(setup(cutoff_len=2048))
    dpo = estimate(setup(cutoff_len=2048, stage="dpo"))
    # 20 B per element of the 2 x batch sequences (policy 8 B kept, reference 12 B at its log-softmax)
    assert dpo.components["logits_loss"] == 40 * 2048 * Q7.vocab_size
    assert dpo.total_bytes > sft.total_bytes
    # LoRA's reference is the policy with its adapter disabled: no second model
    assert dpo.components["weights"] == sft.components["weights"]


def test_reference_free_losses_need_no_reference() -> None:
    dpo = estimate(setup(stage="dpo", method="full", arch=Q05))
    orpo = estimate(setup(stage="dpo", method="full", arch=Q05, pref_loss="orpo"))
    simpo = estimate(setup(stage="dpo", method="full", arch=Q05, pref_loss="simpo"))
    assert orpo.total_bytes == simpo.total_bytes < dpo.total_bytes
    assert not stage_cost(orpo.setup).reference_copy and stage_cost(dpo.setup).reference_copy


def test_full_dpo_loads_a_frozen_bf16_copy() -> None:
    sft = estimate(setup(method="full", arch=Q05, cutoff_len=512))
    dpo = estimate(setup(method="full", arch=Q05, cutoff_len=512, stage="dpo"))
    # full tuning moves every weight into the trained fp32 copy; what is left is the reference
    assert sft.components.get("weights", 0) == 0 and dpo.components["weights"] == 2 * Q05.total_params


def test_ref_model_is_a_separate_model_quantized_as_asked() -> None:
    lora = setup(stage="dpo")
    with_ref = replace(lora, ref_model=True)
    four = replace(with_ref, ref_quantization_bit=4)
    weights = [estimate(s).components["weights"] for s in (lora, with_ref, four)]
    assert weights[0] < weights[2] < weights[1]
    assert weights[1] - weights[0] == 2 * Q7.total_params


def test_kto_and_rm() -> None:
    kto = estimate(setup(stage="kto", cutoff_len=1024))
    assert kto.components["logits_loss"] == 24 * 1024 * Q7.vocab_size
    rm = estimate(setup(stage="rm", cutoff_len=1024))
    assert rm.components["logits_loss"] == 20 * 1024 * Q7.vocab_size
    # trl's ValueHead: Linear(hidden, 1) trains next to the adapters
    assert rm.trainable_params - trainable_params(setup()) == Q7.hidden_size + 1


def test_liger_fuses_the_loss_only_in_pt_and_sft() -> None:
    for stage, fused in (("sft", True), ("pt", True), ("dpo", False), ("kto", False), ("rm", False)):
        s = setup(stage=stage, liger=True, cutoff_len=4096)
        liger = activations(s, stage_cost(s)).logits
        plain = activations(replace(s, liger=False), stage_cost(s)).logits
        assert (liger < plain / 10) == fused, stage


def test_ppo_is_refused_with_the_reason() -> None:
    with pytest.raises(LfTunerError, match="trl>=0.8.6,<=0.9.6"):
        setup(stage="ppo")
    with pytest.raises(LfTunerError) as info:
        setup_from_config({"stage": "ppo", "reward_model": "rm"}, Q7)
    assert str(info.value) == PPO_REFUSED


def test_asft_keeps_a_reference_copy_and_more_logits() -> None:
    plain = estimate(setup(method="full", arch=Q05))
    asft = estimate(setup(method="full", arch=Q05, sft_loss="asft"))
    assert asft.components["logits_loss"] == pytest.approx(44 / 12 * plain.components["logits_loss"])
    assert asft.components["weights"] - plain.components.get("weights", 0) == 2 * Q05.total_params


@settings(max_examples=40, deadline=None)
@given(
    stage=st.sampled_from(["pt", "sft", "dpo", "kto", "rm"]),
    method=st.sampled_from(["lora", "qlora", "oft", "freeze", "full"]),
    cutoff=st.integers(1, 32).map(lambda k: 128 * k),
    batch=st.integers(1, 4),
)
def test_every_stage_grows_with_cutoff_and_batch(stage: str, method: str, cutoff: int, batch: int) -> None:
    s = setup(arch=Q05, stage=stage, method=method, cutoff_len=cutoff, batch_size=batch)
    base = estimate(s).total_bytes
    assert estimate(replace(s, cutoff_len=cutoff + 128)).total_bytes >= base
    assert estimate(replace(s, batch_size=batch + 1)).total_bytes >= base


# --------------------------------------------------------------------------- OFT


def test_oft_params_are_blocks_of_skew_symmetric_entries() -> None:
    s = setup(arch=L8, method="oft", oft_block_size=32)
    # per adapted linear: in / 32 blocks of 32 x 31 / 2 entries = in x 15.5; q,k,v,gate,up read 4096, o 4096,
    # down 14336 (LLaMA-Factory adapts lora_target's modules: all)
    assert oft_params(s) == int(15.5 * (6 * 4096 + 14336)) * 32
    assert estimate(replace(s, quantization_bit=4)).total_bytes < estimate(s).total_bytes


@requires_llamafactory
@pytest.mark.llamafactory
@pytest.mark.parametrize(("block", "rank"), [(32, 0), (16, 0), (0, 4)])
def test_oft_params_match_peft(block: int, rank: int) -> None:
    """PEFT is the oracle: the trainable parameters of an OFT model built from the same shapes."""
    from peft import OFTConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = {
        "model_type": "qwen2", "hidden_size": 96, "intermediate_size": 160, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256, "tie_word_embeddings": True,
        "max_position_embeddings": 128,
    }  # fmt: skip
    from lf_tuner.models import arch_from_config

    arch = arch_from_config(cfg, "tiny")
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(cfg.pop("model_type"), **cfg))
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    peft = get_peft_model(model, OFTConfig(r=rank, oft_block_size=block, target_modules=targets))
    trained = sum(p.numel() for p in peft.parameters() if p.requires_grad)
    assert oft_params(TrainSetup(arch=arch, method="oft", oft_block_size=block, oft_rank=rank)) == trained


# --------------------------------------------------------------------------- optimizers


def test_galore_and_apollo_keep_low_rank_states() -> None:
    adam = estimate(setup(arch=L8, method="full", pure_bf16=True))
    galore = estimate(
        setup(arch=L8, method="full", pure_bf16=True, custom_optimizer="galore", optimizer_rank=128)
    )
    apollo = estimate(
        setup(arch=L8, method="full", pure_bf16=True, custom_optimizer="apollo", optimizer_rank=128)
    )
    assert apollo.components["optimizer_states"] < galore.components["optimizer_states"]
    assert galore.components["optimizer_states"] < adam.components["optimizer_states"] / 4


def test_layerwise_galore_never_holds_all_gradients() -> None:
    s = setup(arch=L8, method="full", pure_bf16=True, custom_optimizer="galore", optimizer_rank=128)
    whole, layerwise = estimate(s), estimate(replace(s, layerwise=True))
    assert whole.phases["step"] > layerwise.phases["step"]
    whole_grads = estimate(replace(s, layerwise=False)).phases["step"] - layerwise.phases["step"]
    assert whole_grads > 2 * (L8.total_params - L8.embedding_params)  # bf16 gradients of (nearly) everything


def test_badam_trains_one_layer_in_fp32() -> None:
    est = estimate(setup(arch=L8, method="full", custom_optimizer="badam"))
    assert est.trainable_params == L8.layer_params
    assert est.components["trainable_params"] == 4 * L8.layer_params  # its fp32 copy
    assert est.components["weights"] == 2 * L8.total_params  # the model stays bf16


def test_adam_mini_and_muon_states() -> None:
    n = Q05.total_params
    mini = estimate(setup(arch=Q05, method="full", custom_optimizer="adam_mini"))
    embeds = Q05.embedding_params + Q05.lm_head_params
    assert mini.components["optimizer_states"] == pytest.approx(4 * n + 4 * embeds, rel=1e-9)
    muon = estimate(setup(arch=Q05, method="full", custom_optimizer="muon"))
    adam = estimate(setup(arch=Q05, method="full"))
    assert mini.components["optimizer_states"] < adam.components["optimizer_states"]
    assert muon.components["optimizer_states"] < adam.components["optimizer_states"]


def test_custom_optimizers_from_config_and_their_notes() -> None:
    s = setup_from_config({"finetuning_type": "full", "use_galore": True, "galore_rank": 64}, L8)
    assert (s.custom_optimizer, s.optimizer_rank) == ("galore", 64)
    assert any("NotImplementedError" in note for note in s.notes)  # adamw_torch_fused is not one GaLore takes
    ok = setup_from_config({"finetuning_type": "full", "use_galore": True, "optim": "adamw_torch"}, L8)
    assert ok.notes == ()
    with pytest.raises(LfTunerError, match="cannot be used together"):
        setup_from_config({"finetuning_type": "full", "use_galore": True, "use_badam": True}, L8)
    with pytest.raises(LfTunerError, match="not adapters"):
        setup_from_config({"finetuning_type": "lora", "use_galore": True}, L8)


# --------------------------------------------------------------------------- layouts


def test_deepspeed_one_type_both_spellings() -> None:
    assert parse_kind("z3_offload") == parse_kind("z3-offload") == parse_kind("ds_z3_offload_config.json")
    assert DeepSpeed.from_kind("z2_offload") == DeepSpeed.from_kind("z2-offload")
    assert DeepSpeed.from_kind("z3-offload").filename == "ds_z3_offload_config.json"
    with pytest.raises(LfTunerError, match="not a ZeRO kind"):
        DeepSpeed.from_kind("z4")


def test_load_deepspeed_reads_the_json_relative_to_base_dir(tmp_path: Path) -> None:
    (tmp_path / "ds.json").write_text(
        json.dumps({"zero_optimization": {"stage": 2, "reduce_bucket_size": "auto", "overlap_comm": True}})
    )
    ds = load_deepspeed("ds.json", tmp_path)
    assert ds is not None and (ds.stage, ds.reduce_bucket_size, ds.overlap_comm) == (2, None, True)
    assert load_deepspeed("z3", tmp_path) == DeepSpeed.from_kind("z3")  # a kind, no such file
    with pytest.raises(LfTunerError, match="missing.json does not exist"):
        load_deepspeed("missing.json", tmp_path)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(LfTunerError, match="cannot read bad.json as JSON"):
        load_deepspeed("bad.json", tmp_path)


def test_zero_buckets_follow_the_json() -> None:
    s = setup(method="full", gpus=8, deepspeed=DeepSpeed(stage=2, reduce_bucket_size=5e8))
    doubled = replace(s, deepspeed=DeepSpeed(stage=2, reduce_bucket_size=5e8, overlap_comm=True))
    assert estimate(s).components["deepspeed_buffers"] == 2 * 5e8
    assert estimate(doubled).components["deepspeed_buffers"] == 4 * 5e8
    auto = replace(s, deepspeed=DeepSpeed(stage=2, reduce_bucket_size=None))
    assert estimate(auto).components["deepspeed_buffers"] == 2 * Q7.hidden_size**2


def test_zero_shards_over_every_gpu_of_every_node() -> None:
    one_node = estimate(setup(method="full", gpus=16, deepspeed=DeepSpeed.from_kind("z3")))
    two_nodes = estimate(setup(method="full", gpus=16, nodes=2, deepspeed=DeepSpeed.from_kind("z3")))
    assert one_node.total_bytes == two_nodes.total_bytes


FSDP_YAML = {
    "distributed_type": "FSDP",
    "num_processes": 8,
    "num_machines": 1,
    "fsdp_config": {"fsdp_sharding_strategy": "FULL_SHARD", "fsdp_offload_params": False},
}


def test_fsdp_from_accelerate_configs() -> None:
    full = fsdp_from_accelerate(FSDP_YAML)
    assert full == Fsdp(1, "FULL_SHARD", False, 8, 1)
    v2 = fsdp_from_accelerate(
        {**FSDP_YAML, "fsdp_config": {"fsdp_version": 2, "fsdp_reshard_after_forward": False}}
    )
    assert v2 is not None and (v2.version, v2.strategy) == (2, "SHARD_GRAD_OP")
    offload = fsdp_from_accelerate({**FSDP_YAML, "fsdp_config": {"fsdp_offload_params": True}})
    assert offload is not None and offload.offload_params
    assert fsdp_from_accelerate({"distributed_type": "MULTI_GPU", "num_processes": 2}) is None
    with pytest.raises(LfTunerError, match="deepspeed: ds_z3_config.json"):
        fsdp_from_accelerate({"distributed_type": "DEEPSPEED"})
    with pytest.raises(LfTunerError, match="fsdp_sharding_strategy `HALF`"):
        fsdp_from_accelerate({**FSDP_YAML, "fsdp_config": {"fsdp_sharding_strategy": "HALF"}})
    assert fsdp_from_training_args(["full_shard", "auto_wrap"], {"version": 2}) == Fsdp(2, "FULL_SHARD")


def test_fsdp_shards_and_offloads() -> None:
    one = estimate(setup(method="full"))
    full = setup_from_config({"finetuning_type": "full"}, Q7, fsdp=fsdp_from_accelerate(FSDP_YAML))
    assert full.gpus == 8
    sharded = estimate(full)
    hybrid = estimate(replace(full, nodes=2, fsdp=replace(full.fsdp, strategy="HYBRID_SHARD")))  # type: ignore[arg-type]
    offload = estimate(replace(full, fsdp=replace(full.fsdp, offload_params=True)))  # type: ignore[arg-type]
    assert offload.total_bytes < sharded.total_bytes < hybrid.total_bytes < one.total_bytes
    assert sharded.components["optimizer_states"] == pytest.approx(one.components["optimizer_states"] / 8)
    # QLoRA under FSDP: the 4-bit base shards too
    qlora = estimate(replace(full, method="lora", quantization_bit=4))
    assert (
        qlora.components["weights"] < estimate(setup(method="lora", quantization_bit=4)).components["weights"]
    )


def test_deepspeed_and_fsdp_exclude_each_other() -> None:
    with pytest.raises(LfTunerError, match="DeepSpeed and FSDP exclude each other"):
        setup(deepspeed=DeepSpeed.from_kind("z3"), fsdp=Fsdp())


# --------------------------------------------------------------------------- evaluation


def test_evaluation_peak_when_the_config_evaluates() -> None:
    cfg = {"cutoff_len": 2048, "per_device_train_batch_size": 1, "eval_strategy": "steps", "val_size": 0.1}
    s = setup_from_config(cfg, Q7)
    assert s.eval == EvalSetup(batch_size=8)  # transformers' per_device_eval_batch_size default
    est = estimate(s)
    assert est.eval is not None and est.eval.phase == "eval"
    assert est.eval.components["logits_loss"] == 10 * 8 * 2048 * Q7.vocab_size
    assert est.total_bytes == max(est.train_bytes, est.eval.total_bytes) == est.eval.total_bytes
    assert "gradients" not in est.eval.components
    assert setup_from_config({"val_size": 0.1}, Q7).eval is None  # split off, never evaluated


def test_fit_changes_cover_evaluation() -> None:
    s = setup(cutoff_len=2048, eval=EvalSetup(batch_size=2, compute_accuracy=True, samples=200_000))
    est = estimate(s)
    gathered = 16 * 2048 * 200_000
    assert est.eval is not None and est.eval.components["eval_predictions"] == gathered
    budget = est.eval.total_bytes - gathered // 2
    changes = fit_changes(s, budget)
    keys = [tuple(sorted(c.overrides)) for c in changes]
    assert ("per_device_eval_batch_size",) in keys
    assert any("eval_accumulation_steps" in k for k in keys)
    for change in changes:
        assert change.total_bytes <= budget


def test_prediction_loss_only_gathers_nothing() -> None:
    ev = EvalSetup(batch_size=2, compute_accuracy=True, samples=10_000)
    s = setup(eval=ev)
    gathered = estimate(s).eval
    quiet = estimate(replace(s, eval=replace(ev, prediction_loss_only=True))).eval
    assert gathered is not None and quiet is not None
    assert "eval_predictions" in gathered.components and "eval_predictions" not in quiet.components


def test_generation_keeps_a_kv_cache() -> None:
    ev = EvalSetup(batch_size=4, predict_with_generate=True, max_new_tokens=512)
    est = estimate(setup(cutoff_len=1024, eval=ev)).eval
    assert est is not None
    kv = 2 * Q7.num_layers * Q7.kv_dim * 2 * 4 * (1024 + 512)
    assert est.components["activations"] > kv
    assert est.components["logits_loss"] < 4 * 4 * Q7.vocab_size * 4


def test_dpo_evaluation_scores_pairs_with_the_reference() -> None:
    est = estimate(setup(stage="dpo", cutoff_len=1024, eval=EvalSetup(batch_size=2))).eval
    assert est is not None and est.components["logits_loss"] == 32 * 2 * 1024 * Q7.vocab_size


def test_gathering_without_a_known_eval_set_is_noted_and_verdict_names_evaluation() -> None:
    from lf_tuner.memory import GIB, Budget, report_fit

    cfg = {
        "eval_strategy": "steps",
        "val_size": 0.1,
        "compute_accuracy": True,
        "per_device_train_batch_size": 1,
    }
    s = setup_from_config(cfg, Q05)
    assert any("set eval_accumulation_steps: 1" in note for note in s.notes)
    assert not setup_from_config({**cfg, "eval_accumulation_steps": 1}, Q05).notes
    assert not setup_from_config({**cfg, "val_size": 200}, Q05).notes  # the eval set's size is known
    est = estimate(s)
    assert est.eval is not None and est.eval.total_bytes > est.train_bytes
    report = report_fit(est, [Budget("4 GiB GPU", 4 * GIB)])
    assert report.lines[0].endswith("(the evaluation peak)")
