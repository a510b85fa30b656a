"""Reading datasets as LLaMA-Factory does: formats, dataset_info.json, streaming, bad input, filtered copies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lf_tuner import data as datasets
from lf_tuner.data import attr_for_file, convert, iter_rows, readers, resolve_datasets, write_filtered
from lf_tuner.errors import LfTunerError
from tests.lf_data import alpaca_rows, sharegpt_rows, write_dataset_dir


def test_detects_alpaca_sharegpt_openai(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps(alpaca_rows(3)))
    (tmp_path / "s.json").write_text(json.dumps(sharegpt_rows(3)))
    (tmp_path / "o.jsonl").write_text("\n".join(json.dumps(r) for r in sharegpt_rows(3, openai=True)))
    assert attr_for_file(tmp_path / "a.json").formatting == "alpaca"
    s = attr_for_file(tmp_path / "s.json")
    assert (s.formatting, s.messages, s.role_tag) == ("sharegpt", "conversations", "from")
    o = attr_for_file(tmp_path / "o.jsonl")
    assert (o.formatting, o.messages, o.role_tag, o.user_tag) == ("sharegpt", "messages", "role", "user")
    assert attr_for_file(tmp_path / "o.jsonl", "openai").formatting == "openai"


def test_file_registered_in_sibling_dataset_info_uses_its_columns(tmp_path: Path) -> None:
    (tmp_path / "d.json").write_text(json.dumps([{"q": "hi", "a": "yo", "sys": "be brief"}]))
    (tmp_path / "dataset_info.json").write_text(
        json.dumps(
            {"mine": {"file_name": "d.json", "columns": {"prompt": "q", "response": "a", "system": "sys"}}}
        )
    )
    attr = attr_for_file(tmp_path / "d.json")
    assert (attr.name, attr.detected, attr.prompt) == ("mine", False, "q")
    sample = convert(next(iter_rows(attr))[1], attr)
    assert not isinstance(sample, str)
    assert (sample.prompt[0].content, sample.response[0].content, sample.system) == ("hi", "yo", "be brief")


def test_alpaca_conversion_matches_llamafactory() -> None:
    attr = datasets.DatasetAttr(name="x", files=[], history="history", system="system")
    row = {"instruction": "do", "input": "this", "output": "done", "history": [["h1", "r1"]], "system": "S"}
    sample = convert(row, attr)
    assert not isinstance(sample, str)
    assert [(m.role, m.content) for m in sample.prompt] == [
        ("user", "h1"),
        ("assistant", "r1"),
        ("user", "do\nthis"),
    ]
    assert sample.system == "S"
    assert convert({"instruction": "x", "output": None}, attr) == "`output` is not a string"
    assert convert({"instruction": "x"}, attr) == "missing column `output`"
    assert convert([1, 2], attr) == "row is not an object"


def test_sharegpt_invalid_rows_are_reasons() -> None:
    attr = datasets.DatasetAttr(name="x", files=[], formatting="sharegpt")
    assert convert(
        {"conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "b"}]}, attr
    ) == ("invalid role `gpt` at message 0")
    assert convert({"conversations": [{"from": "human", "value": "a"}]}, attr) == "odd number of messages"
    assert convert({"other": []}, attr) == "missing column `conversations`"
    assert convert({"conversations": [{"role": "user"}]}, attr) == "a message without `from`/`value`"


def test_openai_appends_detailed_thinking_off() -> None:
    attr = datasets.DatasetAttr(name="x", files=[], formatting="openai", messages="messages", role_tag="role",
                                content_tag="content", user_tag="user", assistant_tag="assistant")  # fmt: skip
    row = {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "q"},
                        {"role": "assistant", "content": "a"}]}  # fmt: skip
    sample = convert(row, attr)
    assert not isinstance(sample, str)
    assert sample.system == "S\ndetailed thinking off"


def test_json_array_streams_across_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readers, "_CHUNK", 64)
    rows = alpaca_rows(50) + [{"instruction": "n", "output": "x", "num": 12345678901234567890}]
    path = tmp_path / "a.json"
    path.write_text(json.dumps(rows, ensure_ascii=False, indent=2))
    attr = attr_for_file(path)
    assert [row for _, row in iter_rows(attr)] == rows


def test_invalid_json_names_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('[\n {"instruction": "a", "output": "b"},\n {"instruction": "c" "output": "d"}\n]\n')
    attr = datasets.DatasetAttr(name="bad", files=[path])
    with pytest.raises(LfTunerError, match=r"bad.json:3:22: invalid JSON: Expecting ',' delimiter"):
        list(iter_rows(attr))
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text('{"instruction": "a", "output": "b"}\n{"instruction": \n')
    with pytest.raises(LfTunerError, match=r"bad.jsonl:2:17: invalid JSON"):
        list(iter_rows(datasets.DatasetAttr(name="bad", files=[jsonl])))


def test_not_utf8_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "latin.jsonl"
    path.write_bytes(b'{"instruction": "caf\xe9", "output": "x"}\n')
    with pytest.raises(LfTunerError, match=r"latin.jsonl:1: byte 20: not UTF-8; re-encode"):
        list(iter_rows(datasets.DatasetAttr(name="l", files=[path])))
    arr = tmp_path / "latin.json"
    arr.write_bytes(b'[{"instruction": "caf\xe9", "output": "x"}]')
    with pytest.raises(LfTunerError, match=r"latin.json: byte 21: not UTF-8"):
        list(iter_rows(datasets.DatasetAttr(name="l", files=[arr])))


def test_empty_dataset(tmp_path: Path) -> None:
    path = tmp_path / "empty.json"
    path.write_text("[]")
    with pytest.raises(LfTunerError, match=r"empty.json is empty; it holds no rows"):
        attr_for_file(path)


def test_dataset_info_resolution(tmp_path: Path) -> None:
    d = write_dataset_dir(tmp_path / "data", n=4)
    attrs = resolve_datasets(["alp", "sg"], d)
    assert [(a.name, a.formatting, a.files[0].name) for a in attrs] == [
        ("alp", "alpaca", "alpaca.json"),
        ("sg", "sharegpt", "sharegpt.json"),
    ]
    with pytest.raises(
        LfTunerError, match=r"`alpp` is not defined in .*dataset_info.json; did you mean `alp`"
    ):
        resolve_datasets(["alpp"], d)
    with pytest.raises(LfTunerError, match=r"dataset_info.json not found; pass --dataset-dir"):
        resolve_datasets(["alp"], tmp_path)
    info = json.loads((d / "dataset_info.json").read_text())
    info["hub"] = {"hf_hub_url": "org/ds"}
    info["missing"] = {"file_name": "nope.json"}
    (d / "dataset_info.json").write_text(json.dumps(info))
    with pytest.raises(LfTunerError, match=r"hub.hf_hub_url: lf-tuner reads local files only"):
        resolve_datasets(["hub"], d)
    with pytest.raises(LfTunerError, match=r"file .*nope.json not found"):
        resolve_datasets(["missing"], d)


def test_csv_rows(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text('instruction,input,output\n"multi\nline",,answer\nq2,in2,a2\n')
    attr = attr_for_file(path)
    rows = [row for _, row in iter_rows(attr)]
    assert rows == [{"instruction": "multi\nline", "input": None, "output": "answer"},
                    {"instruction": "q2", "input": "in2", "output": "a2"}]  # fmt: skip


def test_write_filtered_keeps_format_and_never_overwrites(tmp_path: Path) -> None:
    src = tmp_path / "a.json"
    rows = alpaca_rows(4)
    src.write_text(json.dumps(rows))
    attr = attr_for_file(src)
    out = tmp_path / "out.json"
    assert write_filtered(attr, [True, False, True, False], out, force=False) == 2
    assert json.loads(out.read_text()) == [rows[0], rows[2]]
    with pytest.raises(LfTunerError, match=r"out.json exists; pass --force"):
        write_filtered(attr, [True] * 4, out, force=False)
    assert json.loads(out.read_text()) == [rows[0], rows[2]]
    with pytest.raises(LfTunerError, match=r"is the input file"):
        write_filtered(attr, [True] * 4, src, force=True)
    jl = tmp_path / "a.jsonl"
    jl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out_jl = tmp_path / "o.jsonl"
    write_filtered(attr_for_file(jl), [False, True, True, True], out_jl, force=False)
    assert [json.loads(line) for line in out_jl.read_text().splitlines()] == rows[1:]


def test_parquet_roundtrip(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = alpaca_rows(5)
    for r in rows:
        r.pop("history", None)
        r.setdefault("system", None)
    src = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(rows), str(src))
    attr = attr_for_file(src)
    assert [r for _, r in iter_rows(attr)] == rows
    out = tmp_path / "o.parquet"
    assert write_filtered(attr, [True, True, False, False, True], out, force=False) == 3
    assert pq.read_table(str(out)).to_pylist() == [rows[0], rows[1], rows[4]]
