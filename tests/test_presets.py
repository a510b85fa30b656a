"""Preset files: strict schema, ls/show/cp."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from lf_tuner.cli import cli
from lf_tuner.config.presets import (
    builtin_names,
    builtin_text,
    data_class,
    gpu_class,
    load_preset,
    parse_preset,
)
from lf_tuner.errors import LfTunerError

EXPECTED = [
    "chatbot",
    "default",
    "dpo",
    "extractive_qa",
    "generative_qa",
    "kto",
    "lora-tuned",
    "pretrain",
    "security",
    "sentiment_analysis",
    "summarization",
    "text_classification",
    "text_generation",
]


def test_builtin_presets_load_and_show_their_command() -> None:
    assert builtin_names() == EXPECTED
    for name in EXPECTED:
        text = builtin_text(name)
        first = text.splitlines()[0]
        assert first.startswith("# lf-tuner render"), name
        if name != "default":
            assert f"--preset {name}" in first
        load_preset(name)


def test_lora_tuned_keeps_the_log_lessons() -> None:
    text = builtin_text("lora-tuned")
    assert "above 1e-3 diverged" in text
    assert "rank 64 gave nothing over 32" in text
    assert "768 did worse than 512" in text
    _, preset = load_preset("lora-tuned")
    assert preset.lora.rank == 32 and preset.lora.alpha == 128 and preset.lora.dropout == 0.05
    assert preset.cutoff_len == 512 and preset.num_train_epochs == 4.0


@pytest.mark.parametrize(
    ("gib", "cls"),
    [(8, "small"), (11.9, "small"), (12, "medium"), (23.9, "medium"), (24, "large"), (80, "large")],
)
def test_gpu_class(gib: float, cls: str) -> None:
    assert gpu_class(gib) == cls


@pytest.mark.parametrize(
    ("n", "cls"), [(1, "small"), (999, "small"), (1000, "medium"), (9999, "medium"), (10000, "large")]
)
def test_data_class(n: int, cls: str) -> None:
    assert data_class(n) == cls


def test_preset_with_typo_lists_every_problem(tmp_path: Path) -> None:
    text = (
        builtin_text("security").replace("learning_rate:", "learning_rat:").replace("  rank: 8", "  rnak: 8")
    )
    text += "extra:\n  warmup_ratoi: 0.1\n"
    with pytest.raises(LfTunerError) as info:
        parse_preset(text, "my.yaml")
    message = info.value.message
    assert message.splitlines() == [
        "my.yaml has 4 problems:",
        "learning_rate: required key is missing",
        "lora.rnak: unknown preset key; did you mean `rank`?",
        "extra: `warmup_ratoi` is not a LLaMA-Factory key; did you mean `warmup_ratio` or `warmup_steps` "
        "or `badam_update_ratio`?",
        "learning_rat: unknown preset key; did you mean `learning_rate`?",
    ]


def test_preset_bad_choice_and_types() -> None:
    text = builtin_text("security").replace("lr_scheduler_type: cosine", "lr_scheduler_type: cosin")
    text = text.replace("cutoff_len: 4096", "cutoff_len: -1")
    with pytest.raises(
        LfTunerError, match=r"lr_scheduler_type: `cosin` is not allowed; did you mean `cosine`"
    ) as info:
        parse_preset(text, "p.yaml")
    assert "\ncutoff_len: Input should be greater than 0 (got -1)\n" in info.value.message


def test_preset_by_method_value_names_the_key_not_the_union_branch() -> None:
    text = builtin_text("security").replace("learning_rate: 5.0e-5", "learning_rate: {lora: 1.0e-4}")
    with pytest.raises(LfTunerError) as info:
        parse_preset(text, "p.yaml")
    lines = info.value.message.splitlines()[1:]
    assert "learning_rate.full: required key is missing" in lines
    assert "learning_rate: Input should be a valid number (got {'lora': 0.0001})" not in lines


def test_preset_with_a_duplicate_key_names_both_lines() -> None:
    text = builtin_text("security") + "cutoff_len: 1024\n"
    first = text.splitlines().index("cutoff_len: 4096") + 1
    with pytest.raises(LfTunerError) as info:
        parse_preset(text, "p.yaml")
    last = len(text.splitlines())
    assert info.value.message == (
        f"p.yaml has 1 problem:\ncutoff_len: given twice (lines {first} and {last}); keep one"
    )


def test_unknown_preset_cli() -> None:
    result = CliRunner().invoke(cli, ["presets", "show", "securty"])
    assert result.exit_code == 1
    assert "Error: preset: unknown preset `securty`; did you mean `security`?" in result.output


def test_presets_ls_table_and_json() -> None:
    result = CliRunner().invoke(cli, ["presets", "ls"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0] == "NAME                 DESCRIPTION"
    assert (
        lines[1 + EXPECTED.index("security")]
        == "security             Security fine-tune from the parameter guide (LoRA, Qwen2.5-7B-Instruct, 4096 tokens)"
    )
    assert [line.split()[0] for line in lines[1:]] == EXPECTED
    data = json.loads(CliRunner().invoke(cli, ["presets", "ls", "--json"]).output)
    assert [d["name"] for d in data] == EXPECTED


def test_presets_show_prints_the_file() -> None:
    result = CliRunner().invoke(cli, ["presets", "show", "lora-tuned"])
    assert result.exit_code == 0
    assert result.output == builtin_text("lora-tuned")


def test_presets_cp_refuses_overwrite(tmp_path: Path) -> None:
    runner = CliRunner()
    dest = tmp_path / "mine.yaml"
    assert runner.invoke(cli, ["presets", "cp", "security", str(dest)]).exit_code == 0
    assert dest.read_text() == builtin_text("security")
    dest.write_text("edited\n")
    result = runner.invoke(cli, ["presets", "cp", "security", str(dest)])
    assert result.exit_code == 1
    assert f"{dest} exists; pass --force" in result.output
    assert dest.read_text() == "edited\n"
    assert runner.invoke(cli, ["presets", "cp", "security", str(dest), "--force"]).exit_code == 0
    assert dest.read_text() == builtin_text("security")
    # into a directory
    assert runner.invoke(cli, ["presets", "cp", "chatbot", str(tmp_path)]).exit_code == 0
    assert (tmp_path / "chatbot.yaml").read_text() == builtin_text("chatbot")


def test_copied_preset_can_be_used_by_path(tmp_path: Path) -> None:
    dest = tmp_path / "mine.yaml"
    dest.write_text(builtin_text("security").replace("cutoff_len: 4096", "cutoff_len: 1024"))
    result = CliRunner().invoke(cli, ["render", "--preset", str(dest), "--schema-only"])
    assert result.exit_code == 0, result.output
    assert "cutoff_len: 1024" in result.stdout
