"""`estimate` on every training config LLaMA-Factory 0.9.5 ships (examples/), every stage there, with evaluation."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from lf_tuner.cli import cli
from lf_tuner.config import load_mapping
from lf_tuner.errors import LfTunerError
from lf_tuner.memory import GIB, estimate, fsdp_from_accelerate, setup_from_config
from lf_tuner.models import resolve_model
from tests.lf_examples import (
    EXAMPLES,
    LLAMAFACTORY,
    STAND_INS,
    accelerate_config,
    training_configs,
    with_eval_block,
    write_stand_in,
)

pytestmark = pytest.mark.skipif(not EXAMPLES.is_dir(), reason=f"{EXAMPLES} is not beside the repository")

# Outside the model on purpose, each with the one line estimate prints.
REFUSED = {
    "ktransformers/train_lora/deepseek_v2_lora_sft_kt.yaml": "use_kt: KTransformers keeps the MoE experts",
    "ktransformers/train_lora/deepseek_v3_lora_sft_kt.yaml": "use_kt: KTransformers keeps the MoE experts",
    "ktransformers/train_lora/qwen3_5moe_lora_sft_kt.yaml": "use_kt: KTransformers keeps the MoE experts",
    "ktransformers/train_lora/qwen3moe_lora_sft_kt.yaml": "use_kt: KTransformers keeps the MoE experts",
    "megatron/qwen2_vl_full.yaml": "tensor_model_parallel_size: a Megatron-Core config",
    "megatron/qwen3_moe_full.yaml": "tensor_model_parallel_size: a Megatron-Core config",
}
# Models neither the catalog nor the stand-ins know (Qwen3.5's linear-attention layers are not modelled).
UNRESOLVED = {"ascend/qwen3_5_full_sft_fsdp2.yaml"}


def model_dir(model: str, tmp: Path) -> str:
    """The model to estimate with: the name itself when it resolves, else a directory with its stand-in."""
    try:
        resolve_model(model)
        return model
    except LfTunerError:
        if model not in STAND_INS:
            raise
        return str(write_stand_in(model, tmp / model.replace("/", "--")))


def test_every_training_config_gives_a_total(tmp_path: Path) -> None:
    stages: Counter[str] = Counter()
    for relative, cfg in training_configs():
        if relative in REFUSED:
            with pytest.raises(LfTunerError, match=REFUSED[relative]):
                setup_from_config(cfg, base_dir=LLAMAFACTORY)
            continue
        try:
            model = model_dir(str(cfg["model_name_or_path"]), tmp_path)
        except LfTunerError:
            assert relative in UNRESOLVED, f"{relative}: model does not resolve"
            continue
        accelerate = accelerate_config(relative)
        fsdp = fsdp_from_accelerate(load_mapping(accelerate)) if accelerate else None
        est = estimate(setup_from_config(cfg, resolve_model(model), fsdp=fsdp, base_dir=LLAMAFACTORY))
        assert 1 * GIB < est.total_bytes < 2000 * GIB, relative
        assert sum(est.components.values()) == est.main.total_bytes
        stages[str(cfg["stage"])] += 1
    # every stage LLaMA-Factory's examples train with, and how many configs each
    assert stages == {"sft": 38, "dpo": 2, "kto": 1, "rm": 1, "pt": 1}


@pytest.mark.parametrize(
    "relative",
    [
        "train_lora/qwen3_lora_sft.yaml",
        "train_lora/qwen3_lora_dpo.yaml",
        "train_lora/qwen3_lora_kto.yaml",
        "train_lora/qwen3_lora_reward.yaml",
        "train_lora/qwen3_lora_pretrain.yaml",
        "train_full/qwen3_full_sft.yaml",
        "extras/galore/llama3_full_sft.yaml",
        "extras/oft/llama3_oft_sft.yaml",
    ],
)
def test_the_cli_prints_the_evaluation_peak_when_the_config_evaluates(
    relative: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = with_eval_block(relative)
    assert cfg["eval_strategy"] == "steps" and cfg["val_size"] > 0
    path = tmp_path / "train.yaml"
    import yaml

    path.write_text(yaml.safe_dump(cfg))
    model = model_dir(str(cfg["model_name_or_path"]), tmp_path)
    monkeypatch.chdir(LLAMAFACTORY)  # the examples name examples/deepspeed/*.json from there
    result = CliRunner().invoke(cli, ["estimate", "--config", str(path), "--model", model])
    assert result.exit_code == 0, result.output
    assert "training peak per GPU" in result.stdout and "evaluation peak per GPU" in result.stdout
    assert "evaluation (eval batch 1 × " in result.stdout
    plain = CliRunner().invoke(cli, ["estimate", "--config", str(EXAMPLES / relative), "--model", model])
    assert (
        plain.exit_code == 0 and "evaluation" not in plain.stdout
    )  # the example as shipped does not evaluate


def test_prediction_only_config_has_no_training_peak(tmp_path: Path) -> None:
    relative = "extras/nlg_eval/llama3_lora_predict.yaml"
    cfg = dict(next(c for r, c in training_configs() if r == relative))
    model = model_dir(str(cfg["model_name_or_path"]), tmp_path)
    est = estimate(setup_from_config(cfg, resolve_model(model)))
    assert est.train is None and est.eval is not None and est.total_bytes == est.eval.total_bytes
    assert est.eval.components.get("optimizer_states", 0) == 0
    # generation keeps a KV cache for the prompt and max_new_tokens (1024) of 32 layers x 1024 kv dims x 2 x 2 B
    kv = 2 * 32 * 1024 * 2 * (2048 + 1024)
    assert est.eval.components["activations"] >= kv
    result = CliRunner().invoke(cli, ["estimate", "--config", str(EXAMPLES / relative), "--model", model])
    assert result.exit_code == 0, result.output
    assert "training" in result.stdout and "none (do_train is off)" in result.stdout
    assert "evaluation (generation 1 × 2048 tokens)" in result.stdout


@pytest.mark.parametrize("relative", sorted(REFUSED))
def test_refused_configs_say_why_in_one_line(relative: str) -> None:
    result = CliRunner().invoke(cli, ["estimate", "--config", str(EXAMPLES / relative)])
    assert result.exit_code == 1
    assert REFUSED[relative] in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
