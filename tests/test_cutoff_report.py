"""The core behind `lf-tuner cutoff`, called directly: config and data inputs, tokenizer choice, report, filter."""

from __future__ import annotations

import json
from array import array
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from lf_tuner.config import load_mapping
from lf_tuner.data import DatasetAttr
from lf_tuner.errors import LfTunerError
from lf_tuner.lengths import (
    Measurement,
    build_report,
    drop_longer,
    histogram,
    human_lines,
    model_template,
    recommend,
    resolve_data,
    stats_table,
    token_counter,
)
from lf_tuner.memory import lora_vram_gib
from tests.conftest import HAS_TRANSFORMERS
from tests.lf_data import build_bpe_tokenizer, write_dataset_dir
from tests.tiny import TINY_CONFIG


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bpe_tokenizer(tmp_path_factory.mktemp("tok") / "tok")


class Counted:
    label = "fake (tokenizers)"
    approximate = False
    approximate_reason = None


class Tiktoken(Counted):
    label = "o200k_base (tiktoken, approximate)"
    approximate = True
    approximate_reason = "counted with a tiktoken encoding, not the model's tokenizer"


def _measurement(totals: list[int], **kw: Any) -> Measurement:
    half = [t // 2 for t in totals]
    return Measurement(
        total=array("q", totals), prompt=array("q", half), response=array("q", half), rows=len(totals), **kw
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: [\n", r"train.yaml: not valid YAML \("),
        ("- 1\n", r"train.yaml: expected a mapping of LLaMA-Factory keys, got list$"),
    ],
)
def test_read_config_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "train.yaml"
    path.write_text(text)
    with pytest.raises(LfTunerError, match=message):
        load_mapping(path)
    path.write_text("dataset: a\ncutoff_len: 64\n")
    assert load_mapping(path) == {"dataset": "a", "cutoff_len": 64}


def test_resolve_data_file_names_and_format(tmp_path: Path) -> None:
    d = write_dataset_dir(tmp_path / "data", n=2)
    (tmp_path / "rows.json").write_text((d / "alpaca.json").read_text())  # not registered anywhere
    [one] = resolve_data(tmp_path / "rows.json", None, None, {}, None)
    assert (one.name, one.formatting, one.detected) == ("rows.json", "alpaca", True)
    [registered] = resolve_data(d / "alpaca.json", None, None, {}, None)
    assert (registered.name, registered.detected) == ("alp", False)  # its dataset_info.json entry
    cfg = {"dataset": "alp", "dataset_dir": str(d)}
    assert [a.name for a in resolve_data(None, None, None, cfg, None)] == ["alp"]
    named = resolve_data(None, "sg,oa", d, {"dataset": "alp"}, "sharegpt")  # --dataset wins
    assert [(a.name, a.formatting) for a in named] == [("sg", "sharegpt"), ("oa", "sharegpt")]


def test_model_template() -> None:
    assert model_template(None) is None
    assert model_template("Qwen/Qwen3-8B") == "qwen3"
    assert model_template("nope/nope") is None  # unknown: no default, no error


def test_token_counter_choice(tmp_path: Path, tok: Path) -> None:
    assert token_counter(None, None, None) is None
    with pytest.raises(
        LfTunerError, match=r"no tokenizer for `Qwen/Qwen3-8B`\. Tried: .*Pass --tokenizer DIR"
    ):
        token_counter(None, None, "Qwen/Qwen3-8B")  # a Hub id: not cached, and offline
    given, own = (
        token_counter(tok, None, None),
        token_counter(None, None, str(tok)),
    )
    label = f"tok ({'transformers' if HAS_TRANSFORMERS else 'tokenizers'})"
    assert given is not None and given.label == label
    assert own is not None and own.label == label  # the model directory's own


def test_lora_vram(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(TINY_CONFIG))
    small = lora_vram_gib(str(tmp_path), {}, 256)
    large = lora_vram_gib(str(tmp_path), {"per_device_train_batch_size": 8}, 4096)
    assert small is not None and large is not None and 0 < small < large
    assert lora_vram_gib(None, {}, 256) is None
    assert lora_vram_gib("nope/nope", {}, 256) is None


def test_build_report_adds_config_truncation() -> None:
    m = _measurement([4, 8, 12, 16, 160])
    rec = recommend(list(m.total), multiple=8)
    result = build_report(
        m, rec, template="empty", counter=Counted(), cfg={"cutoff_len": "10"}, vram_gib=None
    ).to_dict()
    assert (result["recommended_cutoff"], result["template"], result["tokenizer"]) == (
        160,
        "empty",
        "fake (tokenizers)",
    )
    assert (result["config_cutoff_len"], result["config_truncated"], result["approximate"]) == (10, 3, False)
    assert "lora_vram_gib" not in result
    assert (
        "config_cutoff_len"
        not in build_report(m, rec, template="empty", counter=Counted(), cfg={}, vram_gib=None).to_dict()
    )


def test_human_lines() -> None:
    m = _measurement([4, 8, 12, 16, 160], skipped=Counter({"missing column": 1}))
    rec = recommend(list(m.total), multiple=128, max_positions=128)
    attr = DatasetAttr(name="d.json", files=[Path("/data/d.json")], detected=True)
    result = build_report(m, rec, template="qwen", counter=Tiktoken(), cfg={"cutoff_len": 16},
                                        vram_gib=1.5)  # fmt: skip
    result.dropped, result.written = 1, 4
    assert result.to_dict()["approximate_reasons"] == {Tiktoken.approximate_reason: 5}
    assert human_lines(m, rec, result, [attr]) == [
        "dataset   d.json: alpaca (detected), /data/d.json",
        "template  qwen   tokenizer o200k_base (tiktoken, approximate)  (APPROXIMATE)",
        "rows      5 read, 5 samples, 1 skipped",
        "",
        "\n".join(stats_table(m)),
        "",
        "\n".join(histogram(m.total, mark=128)),
        "",
        "recommended cutoff_len: 128  (P95 = 160, rounded up to a multiple of 128, capped at max positions 128)",
        "  truncates 1 of 5 samples (20.00%), 16.00% of all tokens",
        "  config cutoff_len 16 truncates 1 samples",
        "  LoRA VRAM at cutoff_len 128, batch 1: 1.50 GiB",
        f"  APPROXIMATE: 5 samples: {Tiktoken.approximate_reason}",
        "dropped 1 samples; wrote 4 rows",
    ]


def test_drop_longer(tmp_path: Path) -> None:
    rows = [{"instruction": "a " * n, "input": "", "output": "b"} for n in (1, 5, 2)]
    (tmp_path / "d.json").write_text(json.dumps(rows))
    [attr] = resolve_data(tmp_path / "d.json", None, None, {}, None)
    m = _measurement([3, 11, 5], row_lengths={"d.json": array("q", [3, 11, 5])})
    assert drop_longer(attr, m, 5, tmp_path / "short.json", force=False) == (1, 2)
    assert json.loads((tmp_path / "short.json").read_text()) == [rows[0], rows[2]]
    with pytest.raises(LfTunerError, match=r"short.json exists; pass --force to overwrite it"):
        drop_longer(attr, m, 5, tmp_path / "short.json", force=False)
