"""`lf-tuner render`: goldens for every preset x method, the security preset's values, bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from lf_tuner.cli import cli
from lf_tuner.config import METHODS, builtin_names
from lf_tuner.config.render import (
    Rendered,
    RenderRequest,
    dump_yaml,
    render_deepspeed,
    render_template,
    render_train_config,
    yaml_scalar,
)
from lf_tuner.errors import LfTunerError
from lf_tuner.memory import DeepSpeed

GOLDEN = Path(__file__).parent / "golden" / "render"
CASES = [(name, method) for name in builtin_names() for method in METHODS]
# the security preset, full tuning with ZeRO-3, checked against the schema only
FULL_Z3 = ["render", "--preset", "security", "--method", "full", "--deepspeed", "z3", "--schema-only"]


def render(preset: str | None = None, **kw: Any) -> Rendered:
    return render_train_config(RenderRequest(preset=preset, **kw))


def golden_render(name: str, method: str) -> Rendered:
    """The fixed inputs behind tests/golden/render/<preset>-<method>.yaml."""
    extra = {} if name == "security" else {"model": "Qwen2.5-7B-Instruct", "dataset": "my_data"}
    return render(name, method=method, gpu_memory_gib=24.0, data_size=5000, **extra)


@pytest.mark.parametrize(("name", "method"), CASES)
def test_golden(name: str, method: str, update_golden: bool) -> None:
    rendered = golden_render(name, method)
    path = GOLDEN / f"{name}-{method}.yaml"
    if update_golden:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rendered.yaml)
    assert path.is_file(), f"{path} missing; run pytest --update-golden and review the diff"
    assert rendered.yaml == path.read_text()
    assert yaml.safe_load(rendered.yaml) == rendered.config  # the comments do not change the values
    cfg = rendered.config
    assert cfg["logging_nan_inf_filter"] is False
    assert cfg["report_to"] == "none" and cfg["plot_loss"] is True and cfg["logging_steps"] > 0
    assert "overwrite_output_dir" not in cfg
    assert cfg["finetuning_type"] == ("lora" if method == "qlora" else method)
    assert ("quantization_bit" in cfg) == (method == "qlora")


SECURITY = {
    "stage": "sft",
    "do_train": True,
    "model_name_or_path": "Qwen/Qwen2.5-7B-Instruct",
    "preprocessing_num_workers": 16,
    "finetuning_type": "lora",
    "template": "qwen",
    "flash_attn": "auto",
    "dataset_dir": "data",
    "dataset": "security",
    "cutoff_len": 4096,
    "learning_rate": 5.0e-5,
    "num_train_epochs": 3.0,
    "per_device_train_batch_size": 1,
    "gradient_accumulation_steps": 8,
    "lr_scheduler_type": "cosine",
    "max_grad_norm": 1.0,
    "save_steps": 100,
    "warmup_steps": 0,
    "bf16": True,
    "plot_loss": True,
    "lora_rank": 8,
    "lora_alpha": 16,
    "lora_dropout": 0,
    "val_size": 0.15,
    "optim": "adamw_torch",
}
ALWAYS = {"logging_nan_inf_filter": False, "report_to": "none", "logging_steps": 10}


def test_security_preset_cli_values() -> None:
    result = CliRunner().invoke(
        cli, ["render", "--preset", "security", "--schema-only", "--output-dir", "saves/sec"]
    )
    assert result.exit_code == 0, result.output
    cfg = yaml.safe_load(result.stdout)
    assert cfg == {**SECURITY, **ALWAYS, "output_dir": "saves/sec"}
    assert "5.0e-5" in result.stdout
    default = render("security").config["output_dir"]
    assert default == "saves/Qwen2.5-7B-Instruct/lora/security"


@pytest.mark.parametrize(
    ("gib", "size", "batch", "accum", "epochs"),
    [(8, 500, 8, 4, 5.0), (16, 5000, 16, 2, 3.0), (40, 50000, 32, 1, 2.0)],
)
def test_task_lookup_by_gpu_and_data(gib: float, size: int, batch: int, accum: int, epochs: float) -> None:
    cfg = render(
        "sentiment_analysis", model="Qwen2.5-7B-Instruct", dataset="d", gpu_memory_gib=gib, data_size=size
    ).config
    assert (cfg["per_device_train_batch_size"], cfg["gradient_accumulation_steps"]) == (batch, accum)
    assert cfg["num_train_epochs"] == epochs
    assert cfg["early_stopping_steps"] == max(2, int(epochs) // 2)
    assert cfg["lr_scheduler_type"] == "linear" and cfg["warmup_ratio"] == 0.1 and cfg["weight_decay"] == 0.01


@pytest.mark.parametrize(
    ("method", "lr"), [("full", 1e-5), ("lora", 2e-5), ("qlora", 2e-5), ("freeze", 1e-5)]
)
def test_task_learning_rate_by_method(method: str, lr: float) -> None:
    cfg = render(
        "chatbot", model="Qwen2.5-7B-Instruct", dataset="d", method=method, gpu_memory_gib=24, data_size=10
    ).config
    assert cfg["learning_rate"] == lr
    assert cfg["cutoff_len"] == 2048 and cfg["lr_scheduler_type"] == "cosine"
    assert cfg["num_train_epochs"] == 3.0 and cfg["per_device_train_batch_size"] == 8


def test_template_inferred_from_model_family(tmp_path: Path) -> None:
    assert render("default", model="Llama-3.1-8B-Instruct", dataset="d").config["template"] == "llama3"
    assert render("default", model="Qwen3-8B", dataset="d").config["template"] == "qwen3"
    assert (
        render("default", model="Qwen2.5-7B-Instruct", dataset="d", template="default").config["template"]
        == "default"
    )
    local = tmp_path / "m"
    local.mkdir()
    (local / "config.json").write_text(
        json.dumps(
            {
                "model_type": "qwen2",
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "vocab_size": 512,
            }
        )
    )
    cfg = render("default", model=str(local), dataset="d").config
    assert cfg["template"] == "qwen" and cfg["model_name_or_path"] == str(local)


def test_unknown_hub_model_needs_template() -> None:
    with pytest.raises(
        LfTunerError, match="template: cannot tell the chat template of `someorg/x`; pass --template"
    ):
        render("default", model="someorg/x", dataset="d")
    assert (
        render("default", model="someorg/x", dataset="d", template="qwen").config["model_name_or_path"]
        == "someorg/x"
    )


def test_overrides_and_removals_are_explained() -> None:
    rendered = render("security", overrides=("learning_rate=1e-4", "~val_size", "enable_liger_kernel=true"))
    cfg = rendered.config
    assert cfg["learning_rate"] == 1e-4 and "val_size" not in cfg and cfg["enable_liger_kernel"] is True
    assert "learning_rate: 1.0e-4  # set by override" in rendered.yaml
    assert (
        "enable_liger_kernel: true  # set by override" in rendered.yaml.split("### model")[1].split("###")[0]
    )


def test_bad_override_key_and_type_reported_together() -> None:
    with pytest.raises(LfTunerError) as info:
        render("security", overrides=("learning_rat=1e-4", "cutoff_len=long", "lr_scheduler_type=cosin"))
    message = info.value.message
    assert message.splitlines() == [
        "rendered config has 3 problems:",
        'cutoff_len: "long" is a str, expected int',
        "lr_scheduler_type: `cosin` is not allowed; did you mean `cosine`? use one of: linear, cosine, "
        "cosine_with_restarts, polynomial, constant, constant_with_warmup, inverse_sqrt, reduce_lr_on_plateau, "
        "cosine_with_min_lr, cosine_warmup_with_min_lr, warmup_stable_decay, greedy",
        "learning_rat: unknown LLaMA-Factory 0.9.5 key; did you mean `learning_rate`?",
    ]


def test_cli_bad_override_exit_1_no_traceback() -> None:
    result = CliRunner().invoke(cli, ["render", "--preset", "security", "--schema-only", "learning_rat=1"])
    assert result.exit_code == 1
    assert "learning_rat: unknown LLaMA-Factory 0.9.5 key; did you mean `learning_rate`?" in result.output
    assert "Traceback" not in result.output


def test_missing_model_and_dataset() -> None:
    with pytest.raises(
        LfTunerError, match="model_name_or_path: preset `chatbot` names no model; pass --model"
    ):
        render("chatbot")
    with pytest.raises(LfTunerError, match="dataset: preset `chatbot` names no dataset; pass --dataset"):
        render("chatbot", model="Qwen2.5-7B-Instruct")


def test_unknown_preset() -> None:
    result = CliRunner().invoke(cli, ["render", "--preset", "nope", "--schema-only"])
    assert result.exit_code == 1
    assert "unknown preset `nope`" in result.output


def test_output_file_is_never_overwritten_without_force(tmp_path: Path) -> None:
    out = tmp_path / "train.yaml"
    out.write_text("mine\n")
    runner = CliRunner()
    result = runner.invoke(cli, ["render", "--preset", "security", "--schema-only", "-o", str(out)])
    assert result.exit_code == 1
    assert f"{out} exists; pass --force" in result.output
    assert out.read_text() == "mine\n"
    result = runner.invoke(
        cli, ["render", "--preset", "security", "--schema-only", "-o", str(out), "--force"]
    )
    assert result.exit_code == 0, result.output
    assert out.read_text() == render("security").yaml
    assert result.stdout == ""


def test_template_missing_variables_reported_at_once() -> None:
    with pytest.raises(LfTunerError) as info:
        render_template("deepspeed/ds_config.json.j2", {})
    assert info.value.message == (
        "template deepspeed/ds_config.json.j2: missing variable(s) offload, stage; pass them all to render_template"
    )
    with pytest.raises(LfTunerError, match=r"missing variable\(s\) .*cutoff_len.*dataset"):
        render_template("train.yaml.j2", {"method": "lora"})


def test_bare_data_file_registered_and_merged(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    info = data / "dataset_info.json"
    info.write_text(json.dumps({"theirs": {"file_name": "theirs.json"}}))
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}] * 3
    (data / "chat.json").write_text(json.dumps(rows))
    out = tmp_path / "t.yaml"
    runner = CliRunner()
    args = [
        "render",
        "--preset",
        "chatbot",
        "--model",
        "Qwen2.5-7B-Instruct",
        "--dataset",
        str(data / "chat.json"),
        "--gpu-memory",
        "24",
        "--schema-only",
        "-o",
        str(out),
    ]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    merged = json.loads(info.read_text())
    assert merged["theirs"] == {"file_name": "theirs.json"}
    assert merged["chat"] == {
        "file_name": "chat.json",
        "formatting": "sharegpt",
        "columns": {"messages": "messages"},
        "tags": {
            "role_tag": "role",
            "content_tag": "content",
            "user_tag": "user",
            "assistant_tag": "assistant",
            "system_tag": "system",
        },
    }
    cfg = yaml.safe_load(out.read_text())
    assert cfg["dataset"] == "chat" and cfg["dataset_dir"] == str(data)
    assert cfg["num_train_epochs"] == 3.0  # 3 rows: small data class
    # a different entry under the same name is kept, --force or not: --force only replaces -o
    info.write_text(json.dumps({"chat": {"file_name": "other.json"}}))
    result = runner.invoke(cli, [*args[:-1], str(tmp_path / "u.yaml"), "--force"])
    assert result.exit_code == 1
    assert result.output == (
        f"Error: dataset: {info} already has a `chat` entry for another file; lf-tuner will not change it: "
        "register chat.json there under another name and pass --dataset NAME, or rename the file\n"
    )
    assert json.loads(info.read_text()) == {"chat": {"file_name": "other.json"}}
    assert not (tmp_path / "u.yaml").exists()


HAND_WRITTEN = {
    "my_chat": {
        "file_name": "chat.json",
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "system": "system"},
        "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"},
    }
}


def _sharegpt_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    row = {"system": "s", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}
    (data / "chat.json").write_text(json.dumps([row] * 3))
    (data / "dataset_info.json").write_text(json.dumps(HAND_WRITTEN, indent=4))
    return data


def test_force_keeps_a_hand_written_entry_for_the_same_file(tmp_path: Path) -> None:
    """The issue's data loss: `render --force` rewrote the entry and dropped columns.system and the tags."""
    data = _sharegpt_dir(tmp_path)
    before = (data / "dataset_info.json").read_bytes()
    out = tmp_path / "t.yaml"
    out.write_text("old\n")
    args = ["render", "--model", "Qwen2.5-7B-Instruct", "--dataset", str(data / "chat.json"), "--schema-only"]
    result = CliRunner().invoke(cli, [*args, "-o", str(out), "--force"])
    assert result.exit_code == 0, result.output
    assert (data / "dataset_info.json").read_bytes() == before
    cfg = yaml.safe_load(out.read_text())
    assert cfg["dataset"] == "my_chat" and cfg["dataset_dir"] == str(data)
    assert result.stderr == f"wrote {out}\n"


