"""Shared setup of the sweep tests: the one llamafactory-cli stand-in on PATH in its `curve` mode, spec files,
the CLI arguments, and reading the report back."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from lf_tuner.cli import cli
from tests.stubs import llamafactory_cli_stub as stub

STUB = Path(stub.__file__)
REPO = Path(__file__).resolve().parent.parent


def final_eval(lr: float, rank: int, steps: int) -> float:
    """The stand-in's eval_loss at the end of a run: the oracle the sweep's results are checked against."""
    return stub.eval_loss(lr, rank, steps, steps)


def install_stub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put the stand-in first on PATH in curve mode; returns the JSON-lines file that logs each start."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    exe = bin_dir / "llamafactory-cli"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STUB}" "$@"\n')
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("LF_STUB_MODE", "curve")
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("LF_STUB_CALLS", str(calls))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.yaml").write_text("stage: sft\nfinetuning_type: lora\nlearning_rate: 1.0e-4\n")
    return calls


def starts(calls: Path) -> list[dict[str, Any]]:
    """Every start of the stand-in: its argv, config and environment."""
    if not calls.exists():
        return []
    return [json.loads(line) for line in calls.read_text().splitlines()]


def write_spec(tmp_path: Path, name: str = "spec.yaml", **changes: Any) -> Path:
    data: dict[str, Any] = {
        "base": "train.yaml",
        "method": "grid",
        "metric": {"name": "eval_loss", "goal": "minimize"},
        "budget": {"max_steps": 10},
        "parameters": {
            "learning_rate": {"values": [1.0e-4, 3.0e-4, 1.0e-3]},
            "lora_rank": {"values": [8, 32]},
            "lora_alpha": {"expr": "2 * lora_rank"},
        },
    }
    data.update(changes)
    data = {k: v for k, v in data.items() if v is not None}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def sweep_args(spec: Path, sweep_dir: Path, *extra: str) -> list[str]:
    """`lf-tuner sweep` arguments with the stand-in launcher and a fast poll."""
    return [
        "sweep",
        str(spec),
        "--dir",
        str(sweep_dir),
        "--launcher",
        "llamafactory",
        "--poll",
        "0.02",
        *extra,
    ]


def sweep(spec: Path, sweep_dir: Path, *extra: str) -> Any:
    return CliRunner().invoke(cli, sweep_args(spec, sweep_dir, *extra))


def report_json(sweep_dir: Path, *extra: str) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["report", str(sweep_dir), "--format", "json", "--no-plots", *extra])
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def subprocess_env(**extra: str) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO), **extra)
