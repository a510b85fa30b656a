"""`lf-tuner models`: exact table, JSON, and where each model's config.json comes from."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from lf_tuner.cli import cli
from tests.hf_cache import write_hf_cache

EXPECTED = """\

  Hub id                             params   inputs   template        config
 ──────────────────────────────────────────────────────────────────────────────
  Qwen/Qwen3-30B-A3B-Base            30.53B   text     qwen3           offline
  Qwen/Qwen3-30B-A3B                 30.53B   text     qwen3           offline
  Qwen/Qwen3-30B-A3B-Thinking-2507   30.53B   text     qwen3           offline
  Qwen/Qwen3-30B-A3B-GPTQ-Int4       30.53B   text     qwen3           offline
  Qwen/Qwen3-30B-A3B-Instruct-2507   30.53B   text     qwen3_nothink   offline

5 models: 5 offline (lf-tuner's catalog), 0 in your Hugging Face cache, 0 download config.json on first use \
(`lf-tuner estimate --model HUB_ID`, online). Any model directory with a config.json works too.
"""


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def strip(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


def test_table_exact_output() -> None:
    result = invoke("models", "Qwen3-30B-A3B")
    assert result.exit_code == 0, result.output
    assert strip(result.stdout) == EXPECTED
    assert result.stderr == ""


def test_json_lists_every_registered_model_with_where_it_comes_from(tmp_path: Path) -> None:
    write_hf_cache(Path(str(tmp_path / "hf-home" / "hub")), "Qwen/Qwen3.5-4B", {"config.json": "{}"})
    rows = json.loads(invoke("models", "--json").stdout)
    registered = [row for row in rows if row["registered"]]
    assert len(registered) == 628  # LLaMA-Factory 0.9.5's registry
    by_id = {row["hf_id"]: row for row in rows}
    assert by_id["Qwen/Qwen3.5-4B"]["available"] == "cache"
    assert (
        by_id["Qwen/Qwen3-4B-Instruct-2507"] | {"params": 4022468096, "available": "catalog"}
        == by_id["Qwen/Qwen3-4B-Instruct-2507"]
    )
    assert (
        by_id["Qwen/Qwen3.5-9B"]["available"] == "download"
        and by_id["Qwen/Qwen3.5-9B"]["template"] == "qwen3_5"
    )
    assert (
        by_id["meta-llama/Llama-3.1-8B"]["registered"] is False
    )  # a catalog id LLaMA-Factory spells otherwise


def test_no_match_is_a_usage_error() -> None:
    result = invoke("models", "no-such-model-anywhere")
    assert result.exit_code == 2 and "no model matches `no-such-model-anywhere`" in result.stderr
