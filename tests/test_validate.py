"""`lf-tuner validate` and the config checks: schema (always) and LLaMA-Factory's own parser (when installed)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from lf_tuner.cli import cli
from lf_tuner.config import load_schema, render_deepspeed
from lf_tuner.config.validate import (
    RULES,
    Context,
    check_files,
    lora_target_modules,
    quantization,
    template_known,
    validate_config,
    validate_deepspeed_dict,
    validate_many_with_llamafactory,
)
from lf_tuner.errors import LfTunerError, Problem
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
        ({"lora_dropout": 1.0}, "lora_dropout: 1.0 must be in [0, 1)"),
    ],
)
def test_schema_problems(change: dict[str, object], line: str) -> None:
    problems = [str(p) for p in validate_config({**GOOD, **change})]
    assert line in problems


# One row (or more) per rule in RULES: the rule's name, what the row changes in GOOD, and the line it gives
# (None: the change is fine and the rule says nothing).
RULE_ROWS: list[tuple[str, dict[str, object], str | None]] = [
    (
        "required_keys",
        {"dataset": None},
        "dataset: missing; training needs a dataset name from dataset_info.json",
    ),
    (
        "required_keys",
        {"output_dir": ""},
        "output_dir: missing; set a fresh directory, e.g. saves/<model>/<method>/<name>",
    ),
    (
        "required_keys",
        {"model_name_or_path": None},
        "model_name_or_path: missing; set it to a Hub id or a local model directory",
    ),
    (
        "one_precision",
        {"fp16": True},
        "fp16: `bf16` and `fp16` are both true; keep one (bf16 on Ampere or newer)",
    ),
    (
        "sft_only_keys",
        {"stage": "dpo", "neat_packing": True},
        "neat_packing: only valid with `stage: sft` (this config has stage dpo)",
    ),
    (
        "predict_needs_generate",
        {"do_predict": True, "val_size": 0.1},
        "do_predict: needs `predict_with_generate: true` to save predictions",
    ),
    (
        "stage_limits",
        {"stage": "ppo", "do_train": False},
        "do_train: PPO does not support evaluation only; set `do_train: true`",
    ),
    (
        "stage_limits",
        {"stage": "rm", "load_best_model_at_end": True},
        "load_best_model_at_end: not supported by stage rm; remove it",
    ),
    (
        "eval_data",
        {"do_eval": True},
        "val_size: evaluation is on but there is no eval data; set `val_size: 0.1` or `eval_dataset`",
    ),
    (
        "eval_data",
        {"val_size": 0.1, "eval_dataset": "e"},
        "val_size: cannot be set together with `eval_dataset`; keep one",
    ),
    ("eval_data", {"do_eval": True, "val_size": 0.1}, None),
    (
        "lora_only",
        {"finetuning_type": "full", "quantization_bit": 4},
        "quantization_bit: quantization needs `finetuning_type: lora` (it is full); use --method qlora",
    ),
    (
        "lora_only",
        {"finetuning_type": "freeze", "use_dora": True},
        "use_dora: only valid for LoRA training (finetuning_type is freeze)",
    ),
    # LLaMA-Factory 0.9.5 quantizes on the fly with bnb (4, 8), hqq (1-6, 8) and eetq (8)
    (
        "quantization",
        {"quantization_bit": 3},
        "quantization_bit: 3 bits is not supported by bnb quantization; use 4 or 8",
    ),
    ("quantization", {"quantization_bit": 4}, None),
    ("quantization", {"quantization_bit": 3, "quantization_method": "hqq"}, None),
    (
        "quantization",
        {"quantization_bit": 4, "quantization_method": "eetq"},
        "quantization_bit: 4 bits is not supported by eetq quantization; use 8",
    ),
    (
        "quantization",
        {"quantization_bit": 4, "quantization_method": "gptq"},
        "quantization_method: `gptq` does not quantize on the fly (it loads a model already quantized with it); "
        "use bnb, hqq, eetq with quantization_bit, or remove quantization_bit",
    ),
    (
        "training_only_keys",
        {"quantization_device_map": "auto"},
        "quantization_device_map: `auto` cannot be used in training; remove it",
    ),
    (
        "training_only_keys",
        {"infer_backend": "vllm"},
        "infer_backend: vLLM/SGLang backends are for inference only; remove it",
    ),
    ("streaming", {"streaming": True}, "max_steps: streaming needs `max_steps`"),
    (
        "streaming",
        {"streaming": True, "max_steps": 10, "max_samples": 5},
        "max_samples: incompatible with `streaming`",
    ),
    (
        "exclusive_keys",
        {"mask_history": True, "train_on_prompt": True},
        "mask_history: incompatible with `train_on_prompt`; keep one",
    ),
    (
        "exclusive_keys",
        {"fp8": True, "quantization_bit": 4},
        "fp8: FP8 training is not compatible with quantization; disable one",
    ),
    ("optimizers", {"use_galore": True}, "use_galore: cannot be used with LoRA; use `finetuning_type: full`"),
    (
        "optimizers",
        {"finetuning_type": "full", "use_galore": True, "use_badam": True},
        "use_badam: cannot be used together with `use_galore`",
    ),
    ("zero3", {"finetuning_type": "full", "pure_bf16": True}, None),
    (
        "zero3",
        {"finetuning_type": "full", "pure_bf16": True, "deepspeed": "ds_z3.json"},
        "pure_bf16: `pure_bf16` is incompatible with DeepSpeed ZeRO-3",
    ),
    (
        "quantization",
        {"quantization_bit": 8, "deepspeed": "ds_z3.json"},
        "quantization_bit: with DeepSpeed ZeRO-3, bitsandbytes takes 4 bits only",
    ),
    (
        "best_model",
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
        "best_model",
        {"val_size": 0.1, "eval_strategy": "epoch", "load_best_model_at_end": True},
        "load_best_model_at_end: needs the same eval and save strategy (eval_strategy epoch, save_strategy steps)",
    ),
    (
        "early_stopping",
        {"early_stopping_steps": 3},
        "early_stopping_steps: needs `load_best_model_at_end: true` and `metric_for_best_model`",
    ),
    (
        "template_known",
        {"template": "qwenn"},
        "template: `qwenn` is not a LLaMA-Factory 0.9.5 template; did you mean `qwen` or `qwen3` or `qwen3_omni`?",
    ),
    ("template_known", {"template": "llama3"}, None),
    (
        "lora_target_modules",
        {"lora_target": "q_proj,foo_proj"},
        "lora_target: `foo_proj` is not a module of Qwen/Qwen2.5-0.5B-Instruct; use `all` or some of: "
        "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj",
    ),
    ("lora_target_modules", {"lora_target": ["q_proj", "v_proj"]}, None),
    ("lora_target_modules", {"lora_target": "all"}, None),
    (
        "lora_target_modules",
        {"model_name_or_path": "org/unknown", "lora_target": "foo_proj"},
        None,
    ),  # unresolved
    (
        "lora_target_modules",
        {"model_name_or_path": "Mixtral-8x7B", "lora_target": "w1"},
        None,
    ),  # MoE: not checked
]


@pytest.mark.parametrize(("rule", "change", "line"), RULE_ROWS)
def test_rule(rule: str, change: dict[str, object], line: str | None, tmp_path: Path) -> None:
    (tmp_path / "ds_z3.json").write_text(render_deepspeed("z3"))  # rows may name it
    cfg = {**GOOD, **change}
    (check,) = [r for r in RULES if r.__name__ == rule]
    said = [str(p) for p in check(Context.of(cfg, base_dir=tmp_path))]
    assert said == ([line] if line else [])
    everything = [str(p) for p in validate_config(cfg, base_dir=tmp_path)]
    assert line in everything if line else everything == []


def test_every_rule_has_a_row() -> None:
    assert {r.__name__ for r in RULES} == {row[0] for row in RULE_ROWS}
    assert all(any(r == name and line for r, _, line in RULE_ROWS) for name in {r.__name__ for r in RULES})


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
    """The config in tmp_path/train.yaml, with its dataset `d` registered in tmp_path/data (the working
    directory, where llamafactory-cli would look)."""
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "d.json").write_text("[]")
    (tmp_path / "data" / "dataset_info.json").write_text(json.dumps({"d": {"file_name": "d.json"}}))
    os.chdir(tmp_path)
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(autouse=True)
def _back_to_cwd() -> Iterator[None]:
    cwd = os.getcwd()
    yield
    os.chdir(cwd)


def _data_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.json").write_text("[]")
    info = {
        "alpaca_a": {"file_name": "a.json"},
        "gone": {"file_name": "gone.json"},
        "hub": {"hf_hub_url": "org/set"},
        "nofile": {"formatting": "alpaca"},
    }
    (data / "dataset_info.json").write_text(json.dumps(info))
    return data


@pytest.mark.parametrize(
    ("change", "lines"),
    [
        ({}, []),
        ({"dataset": "hub,alpaca_a"}, []),  # hub datasets are LLaMA-Factory's to fetch
        ({"dataset": "x", "dataset_dir": "ONLINE"}, []),
        ({"dataset": "x", "dataset_dir": "REMOTE:org/info"}, []),
        ({"dataset": "alpaca_b"}, ["dataset: `alpaca_b` is not in {info}; did you mean `alpaca_a`?"]),
        ({"dataset": ["gone"]}, ["dataset: `gone` points at {data}/gone.json, which does not exist"]),
        (
            {"eval_dataset": "nofile"},
            ["eval_dataset: `nofile` in {info} has no file_name; add the data file's path"],
        ),
        (
            {"dataset_dir": "elsewhere"},
            [
                "dataset_dir: {tmp}/elsewhere/dataset_info.json does not exist; register your data there "
                "(see `lf-tuner render`)"
            ],
        ),
    ],
)
def test_check_files(tmp_path: Path, change: dict[str, object], lines: list[str]) -> None:
    data = _data_dir(tmp_path)
    cfg = {**GOOD, "dataset": "alpaca_a", "dataset_dir": "data", **change}
    info = data / "dataset_info.json"
    expected = [line.format(info=info, data=data, tmp=tmp_path) for line in lines]
    assert [str(p) for p in check_files(cfg, base_dir=tmp_path)] == expected


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


def test_validate_cli_checks_what_llamafactory_fails_on_later(tmp_path: Path) -> None:
    """The issue's inputs that `validate` said "ok" to: template, quantization_bit, lora_target, dataset."""
    path = write(tmp_path, {**GOOD, "template": "qwenn", "quantization_bit": 3, "lora_target": "foo_proj"})
    text = path.read_text() + "dataset: e\n"  # also a duplicate key
    path.write_text(text)
    result = CliRunner().invoke(cli, ["validate", str(path), "--schema-only"])
    assert result.exit_code == 1
    lines = text.splitlines()
    first, last = lines.index("dataset: d") + 1, len(lines)
    assert (
        result.output
        == f"Error: {path} has 1 problem:\ndataset: given twice (lines {first} and {last}); keep one\n"
    )
    path.write_text(text.replace("dataset: d\n", ""))
    result = CliRunner().invoke(cli, ["validate", str(path), "--schema-only"])
    assert result.exit_code == 1
    assert result.output.splitlines()[1:] == [
        "quantization_bit: 3 bits is not supported by bnb quantization; use 4 or 8",
        "template: `qwenn` is not a LLaMA-Factory 0.9.5 template; did you mean `qwen` or `qwen3` or `qwen3_omni`?",
        "lora_target: `foo_proj` is not a module of Qwen/Qwen2.5-0.5B-Instruct; use `all` or some of: "
        "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj",
        f"dataset: `e` is not in {tmp_path}/data/dataset_info.json; add it there",
    ]


