from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from lf_tuner.cli import cli

EXPECTED_TABLE = """\
Qwen2.5-0.5B · lora · cutoff 1024 × batch 1

  component                           GiB
 ─────────────────────────────────────────
  base weights                       0.92
  trainable params                   0.02
  optimizer states                   0.03
  autocast weight copies             0.01
  activations                        0.05
  logits + loss                      1.74
  allocator overhead                 1.01
  CUDA context                       0.74

  peak per GPU                       4.51

4 GiB GPU: does NOT fit: short by 0.51 GiB
changes that fit:
  - enable Liger Kernel (fused linear cross-entropy) -> 2.09 GiB  (enable_liger_kernel: True)
  - cutoff_len 768 (longer samples are truncated) -> 3.97 GiB  (cutoff_len: 768)
"""


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def strip(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


def test_table_exact_output() -> None:
    result = invoke("estimate", "--model", "Qwen2.5-0.5B", "--cutoff", "1024", "--gpu-memory", "4")
    assert result.exit_code == 0, result.output
    assert strip(result.stdout) == EXPECTED_TABLE
    assert result.stderr == ""


def test_json_output() -> None:
    result = invoke(
        "estimate",
        "--model",
        "Qwen/Qwen2.5-7B-Instruct",
        "--cutoff",
        "4096",
        "--json",
        "--gpu-memory",
        "80",
        "--max-cutoff",
    )
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert set(data) >= {"total_gib", "components", "fits", "max_cutoff", "peak_phase"}
    assert data["fits"] is True
    assert sum(data["components"].values()) == pytest.approx(data["total_gib"], abs=0.01)
    assert data["max_cutoff"] % 128 == 0 and data["max_cutoff"] > 4096


def test_config_file_and_flags_override(tmp_path: Path) -> None:
    cfg = tmp_path / "train.yaml"
    cfg.write_text(
        "model_name_or_path: Qwen2.5-7B\nfinetuning_type: lora\ncutoff_len: 1024\n"
        "per_device_train_batch_size: 1\n"
    )
    from_file = json.loads(invoke("estimate", "--config", str(cfg), "--json").stdout)
    overridden = json.loads(invoke("estimate", "--config", str(cfg), "--cutoff", "4096", "--json").stdout)
    direct = json.loads(invoke("estimate", "--model", "Qwen2.5-7B", "--cutoff", "4096", "--json").stdout)
    assert from_file["total_gib"] < overridden["total_gib"] == direct["total_gib"]


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--model", "Qwen2.5-7B", "--cutoff", "0"], 2, "--cutoff': must be positive, got 0"),
        (["--model", "Qwen2.5-7B", "--batch", "-2"], 2, "--batch': must be positive, got -2"),
        (["--model", "Qwen2.5-7B", "--rank", "0"], 2, "--rank': must be positive, got 0"),
        (["--model", "Qwen2.5-7B", "--method", "dora"], 2, "'dora' is not one of"),
        (["--model", "Qwen2.5-7x"], 1, "unknown model `Qwen2.5-7x`"),
        ([], 2, "pass --model NAME|DIR or --config train.yaml"),
        (["--model", "Qwen2.5-7B", "--max-cutoff"], 2, "--max-cutoff needs a GPU"),
    ],
)
def test_bad_flags(args, code, message) -> None:
    result = invoke("estimate", *args)
    assert result.exit_code == code
    assert message in result.output
    assert "Traceback" not in result.output


def test_bad_config_files(tmp_path: Path) -> None:
    not_mapping = tmp_path / "list.yaml"
    not_mapping.write_text("- a\n- b\n")
    result = invoke("estimate", "--config", str(not_mapping))
    assert result.exit_code == 1 and "expected a mapping of LLaMA-Factory keys, got list" in result.output
    broken = tmp_path / "broken.yaml"
    broken.write_text("model_name_or_path: [unclosed\n")
    result = invoke("estimate", "--config", str(broken))
    assert result.exit_code == 1 and "not valid YAML (line 2, column 1: expected" in result.output
    typo = tmp_path / "typo.yaml"
    typo.write_text("model_name_or_path: Qwen2.5-7B\nlearning_rat: 1.0e-4\n")
    result = invoke("estimate", "--config", str(typo))
    assert result.exit_code == 1 and "learning_rat: unknown LLaMA-Factory" in result.output
    assert "did you mean `learning_rate`" in result.output
    missing = invoke("estimate", "--config", str(tmp_path / "nope.yaml"))
    assert (
        missing.exit_code == 1 and "does not exist; pass a LLaMA-Factory train config YAML" in missing.output
    )


