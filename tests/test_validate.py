"""`lf-tuner validate` and the config checks: schema (always) and LLaMA-Factory's own parser (when installed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from lf_tuner.cli import cli
from lf_tuner.config.render import render_deepspeed
from lf_tuner.config.schema import load_schema
from lf_tuner.config.validate import (
    validate_config,
    validate_deepspeed_dict,
    validate_many_with_llamafactory,
)
from lf_tuner.errors import Problem
from tests.conftest import requires_llamafactory
from tests.test_render import CASES, golden_render

GOOD = {
    "model_name_or_path": "Qwen/Qwen2.5-0.5B-Instruct",
    "stage": "sft",
    "do_train": True,
    "finetuning_type": "lora",
    "dataset": "d",
    "template": "qwen",
    "cutoff_len": 1024,
    "output_dir": "saves/x",
    "per_device_train_batch_size": 2,
    "learning_rate": 1e-4,
    "num_train_epochs": 3,
    "bf16": True,
}


def test_schema_ships_every_llamafactory_key() -> None:
    schema = load_schema()
    assert schema.llamafactory_version == "0.9.5"
    assert len(schema.keys()) == 346
    assert schema["finetuning_type"].choices == ("lora", "oft", "freeze", "full")
    assert schema["cutoff_len"].kinds == ("int",) and schema["cutoff_len"].default == 2048


def test_good_config_has_no_problems() -> None:
    assert validate_config(GOOD) == []
    assert str(Problem("a", "b")) == "a: b"


@pytest.mark.parametrize(
    ("change", "line"),
    [
        (
            {"learning_rat": 1e-4},
            "learning_rat: unknown LLaMA-Factory 0.9.5 key; did you mean `learning_rate`?",
        ),
        ({"cutoff_len": "abc"}, 'cutoff_len: "abc" is a str, expected int'),
        ({"cutoff_len": 1.5}, "cutoff_len: 1.5 is a float, expected int"),
        ({"bf16": "yes"}, 'bf16: "yes" is a str, expected bool'),
        (
            {"flash_attn": "foo"},
            "flash_attn: `foo` is not allowed; use one of: auto, disabled, sdpa, fa2, fa3",
        ),
        (
            {"finetuning_type": "qlora"},
            "finetuning_type: `qlora` is not allowed; did you mean `lora`? use one of: lora, oft, freeze, full",
        ),
        ({"learning_rate": 0}, "learning_rate: 0 must be greater than 0"),
        ({"fp16": True}, "fp16: `bf16` and `fp16` are both true; keep one (bf16 on Ampere or newer)"),
        (
            {"finetuning_type": "full", "quantization_bit": 4},
            "quantization_bit: quantization needs `finetuning_type: lora` (it is full); use --method qlora",
        ),
        (
            {"do_eval": True},
            "val_size: evaluation is on but there is no eval data; set `val_size: 0.1` or `eval_dataset`",
        ),
        ({"dataset": None}, "dataset: missing; training needs a dataset name from dataset_info.json"),
        (
            {"stage": "dpo", "neat_packing": True},
            "neat_packing: only valid with `stage: sft` (this config has stage dpo)",
        ),
        (
            {"early_stopping_steps": 3},
            "early_stopping_steps: needs `load_best_model_at_end: true` and `metric_for_best_model`",
        ),
        (
            {
                "val_size": 0.1,
                "eval_strategy": "steps",
                "eval_steps": 30,
                "save_steps": 100,
                "load_best_model_at_end": True,
            },
            "save_steps: 100 must be a multiple of eval_steps 30",
        ),
        (
            {"finetuning_type": "freeze", "use_dora": True},
            "use_dora: only valid for LoRA training (finetuning_type is freeze)",
        ),
    ],
)
def test_schema_problems(change: dict[str, object], line: str) -> None:
    problems = [str(p) for p in validate_config({**GOOD, **change})]
    assert line in problems


def test_all_problems_at_once() -> None:
    cfg = {**GOOD, "learning_rat": 1, "cutoff_len": "x", "optim": "adam"}
    del cfg["output_dir"]
    keys = [p.key for p in validate_config(cfg)]
    assert keys == ["cutoff_len", "learning_rat", "optim", "output_dir"]


def test_list_allowed_where_llamafactory_splits() -> None:
    assert validate_config({**GOOD, "dataset": ["a", "b"], "lora_target": ["q_proj", "v_proj"]}) == []
    assert [str(p) for p in validate_config({**GOOD, "template": ["qwen"]})] == [
        'template: ["qwen"] is a list, expected str or null'
    ]


def test_deepspeed_json_checked_apart(tmp_path: Path) -> None:
    assert validate_deepspeed_dict(json.loads(render_deepspeed("z3_offload"))) == []
    assert [str(p) for p in validate_deepspeed_dict({"zero_optimization": {"stage": 5}})] == [
        "deepspeed: `zero_optimization.stage` must be 0, 1, 2 or 3"
    ]
    cfg = {**GOOD, "deepspeed": "missing.json"}
    assert "deepspeed: missing.json does not exist; write one with `lf-tuner render --deepspeed z3`" in [
        str(p) for p in validate_config(cfg, base_dir=tmp_path)
    ]
    (tmp_path / "ds.json").write_text(render_deepspeed("z3"))
    cfg = {**GOOD, "finetuning_type": "full", "deepspeed": "ds.json", "pure_bf16": True}
    assert [str(p) for p in validate_config(cfg, base_dir=tmp_path)] == [
        "pure_bf16: `pure_bf16` is incompatible with DeepSpeed ZeRO-3"
    ]


def write(tmp_path: Path, cfg: dict[str, object]) -> Path:
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_validate_cli_reports_every_problem_exit_1(tmp_path: Path) -> None:
    path = write(tmp_path, {**GOOD, "learning_rat": 1, "cutoff_len": "x"})
    result = CliRunner().invoke(cli, ["validate", str(path), "--schema-only"])
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {path} has 2 problems:\n"
        'cutoff_len: "x" is a str, expected int\n'
        "learning_rat: unknown LLaMA-Factory 0.9.5 key; did you mean `learning_rate`?\n"
    )


def test_validate_cli_ok_and_json(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    result = CliRunner().invoke(cli, ["validate", str(path), "--schema-only"])
    assert result.exit_code == 0
    assert result.stderr == f"{path}: ok (schema)\n" and result.stdout == ""
    bad = write(tmp_path, {**GOOD, "bf16": "x"})
    result = CliRunner().invoke(cli, ["validate", str(bad), "--schema-only", "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout) == [{"key": "bf16", "message": '"x" is a str, expected bool'}]


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "does not exist"), ("a: [1", "not valid YAML"), ("- 1\n", "expected a mapping")],
)
def test_validate_cli_unreadable(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "c.yaml"
    if content is not None:
        path.write_text(content)
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output


# --------------------------------------------------------------------------- with llamafactory


@requires_llamafactory
@pytest.mark.llamafactory
@pytest.mark.slow
def test_every_golden_config_passes_llamafactory_parser() -> None:
    """One subprocess (one llamafactory import) for all golden configs and a few wrong ones."""
    configs = [golden_render(name, method).config for name, method in CASES]
    no_eval_data = {k: v for k, v in configs[0].items() if k != "val_size"} | {"do_eval": True}
    wrong = [no_eval_data, {**GOOD, "finetuning_type": "qlora"}, {**GOOD, "bogus_key": 1}]
    # GOOD has bf16: true, which LLaMA-Factory refuses on a CPU-only machine unless judged as on the GPU one
    results = validate_many_with_llamafactory([*configs, *wrong, GOOD])
    failed = {f"{n}-{m}": [str(p) for p in r] for (n, m), r in zip(CASES, results, strict=False) if r}
    assert failed == {}
    assert [[str(p) for p in r] for r in results[len(configs) :]] == [
        ["llamafactory: Please make sure eval_dataset be provided or val_size >1e-6"],
        ["llamafactory: Invalid fine-tuning method."],
        ["bogus_key: LLaMA-Factory does not know this key"],
        [],
    ]


@requires_llamafactory
@pytest.mark.llamafactory
def test_shipped_schema_matches_installed_llamafactory() -> None:
    from lf_tuner.config.schema import SCHEMA_RESOURCE, build_schema, schema_json

    shipped = (Path(__file__).parent.parent / "lf_tuner" / "config" / SCHEMA_RESOURCE).read_text()
    assert schema_json(build_schema()) == shipped, "stale schema: run scripts/gen_schema.py"


@requires_llamafactory
@pytest.mark.llamafactory
@pytest.mark.parametrize("kind", ["z2", "z2_offload", "z3", "z3_offload"])
def test_deepspeed_equals_llamafactory_files(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llamafactory.webui import common

    monkeypatch.setattr(common, "DEFAULT_CACHE_DIR", str(tmp_path))
    common.create_ds_config()
    theirs = json.loads((tmp_path / f"ds_{kind}_config.json").read_text())
    assert json.loads(render_deepspeed(kind)) == theirs