def test_validate_reads_numbers_as_llamafactory_does(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    path.write_text(path.read_text().replace("learning_rate: 0.0001", "learning_rate: 1e-4"))
    assert "learning_rate: 1e-4" in path.read_text()
    result = CliRunner().invoke(cli, ["validate", str(path), "--schema-only"])
    assert result.exit_code == 0, result.output


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


# --------------------------------------------------------------------------- the rules against LLaMA-Factory


@requires_llamafactory
@pytest.mark.llamafactory
def test_template_rule_agrees_with_llamafactory_registry() -> None:
    from llamafactory.data.template import TEMPLATES

    names = [*TEMPLATES, "qwenn", "Qwen", "llama-3", "chatml_de_", ""]  # "": LLaMA-Factory refuses it too
    for name in names:
        said = template_known(Context({**GOOD, "template": name}))
        assert (said == []) == (name in TEMPLATES), name


@requires_llamafactory
@pytest.mark.llamafactory
@pytest.mark.parametrize("method", ["bnb", "hqq", "eetq", "gptq", "awq", "fp8"])
def test_quantization_rule_agrees_with_llamafactory(method: str) -> None:
    """LLaMA-Factory raises for a bit width its on-the-fly method does not take, and quietly does not quantize
    with a method that only loads pre-quantized models: the rule reports exactly those."""
    from llamafactory.hparams import ModelArguments
    from llamafactory.model.model_utils.quantization import configure_quantization
    from transformers import PretrainedConfig

    for bits in range(1, 9):
        args = ModelArguments(model_name_or_path="m", quantization_bit=bits, quantization_method=method)
        init: dict[str, object] = {}
        try:
            configure_quantization(PretrainedConfig(), None, args, True, init)  # type: ignore[arg-type]
            quantized = "quantization_config" in init
        except ValueError as exc:
            assert "only accepts" in str(exc)
            quantized = False
        except ImportError:  # bitsandbytes / hqq / eetq not installed here: the bit width was accepted
            quantized = True
        said = quantization(Context({**GOOD, "quantization_bit": bits, "quantization_method": method}))
        assert (said == []) == quantized, (method, bits, said)


@requires_llamafactory
@pytest.mark.llamafactory
def test_duplicate_keys_refused_like_llamafactory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from llamafactory.hparams.parser import read_args

    from lf_tuner.config import parse_mapping

    for text, duplicate in [
        ("a: 1\nb: 1e-4\n", False),
        ("a: 1\nb: 2\na: 3\n", True),
        ("a:\n  x: 1\n  x: 2\n", True),
    ]:
        path = tmp_path / "c.yaml"
        path.write_text(text)
        monkeypatch.setattr("sys.argv", ["llamafactory-cli", str(path)])
        try:
            theirs = read_args()
        except Exception as exc:  # noqa: BLE001 - OmegaConf's ConstructorError, whatever its class
            assert "duplicate key" in str(exc)
            theirs = None
        if duplicate:
            assert theirs is None
            with pytest.raises(LfTunerError, match="given twice"):
                parse_mapping(text, "c.yaml")
        else:
            assert parse_mapping(text, "c.yaml") == theirs


@requires_llamafactory
@pytest.mark.llamafactory
def test_lora_target_rule_agrees_with_peft(tmp_path: Path) -> None:
    """PEFT refuses a target that names no module of the model; the rule refuses the same ones."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    from tests.tiny import TINY_CONFIG

    model_dir = tmp_path / "tiny"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps(TINY_CONFIG))
    config = AutoConfig.from_pretrained(model_dir)
    for target in [
        "q_proj",
        "down_proj",
        "self_attn.o_proj",
        "lm_head",
        "foo_proj",
        "gate_up_proj",
        "qkv_proj",
    ]:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        try:
            get_peft_model(model, LoraConfig(target_modules=[target]))
            peft_ok = True
        except ValueError as exc:
            assert "not found in the base model" in str(exc) or "Target modules" in str(exc)
            peft_ok = False
        cfg = {**GOOD, "model_name_or_path": str(model_dir), "lora_target": target}
        said = lora_target_modules(Context.of(cfg))
        assert (said == []) == peft_ok, (target, said)


@requires_llamafactory
@pytest.mark.llamafactory
def test_dataset_rule_agrees_with_llamafactory(tmp_path: Path) -> None:
    from llamafactory.data.parser import get_dataset_list

    data = _data_dir(tmp_path)
    for names, dataset_dir in [
        (["alpaca_a", "hub"], data),
        (["alpaca_b"], data),
        (["alpaca_a"], tmp_path / "none"),
    ]:
        try:
            get_dataset_list(names, str(dataset_dir))
            theirs_ok = True
        except ValueError:
            theirs_ok = False
        cfg = {**GOOD, "dataset": ",".join(names), "dataset_dir": str(dataset_dir)}
        assert (check_files(cfg) == []) == theirs_ok, names