def test_estimate_never_imports_torch() -> None:
    code = (
        "import sys; from lf_tuner.cli import main\n"
        "try:\n    main(['estimate', '--model', 'Qwen2.5-7B', '--json'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_check_exits_3_when_it_does_not_fit() -> None:
    args = ["estimate", "--model", "Qwen2.5-0.5B", "--cutoff", "1024", "--check"]
    fits = invoke(*args, "--gpu-memory", "24")
    assert fits.exit_code == 0 and fits.stderr == ""
    short = invoke(*args, "--gpu-memory", "4")
    assert short.exit_code == 3
    assert strip(short.stdout) == EXPECTED_TABLE  # the same report, then the verdict
    assert short.stderr == (
        "Error: does not fit 4 GiB GPU: short by 0.51 GiB; apply a change listed above, or check against "
        "other GPUs (--gpu-memory)\n"
    )
    as_json = invoke(*args, "--gpu-memory", "4", "--json")
    assert as_json.exit_code == 3 and json.loads(as_json.stdout)["fits"] is False
    assert (
        invoke("estimate", "--model", "Qwen2.5-0.5B", "--cutoff", "1024", "--gpu-memory", "4").exit_code == 0
    )


def test_check_and_max_cutoff_need_something_to_check_against(monkeypatch: pytest.MonkeyPatch) -> None:
    import lf_tuner.train.gpus

    monkeypatch.setattr(lf_tuner.train.gpus, "detect_gpus", lambda select=None: [])
    result = invoke("estimate", "--model", "Qwen2.5-0.5B", "--check")
    assert result.exit_code == 2
    assert (
        "Error: --check needs a GPU to check against (none detected): pass --gpu-memory GIB" in result.stderr
    )


def test_max_cutoff_says_when_nothing_fits() -> None:
    from dataclasses import replace

    from lf_tuner.memory import estimate, setup_from_config
    from lf_tuner.models import resolve_model

    setup = setup_from_config(
        {"model_name_or_path": "Qwen2.5-7B", "finetuning_type": "full", "per_device_train_batch_size": 1},
        resolve_model("Qwen2.5-7B"),
    )
    need = estimate(replace(setup, cutoff_len=128)).total_gib
    args = ["estimate", "--model", "Qwen2.5-7B", "--method", "full", "--max-cutoff", "--gpu-memory", "24"]
    result = invoke(*args)
    assert result.exit_code == 3
    assert "largest cutoff_len that fits" not in result.stdout
    line = result.stderr.splitlines()
    assert len(line) == 1
    assert line[0].startswith(
        f"Error: no cutoff_len fits 24 GiB GPU: even cutoff_len 128 needs {need:.2f} GiB; "
    )
    assert need > 24
    data = json.loads(invoke(*args, "--json").stdout)
    assert data["max_cutoff"] is None and data["max_cutoff_problem"] == line[0].removeprefix("Error: ")


def test_tables_are_never_cut_to_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    from lf_tuner.models import list_models

    monkeypatch.setenv("COLUMNS", "40")  # narrower than the table: the line is left long, numbers whole
    out = invoke("models").stdout
    assert "…" not in out
    for row in list_models():
        assert f" {row.hf_id} " in out
        assert row.params is None or f" {row.params / 1e9:.2f}B " in out


def test_deepspeed_both_spellings(tmp_path: Path) -> None:
    args = ["estimate", "--model", "Qwen2.5-7B", "--method", "full", "--gpus", "4", "--json"]
    dash = json.loads(invoke(*args, "--deepspeed", "z3-offload").stdout)
    under = json.loads(invoke(*args, "--deepspeed", "z3_offload").stdout)
    assert dash == under and dash["layout"] == "DeepSpeed z3-offload"
    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps({"zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu"}}}))
    cfg = tmp_path / "train.yaml"
    cfg.write_text(f"model_name_or_path: Qwen2.5-7B\nfinetuning_type: full\ndeepspeed: {ds}\n")
    from_file = json.loads(invoke("estimate", "--config", str(cfg), "--gpus", "4", "--json").stdout)
    assert from_file["layout"] == "DeepSpeed z3-offload"


