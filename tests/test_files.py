"""config.files: the one YAML loader (as LLaMA-Factory's OmegaConf reads YAML) and the one pydantic renderer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lf_tuner.config import load_mapping, parse_mapping, parse_yaml, pydantic_problems
from lf_tuner.errors import LfTunerError, ProblemsError
from tests.conftest import requires_llamafactory

TEXTS = [
    "a: 1e-4",
    "a: 1.0e-4",
    "a: 5e5",
    "a: +1e3",
    "a: .5",
    "a: 2001-12-14",
    "a: 1_000",
    "a: yes",
    "a: null",
    "a: .inf",
    "a: 0x1f",
    "a: [1e-5, 2e-5]",
    "a: '1e-4'",
]


@requires_llamafactory
@pytest.mark.llamafactory
@pytest.mark.parametrize("text", TEXTS)
def test_values_read_as_llamafactory_reads_them(text: str) -> None:
    from omegaconf import OmegaConf  # LLaMA-Factory's read_args loads YAML configs with it

    theirs = OmegaConf.to_container(OmegaConf.create(text))
    ours = parse_yaml(text, "c.yaml")
    assert ours == theirs and type(ours["a"]) is type(theirs["a"])  # type: ignore[index]


def test_duplicate_keys_at_any_depth_with_lines() -> None:
    with pytest.raises(ProblemsError) as info:
        parse_mapping("a: 1\nb:\n  x: 1\n  x: 2\na: 3\n", "c.yaml")
    assert info.value.message == (
        "c.yaml has 2 problems:\nx: given twice (lines 3 and 4); keep one\na: given twice (lines 1 and 5); keep one"
    )
    assert parse_mapping("base: &b {x: 1}\nc:\n  <<: *b\n  y: 2\n", "c.yaml") == {
        "base": {"x": 1},
        "c": {"x": 1, "y": 2},
    }  # a merge key is not a duplicate


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: [1", "c.yaml: not valid YAML (line 1, column 6: expected ',' or ']', but got '<stream end>')"),
        ("- 1\n", "c.yaml: expected a mapping of LLaMA-Factory keys, got list"),
        ("", "c.yaml: expected a mapping of LLaMA-Factory keys, got an empty file"),
    ],
)
def test_bad_yaml_is_one_line(text: str, message: str) -> None:
    with pytest.raises(LfTunerError) as info:
        parse_mapping(text, "c.yaml")
    assert info.value.message == message


def test_load_mapping_errors(tmp_path: Path) -> None:
    with pytest.raises(LfTunerError, match=r"does not exist; pass a LLaMA-Factory train config YAML$"):
        load_mapping(tmp_path / "none.yaml")
    with pytest.raises(LfTunerError, match=r"is a directory; pass a LLaMA-Factory train config YAML$"):
        load_mapping(tmp_path)
    (tmp_path / "c.json").write_text(json.dumps({"learning_rate": 1e-4}))
    assert load_mapping(tmp_path / "c.json") == {"learning_rate": 1e-4}  # JSON is YAML


def test_pydantic_problems_serve_run_records(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from lf_tuner.train import RunRecord, read_record

    path = tmp_path / "lf-tuner-run.json"
    path.write_text(json.dumps({"status": "completed", "stauts": 1, "exit_code": "x"}))
    with pytest.raises(ProblemsError) as info:
        read_record(path)
    lines = info.value.message.splitlines()
    assert lines[0].startswith(f"{path} has ")
    assert "stauts: unknown key `stauts`; did you mean `status`?" in lines
    assert (
        "exit_code: Input should be a valid integer, unable to parse string as an integer (got 'x')" in lines
    )
    assert "config_hash: required key is missing" in lines
    with pytest.raises(ValidationError) as raw:
        RunRecord.model_validate({"gpus": [{"index": 0, "nmae": "A"}]})
    problems = [str(p) for p in pydantic_problems(raw.value, RunRecord, unknown="no such key")]
    assert "gpus.0.nmae: no such key; did you mean `name`?" in problems