def test_render_to_stdout_writes_nothing_else(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.json").write_text(json.dumps([{"instruction": "i", "input": "", "output": "o"}]))
    monkeypatch.chdir(tmp_path)
    args = ["render", "--model", "Qwen2.5-7B-Instruct", "--dataset", str(data / "a.json"), "--schema-only"]
    result = CliRunner().invoke(cli, [*args, "--method", "full", "--deepspeed", "z3"])
    assert result.exit_code == 0, result.output
    files = [
        p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if "lf-tuner-home" not in p.parts
    ]
    assert sorted(files) == ["data", "data/a.json"]
    assert yaml.safe_load(result.stdout)["dataset"] == "a"
    notes = result.stderr.splitlines()
    assert notes[0].startswith(
        f"note: not written: `a` is not in {data / 'dataset_info.json'} yet; render with -o FILE to add it, "
        'or add it yourself: "a": {"file_name": "a.json"'
    )
    assert notes[1] == (
        f"note: not written: {tmp_path.resolve() / 'ds_z3_config.json'} (z3); "
        "render with -o FILE to write it beside the config"
    )


def test_output_into_a_missing_folder_is_one_line(tmp_path: Path) -> None:
    out = tmp_path / "nope" / "t.yaml"
    result = CliRunner().invoke(cli, ["render", "--preset", "security", "--schema-only", "-o", str(out)])
    assert result.exit_code == 1
    assert (
        result.output == f"Error: {out.parent} is not a directory; create it first (mkdir -p {out.parent})\n"
    )
    assert not out.parent.exists()


def test_force_does_not_replace_an_edited_deepspeed_json(tmp_path: Path) -> None:
    out = tmp_path / "full.yaml"
    ds = tmp_path / "ds_z3_config.json"
    ds.write_text('{"mine": true}\n')
    result = CliRunner().invoke(cli, [*FULL_Z3, "-o", str(out), "--force"])
    assert result.exit_code == 1
    assert f"{ds.resolve()} exists with other content; lf-tuner will not replace it" in result.output
    assert ds.read_text() == '{"mine": true}\n' and not out.exists()


def test_deepspeed_option_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "full.yaml"
    result = CliRunner().invoke(cli, [*FULL_Z3, "-o", str(out)])
    assert result.exit_code == 0, result.output
    ds = tmp_path / "ds_z3_config.json"
    assert yaml.safe_load(out.read_text())["deepspeed"] == str(ds.resolve())
    assert json.loads(ds.read_text())["zero_optimization"]["stage"] == 3


def test_zero3_cross_rule() -> None:
    result = CliRunner().invoke(cli, [*FULL_Z3, "pure_bf16=true"])
    assert result.exit_code == 1
    assert "pure_bf16: `pure_bf16` is incompatible with DeepSpeed ZeRO-3" in result.output


@pytest.mark.parametrize("kind", ["z2", "z2_offload", "z3", "z3_offload", "z2-offload", "z3-offload"])
def test_deepspeed_templates_are_valid_json(kind: str) -> None:
    raw = json.loads(render_deepspeed(kind))
    zero = raw["zero_optimization"]
    assert zero["stage"] == int(kind[1])
    assert ("offload_optimizer" in zero) == kind.endswith("offload")
    assert ("offload_param" in zero) == (kind.replace("-", "_") == "z3_offload")
    # the one DeepSpeed type reads the JSON back as the kind it was written for
    assert DeepSpeed.from_json(raw) == DeepSpeed.from_kind(kind)


def test_render_deepspeed_takes_both_spellings(tmp_path: Path) -> None:
    for kind in ("z3-offload", "z3_offload"):
        out = tmp_path / f"{kind}.yaml"
        args = ["render", "--preset", "security", "--method", "full", "--deepspeed", kind, "--schema-only"]
        result = CliRunner().invoke(cli, [*args, "-o", str(out), "--force"])
        assert result.exit_code == 0, result.output
        assert yaml.safe_load(out.read_text())["deepspeed"] == str(
            (tmp_path / "ds_z3_offload_config.json").resolve()
        )


def test_explain_prints_reasons_on_stderr() -> None:
    result = CliRunner().invoke(
        cli,
        [
            "render",
            "--preset",
            "summarization",
            "--model",
            "Qwen2.5-7B-Instruct",
            "--dataset",
            "d",
            "--gpu-memory",
            "10",
            "--data-size",
            "20000",
            "--schema-only",
            "--explain",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "why: per_device_train_batch_size: 2 (small GPU class (10 GiB))" in result.stderr
    assert "why: num_train_epochs: 2.0 (large data class (20000 samples))" in result.stderr
    assert "why:" not in result.stdout


def test_cutoff_flag() -> None:
    assert render("security", cutoff=1024).config["cutoff_len"] == 1024
    result = CliRunner().invoke(cli, ["render", "--preset", "security", "--cutoff", "abc", "--schema-only"])
    assert result.exit_code == 2
    assert "`abc` is not a positive whole number or `auto`" in result.output


def test_yaml_scalar_formats() -> None:
    assert [yaml_scalar(v) for v in (5e-5, 3e-4, 1e-4, 0.15, 3.0, 0.0, 1e20, True, None, "a: b", [1, 2])] == [
        "5.0e-5",
        "3.0e-4",
        "1.0e-4",
        "0.15",
        "3.0",
        "0.0",
        "1.0e+20",
        "true",
        "null",
        "'a: b'",
        "[1, 2]",
    ]
    text = dump_yaml({"learning_rate": 1.5e-5, "zzz_unknown": 1, "model_name_or_path": "m"})
    assert (
        text
        == "### model\nmodel_name_or_path: m\n\n### train\nlearning_rate: 1.5e-5\n\n### other\nzzz_unknown: 1\n"
    )
    assert yaml.safe_load(text) == {"learning_rate": 1.5e-5, "zzz_unknown": 1, "model_name_or_path": "m"}


def test_cutoff_auto_measures_the_dataset(tmp_path: Path) -> None:
    from tests.tiny import TINY_CONFIG, build_tokenizer, write_alpaca

    model = build_tokenizer(tmp_path / "model")
    (model / "config.json").write_text(json.dumps(TINY_CONFIG))
    data = tmp_path / "data"
    data.mkdir()
    write_alpaca(data / "a.json", n=40)
    rendered = render("default", model=str(model), dataset=str(data / "a.json"), cutoff="auto", data_size=40)
    assert rendered.config["cutoff_len"] == 128  # ~50-token samples, rounded up to a multiple of 128
    assert rendered.why["cutoff_len"] == "95th percentile of the dataset's token lengths, rounded up to 128"


def test_fit_applies_the_first_change_that_fits() -> None:
    """`render --fit` and `run --fit` share config.fit.check_fit: the change applied is memory's first."""
    from lf_tuner.config import check_fit
    from lf_tuner.memory import Budget, fit_changes

    args = ["render", "--preset", "security", "--schema-only"]  # its batch does not depend on the GPU
    roomy = CliRunner().invoke(cli, [*args, "--gpu-memory", "80", "--fit"])
    assert roomy.exit_code == 0, roomy.output
    assert roomy.stderr.splitlines()[-1].startswith("fit: fits as is: estimated peak ")
    base = render("security")
    before = check_fit(base.config, [], gpus=1).estimate
    budget = int(before.total_bytes * 0.8)
    expected = fit_changes(before.setup, budget)[0]
    assert check_fit(base.config, [Budget("GPU", budget)], gpus=1).change == expected
    gib = budget / 2**30
    tight = CliRunner().invoke(cli, [*args, "--gpu-memory", f"{gib}", "--fit"])
    assert tight.exit_code == 0, tight.output
    cfg = yaml.safe_load(tight.stdout)
    assert all(cfg[key] == value for key, value in expected.overrides.items())
    assert f"fit: chose: {expected.description} (estimated peak {expected.total_gib:.1f} GiB)" in tight.stderr
    assert f"  # --fit: {expected.description}" in tight.stdout
