"""`lf-tuner cutoff` on every stage's data, tool calls, media and the approximate flag, through click.

The counts themselves are compared with LLaMA-Factory's in tests/test_lengths_llamafactory.py; these tests pin
what the command reports and refuses.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from lf_tuner.cli import cli
from lf_tuner.lengths import pack
from tests.lf_data import build_bpe_tokenizer, write_stage_dir


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("stages")
    return build_bpe_tokenizer(root / "tok"), write_stage_dir(root / "data", n=24)


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["cutoff", *args])
    return result.exit_code, result.stdout, result.stderr


@given(
    st.lists(st.integers(0, 300), max_size=60),
    st.integers(1, 200),
    st.integers(1, 9),
    st.one_of(st.none(), st.integers(1, 5)),
)
def test_pack_keeps_every_token_in_a_block_or_dropped(
    lengths: list[int], block: int, batch: int, num_proc: int | None
) -> None:
    p = pack(lengths, block, batch_size=batch, num_proc=num_proc)
    assert p.blocks * block + p.dropped == sum(lengths) and p.tokens == p.blocks * block
    assert p.dropped < block * max(
        1, -(-len(lengths) // batch) + (num_proc or 1)
    )  # less than a block per batch


def test_pack_cuts_each_batch_of_each_shard() -> None:
    # two shards of 3 and 2 rows, batches of 2: [5, 5], [5] | [5, 5] -> 10 // 4, 5 // 4, 10 // 4
    assert pack([5] * 5, 4, batch_size=2, num_proc=2).blocks == 2 + 1 + 2
    assert pack([5] * 5, 4, batch_size=1000).blocks == 25 // 4


def test_pretraining_text_file(setup: tuple[Path, Path]) -> None:
    tok, data = setup
    code, out, err = _run(str(data / "wiki.txt"), "--stage", "pt", "--tokenizer", str(tok), "--template", "qwen",
                          "--json")  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    lines = (data / "wiki.txt").read_text().splitlines()
    assert report["stage"] == "pt" and report["count"] == len(lines)  # one sample a line, empty lines too
    assert report["p50"] >= 1  # every text ends with eos
    packing = report["packing"]
    assert packing["block"] == 2048 and packing["blocks"] * 2048 + packing["dropped"] == report["tokens"]


def test_config_stage_and_packing_block(setup: tuple[Path, Path], tmp_path: Path) -> None:
    tok, data = setup
    cfg = tmp_path / "pt.yaml"
    cfg.write_text(
        f"stage: pt\ndataset: wiki,c4\ndataset_dir: {data}\ntemplate: qwen\ncutoff_len: 64\npacking: true\n"
    )
    code, out, err = _run("--config", str(cfg), "--tokenizer", str(tok), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["stage"] == "pt" and report["packing"]["block"] == 63  # packing: true takes one off
    code, out, err = _run("--config", str(cfg), "--tokenizer", str(tok))
    assert code == 0 and "packed (LLaMA-Factory's pretraining default): " in out and "stage pt" in out


def test_pairwise_reports_chosen_rejected_and_the_longer(setup: tuple[Path, Path]) -> None:
    tok, data = setup
    code, out, err = _run("--dataset", "dpo", "--dataset-dir", str(data), "--stage", "dpo", "--tokenizer", str(tok),
                          "--template", "qwen", "--json")  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    assert report["max"] == max(report["chosen"]["max"], report["rejected"]["max"])
    assert report["count"] == 24 and report["stage"] == "dpo"


def test_stage_and_dataset_must_agree(setup: tuple[Path, Path]) -> None:
    tok, data = setup
    code, _, err = _run(
        "--dataset", "dpo", "--dataset-dir", str(data), "--tokenizer", str(tok), "--template", "qwen"
    )
    assert code == 1
    assert err == (
        "Error: dataset: dpo: stage sft cannot use a ranking (preference) dataset; use stage rm or dpo for it "
        "(LLaMA-Factory: the dataset is not applicable in the current training stage)\n"
    )
    code, _, err = _run("--dataset", "kto", "--dataset-dir", str(data), "--stage", "rm", "--tokenizer", str(tok),
                        "--template", "qwen")  # fmt: skip
    assert code == 1 and "stage rm needs a ranking dataset" in err


def test_kto_rows(setup: tuple[Path, Path]) -> None:
    tok, data = setup
    code, out, err = _run("--dataset", "kto", "--dataset-dir", str(data), "--stage", "kto", "--tokenizer", str(tok),
                          "--template", "qwen", "--json")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["count"] == 24
    code, out, err = _run("--dataset", "kto", "--dataset-dir", str(data), "--tokenizer", str(tok), "--template", "qwen",
                          "--json")  # fmt: skip
    assert code == 1 and "no valid samples (24 rows skipped: kto example (not SFT))" in err


def test_tool_rows_are_exact_and_bad_tool_json_is_one_line(setup: tuple[Path, Path], tmp_path: Path) -> None:
    tok, data = setup
    code, out, err = _run("--dataset", "tools", "--dataset-dir", str(data), "--tokenizer", str(tok), "--template",
                          "qwen", "--json")  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    assert (report["approximate"], report["approximate_rows"], report["approximate_reasons"]) == (
        False,
        0,
        {},
    )
    rows = [
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "ok"}], "tools": "[{"}
    ]
    (tmp_path / "bad.json").write_text(json.dumps(rows))
    code, out, err = _run(str(tmp_path / "bad.json"), "--tokenizer", str(tok), "--template", "qwen")
    assert code == 1 and out == ""
    assert err == f"Error: {tmp_path / 'bad.json'}[0]: Invalid JSON format in tool description: ['[{{'].\n"


def test_approximate_rows_are_counted_in_the_json(setup: tuple[Path, Path], tmp_path: Path) -> None:
    """openai tools written as JSON objects: LLaMA-Factory sees them through Arrow, lf-tuner says so."""
    tok, _ = setup
    msgs = [{"role": "user", "content": "weather?"}, {"role": "assistant", "content": "sunny"}]
    tools = [{"name": "w", "description": "d", "parameters": {"type": "object", "properties": {}}}]
    rows = [{"messages": msgs, "tools": tools}, {"messages": msgs}]
    (tmp_path / "oa.json").write_text(json.dumps(rows))
    code, out, err = _run(str(tmp_path / "oa.json"), "--format", "openai", "--tokenizer", str(tok), "--template",
                          "qwen", "--json")  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    assert report["approximate"] is True and report["approximate_rows"] == 1
    [(reason, n)] = report["approximate_reasons"].items()
    assert n == 1 and reason.startswith("tools or tool-call arguments given as JSON objects")


def test_image_template_without_processor_is_refused(setup: tuple[Path, Path], tmp_path: Path) -> None:
    tok, data = setup
    code, out, err = _run("--dataset", "tools", "--dataset-dir", str(data), "--tokenizer", str(tok), "--template",
                          "qwen2_vl")  # fmt: skip
    assert code == 1 and out == "" and err.count("\n") == 1
    assert err.startswith(
        f"Error: template: the `qwen2_vl` plugin needs the model's processor, and the model folder {tok}"
    )


def test_images_for_a_text_template_are_refused(setup: tuple[Path, Path], tmp_path: Path) -> None:
    tok, _ = setup
    rows = [{"messages": [{"role": "user", "content": "<image>hi"}, {"role": "assistant", "content": "ok"}],
             "images": ["x.png"]}]  # fmt: skip
    (tmp_path / "mm.json").write_text(json.dumps(rows))
    code, _, err = _run(str(tmp_path / "mm.json"), "--tokenizer", str(tok), "--template", "qwen")
    assert code == 1
    assert err == (
        f"Error: {tmp_path / 'mm.json'}[0]: this template does not take image input (LLaMA-Factory: This model does "
        "not support image input); use the model's multimodal template\n"
    )