def test_stage_flag_and_title() -> None:
    result = invoke("estimate", "--model", "Qwen2.5-0.5B", "--stage", "dpo", "--cutoff", "1024")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0] == "Qwen2.5-0.5B · lora · dpo · cutoff 1024 × batch 1"
    sft = json.loads(invoke("estimate", "--model", "Qwen2.5-0.5B", "--cutoff", "1024", "--json").stdout)
    dpo = json.loads(
        invoke("estimate", "--model", "Qwen2.5-0.5B", "--stage", "dpo", "--cutoff", "1024", "--json").stdout
    )
    assert dpo["total_gib"] > sft["total_gib"] and dpo["tokens_per_micro_batch"] == 2 * 1024


def test_accelerate_config_sets_fsdp_and_gpus(tmp_path: Path) -> None:
    accelerate = tmp_path / "fsdp.yaml"
    accelerate.write_text(
        "distributed_type: FSDP\nnum_processes: 8\nnum_machines: 2\nfsdp_config:\n"
        "  fsdp_sharding_strategy: HYBRID_SHARD\n  fsdp_offload_params: false\n"
    )
    result = invoke(
        "estimate", "--model", "Qwen2.5-7B", "--method", "full", "--accelerate-config", str(accelerate)
    )
    assert result.exit_code == 0, result.output
    assert "8 GPUs on 2 nodes · FSDP hybrid-shard" in result.stdout
    assert "FSDP gathered units" in result.stdout
    bad = tmp_path / "ds.yaml"
    bad.write_text("distributed_type: DEEPSPEED\n")
    refused = invoke("estimate", "--model", "Qwen2.5-7B", "--accelerate-config", str(bad))
    assert refused.exit_code == 1 and "put `deepspeed: ds_z3_config.json` there instead" in refused.output


def test_evaluation_line_and_notes(tmp_path: Path) -> None:
    cfg = tmp_path / "train.yaml"
    cfg.write_text(
        "model_name_or_path: Qwen2.5-0.5B\nfinetuning_type: full\nuse_galore: true\ncutoff_len: 1024\n"
        "per_device_train_batch_size: 1\nval_size: 0.1\neval_strategy: steps\nper_device_eval_batch_size: 4\n"
    )
    result = invoke("estimate", "--config", str(cfg))
    assert result.exit_code == 0, result.output
    lines = strip(result.stdout).splitlines()
    assert any(line.startswith("  training peak per GPU") for line in lines)
    assert any(line.startswith("  evaluation peak per GPU") for line in lines)
    assert any(line.startswith("evaluation (eval batch 4 × 1024 tokens): ") for line in lines)
    assert result.stderr.startswith("note: galore: LLaMA-Factory builds it only for optim")
    data = json.loads(invoke("estimate", "--config", str(cfg), "--json").stdout)
    assert data["total_gib"] == max(data["train_gib"], data["eval_gib"])
    assert data["notes"] and set(data["eval_components"]) >= {"logits_loss", "activations", "cuda_context"}


def test_ppo_config_is_refused_in_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "ppo.yaml"
    cfg.write_text("model_name_or_path: Qwen2.5-0.5B\nstage: ppo\nreward_model: saves/rm\n")
    result = invoke("estimate", "--config", str(cfg))
    assert result.exit_code == 1
    assert "stage ppo is not estimated" in result.output and "Traceback" not in result.output
