"""`lf-tuner cutoff` end to end through click: tables, JSON, filtering and every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from lf_tuner.cli import cli
from tests.conftest import HAS_TRANSFORMERS
from tests.lf_data import build_bpe_tokenizer, write_dataset_dir


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bpe_tokenizer(tmp_path_factory.mktemp("tok") / "tok")


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["cutoff", *args])
    return result.exit_code, result.stdout, result.stderr


def _write(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text(json.dumps(rows))
    return path


# this BPE splits "a " into two tokens: totals 4, 8, 12, 16, 160 with the `empty` template
ROWS = [{"instruction": "a " * n, "input": "", "output": "b " * n} for n in (1, 2, 3, 4, 40)]


def test_table_is_exact(tmp_path: Path, tok: Path) -> None:
    data = _write(tmp_path / "d.json", ROWS)
    code, out, err = _run(str(data), "--tokenizer", str(tok), "--template", "empty", "--multiple", "8")
    assert code == 0, err
    assert err == ""
    lines = out.splitlines()
    assert lines[0] == f"dataset   d.json: alpaca (detected), {data}"
    assert lines[1:3] == [
        f"template  empty   tokenizer tok ({'transformers' if HAS_TRANSFORMERS else 'tokenizers'})",
        "rows      5 read, 5 samples, 0 skipped",
    ]
    assert lines[4:8] == [
        "            count     mean     p50     p90     p95     p99     max",
        "total           5     40.0      12     160     160     160     160",
        "prompt          5     20.0       6      80      80      80      80",
        "response        5     20.0       6      80      80      80      80",
    ]
    assert lines[-2:] == [
        "recommended cutoff_len: 160  (P95 = 160, rounded up to a multiple of 8)",
        "  truncates 0 of 5 samples (0.00%), 0.00% of all tokens",
    ]


def test_json_and_percentile(tmp_path: Path, tok: Path) -> None:
    data = _write(tmp_path / "d.json", ROWS)
    code, out, _ = _run(
        str(data), "--tokenizer", str(tok), "--template", "empty", "--json", "--percentile", "50"
    )
    assert code == 0
    result = json.loads(out)
    assert {k: result[k] for k in ("count", "p50", "p90", "p95", "p99", "max", "recommended_cutoff", "truncated")} == {
        "count": 5, "p50": 12, "p90": 160, "p95": 160, "p99": 160, "max": 160, "recommended_cutoff": 128, "truncated": 1,
    }  # fmt: skip
    code, out, _ = _run(str(data), "--tokenizer", str(tok), "--template", "empty", "--json", "--multiple", "4",
                        "--percentile", "60")  # fmt: skip
    assert (json.loads(out)["recommended_cutoff"], json.loads(out)["truncated"]) == (12, 2)


def test_dataset_names_and_config(tmp_path: Path, tok: Path) -> None:
    d = write_dataset_dir(tmp_path / "data", n=6)
    code, out, err = _run("--dataset", "alp,sg", "--dataset-dir", str(d), "--tokenizer", str(tok),
                          "--template", "qwen", "--json")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["count"] == 12
    cfg = tmp_path / "train.yaml"
    cfg.write_text(
        f"model_name_or_path: {tok}\ndataset: sg\ndataset_dir: {d}\ntemplate: llama3\ncutoff_len: 16\n"
    )
    code, out, err = _run("--config", str(cfg), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert (result["template"], result["count"], result["config_cutoff_len"]) == ("llama3", 6, 16)
    assert result["config_truncated"] == 6


def test_drop_longer_than_writes_a_filtered_copy(tmp_path: Path, tok: Path) -> None:
    data = _write(tmp_path / "d.json", ROWS)
    out_file = tmp_path / "short.json"
    args = [str(data), "--tokenizer", str(tok), "--template", "empty", "--drop-longer-than", "10", "--output"]
    code, out, err = _run(*args, str(out_file))
    assert code == 0, err
    assert out.splitlines()[-1] == "dropped 3 samples; wrote 2 rows"
    assert err == f"wrote 2 rows to {out_file} (dropped 3 samples over 10 tokens)\n"
    assert json.loads(out_file.read_text()) == ROWS[:2]
    code, _, err = _run(*args, str(out_file))
    assert code == 1
    assert err.strip().endswith("short.json exists; pass --force to overwrite it")
    code, _, err = _run(*args, str(data), "--force")
    assert code == 1 and "is the input file" in err
    assert json.loads(data.read_text()) == ROWS


def test_skipped_rows_and_strict(tmp_path: Path, tok: Path) -> None:
    data = _write(tmp_path / "d.json", [*ROWS[:2], {"instruction": "x"}, {"instruction": "y", "output": 3}])
    code, out, err = _run(str(data), "--tokenizer", str(tok), "--template", "empty", "--json")
    assert code == 0
    result = json.loads(out)
    assert (result["count"], result["skipped"]) == (2, 2)
    assert result["skipped_reasons"] == {"missing column `output`": 1, "`output` is not a string": 1}
    assert err.splitlines() == [
        f"warning: skipped {data}[2]: missing column `output`",
        f"warning: skipped {data}[3]: `output` is not a string",
    ]
    code, out, err = _run(str(data), "--tokenizer", str(tok), "--template", "empty", "--strict")
    assert code == 1 and out == ""
    assert err == f"Error: {data}[2]: missing column `output`; fix the row or drop --strict to skip it\n"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b'[{"instruction": "a", "output": "b"} {"x": 1}]',
            r"bad.json:1:38: invalid JSON: expecting `,` or `]`",
        ),
        (b"[]", r"bad.json is empty; it holds no rows"),
        (b'[{"instruction": "caf\xe9"}]', r"bad.json: byte 21: not UTF-8; re-encode the file as UTF-8"),
        (b'[{"instruction": "a"}]', r"no valid samples \(1 rows skipped: missing column `output`\)"),
    ],
)
def test_bad_data_is_one_line(tmp_path: Path, tok: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    code, out, err = _run(str(path), "--tokenizer", str(tok), "--template", "qwen")
    assert code == 1 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("Error: ")
    assert __import__("re").search(message, err), err
    assert "Traceback" not in err


def test_bad_template_tokenizer_and_flags(tmp_path: Path, tok: Path) -> None:
    data = _write(tmp_path / "d.json", ROWS)
    code, _, err = _run(str(data), "--tokenizer", str(tok), "--template", "lama3")
    assert code == 1 and "unknown template `lama3`" in err and "did you mean `llama3`" in err
    empty_dir = tmp_path / "notok"
    empty_dir.mkdir()
    code, _, err = _run(str(data), "--tokenizer", str(empty_dir), "--template", "qwen")
    assert code == 1
    assert err.startswith(
        f"Error: tokenizer: no tokenizer files (tokenizer.json, tokenizer_config.json) in {empty_dir}"
    )
    code, _, err = _run(str(data), "--template", "qwen")
    assert code == 2 and "--tokenizer DIR" in err
    code, _, err = _run(str(data), "--tokenizer", str(tok), "--template", "qwen", "--drop-longer-than", "5")
    assert code == 2 and "--drop-longer-than and --output go together" in err
    code, _, err = _run(str(data), "--tokenizer", str(tok), "--percentile", "120")
    assert code == 2


def test_tiktoken_offline_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty-cache"))
    data = _write(tmp_path / "d.json", ROWS)
    code, _, err = _run(str(data), "--tiktoken", "o200k_base", "--template", "qwen")
    assert code == 1
    assert err == (
        "Error: tiktoken: encoding `o200k_base` is not cached and the machine is offline; pass the model's own "
        "tokenizer with --tokenizer DIR, or a local file with --tiktoken PATH/o200k_base.tiktoken\n"
    )


def test_tiktoken_file_is_labelled_approximate(tmp_path: Path) -> None:
    import base64

    ranks = {bytes([i]): i for i in range(256)}
    tfile = tmp_path / "bytes.tiktoken"
    tfile.write_text("".join(f"{base64.b64encode(k).decode()} {v}\n" for k, v in ranks.items()))
    data = _write(tmp_path / "d.json", ROWS[:2])
    code, out, err = _run(str(data), "--tiktoken", str(tfile), "--template", "empty", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["approximate"] is True and result["tokenizer"] == "bytes.tiktoken (tiktoken, approximate)"
    # one token per byte, and the `empty` template adds nothing: "a a " + "b b "
    assert result["max"] == len("a a ") + len("b b ")


def test_plot(tmp_path: Path, tok: Path) -> None:
    data = _write(tmp_path / "d.json", ROWS)
    png = tmp_path / "p.png"
    code, _, err = _run(
        str(data), "--tokenizer", str(tok), "--template", "empty", "--plot", str(png), "--json"
    )
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_list_templates() -> None:
    code, out, _ = _run("--list-templates")
    assert code == 0 and {"qwen3", "llama3", "mistral"} <= set(out.split())


def test_measure_config_cutoff_matches_the_command(tmp_path: Path, tok: Path) -> None:
    from lf_tuner.errors import LfTunerError
    from lf_tuner.lengths import measure_config_cutoff

    d = write_dataset_dir(tmp_path / "data", n=10)
    cfg = {"model_name_or_path": str(tok), "dataset": "alp, sg", "dataset_dir": str(d), "template": "qwen"}
    code, out, _ = _run("--dataset", "alp,sg", "--dataset-dir", str(d), "--tokenizer", str(tok), "--template",
                        "qwen", "--json", "--multiple", "32", "--percentile", "90")  # fmt: skip
    assert code == 0
    assert measure_config_cutoff(cfg, percentile=90, multiple=32) == json.loads(out)["recommended_cutoff"]
    with pytest.raises(
        LfTunerError, match=r"model_name_or_path: `Qwen/Qwen3-8B` is not a local model directory"
    ):
        measure_config_cutoff({**cfg, "model_name_or_path": "Qwen/Qwen3-8B"})
    with pytest.raises(LfTunerError, match=r"config: no `template` key"):
        measure_config_cutoff({k: v for k, v in cfg.items() if k != "template"})


def test_csv_drop_keeps_header(tmp_path: Path, tok: Path) -> None:
    src = tmp_path / "d.csv"
    src.write_text(
        "instruction,input,output\n" + "".join(f"{r['instruction']},,{r['output']}\n" for r in ROWS)
    )
    out = tmp_path / "o.csv"
    code, _, err = _run(str(src), "--tokenizer", str(tok), "--template", "empty", "--drop-longer-than", "10",
                        "--output", str(out))  # fmt: skip
    assert code == 0, err
    assert out.read_text().splitlines() == ["instruction,input,output", "a ,,b ", "a a ,,b b "]
