"""The sweep engine driven through a stand-in `llamafactory-cli` (tests/stubs_sweep): it tests the engine, not LLaMA-Factory."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from lf_tuner.cli import cli
from lf_tuner.sweep import parse_spec
from lf_tuner.sweep.space import preview

STUB = Path(__file__).parent / "stubs_sweep" / "llamafactory_cli.py"
REPO = Path(__file__).resolve().parent.parent


def fake_eval_loss(lr: float, rank: int) -> float:
    return (math.log10(lr) + 3.5) ** 2 + 8 / rank


@pytest.fixture
def fake_lf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put the stand-in llamafactory-cli first on PATH; returns the file that logs each start."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "llamafactory-cli"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STUB}" "$@"\n')
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    calls = tmp_path / "calls.txt"
    monkeypatch.setenv("FAKE_LF_CALLS", str(calls))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.yaml").write_text("stage: sft\nfinetuning_type: lora\nlearning_rate: 1.0e-4\n")
    return calls


def write_spec(tmp_path: Path, **changes: Any) -> Path:
    data: dict[str, Any] = {
        "base": "train.yaml",
        "method": "grid",
        "metric": {"name": "eval_loss", "goal": "minimize"},
        "budget": {"max_steps": 3},
        "parameters": {
            "learning_rate": {"values": [1.0e-4, 3.0e-4, 1.0e-3]},
            "lora_rank": {"values": [8, 32]},
            "lora_alpha": {"expr": "2 * lora_rank"},
        },
    }
    data.update(changes)
    path = tmp_path / "spec.yaml"
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
        "0.05",
        *extra,
    ]


def sweep(spec: Path, sweep_dir: Path, *extra: str) -> Any:
    return CliRunner().invoke(cli, sweep_args(spec, sweep_dir, *extra))


def report_json(sweep_dir: Path) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["report", str(sweep_dir), "--format", "json", "--no-plots"])
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_grid_sweep_finds_the_best_trial_over_two_gpus(tmp_path: Path, fake_lf: Path) -> None:
    result = sweep(write_spec(tmp_path), tmp_path / "d", "--gpus", "0,1")
    assert result.exit_code == 0, result.output
    assert "best: trial 3, eval_loss = 0.250523" in result.stderr
    data = report_json(tmp_path / "d")
    assert data["best"] == {
        "number": 3,
        "params": {"learning_rate": 3.0e-4, "lora_rank": 32, "lora_alpha": 64},
        "value": pytest.approx(fake_eval_loss(3.0e-4, 32)),
    }
    assert [t["status"] for t in data["trials"]] == ["completed"] * 6
    values = [t["value"] for t in data["trials"]]
    assert values == sorted(values)
    # each trial's YAML holds base + params + budget + its own output_dir
    cfg = yaml.safe_load((tmp_path / "d" / "trial-003" / "train.yaml").read_text())
    assert cfg == {
        "stage": "sft",
        "finetuning_type": "lora",
        "learning_rate": 3.0e-4,
        "lora_rank": 32,
        "lora_alpha": 64,
        "max_steps": 3,
        "output_dir": str((tmp_path / "d" / "trial-003" / "output").absolute()),
        "logging_nan_inf_filter": False,
    }
    # one start per trial, spread over both GPUs, one GPU each
    lines = fake_lf.read_text().splitlines()
    assert len(lines) == 6
    assert {line.split()[1] for line in lines} == {"0", "1"}


def test_rerunning_a_finished_sweep_starts_nothing(tmp_path: Path, fake_lf: Path) -> None:
    spec = write_spec(tmp_path)
    assert sweep(spec, tmp_path / "d", "--gpus", "cpu").exit_code == 0
    result = sweep(spec, tmp_path / "d", "--gpus", "cpu")
    assert result.exit_code == 0, result.output
    assert "started" not in result.stderr
    assert len(fake_lf.read_text().splitlines()) == 6


def test_random_sweep_runs_what_dry_run_showed(tmp_path: Path, fake_lf: Path) -> None:
    params = {
        "learning_rate": {"distribution": "log_uniform", "min": 1.0e-5, "max": 1.0e-2},
        "lora_rank": {"values": [8, 16, 32]},
    }
    spec = write_spec(tmp_path, method="random", max_trials=4, parameters=params)
    result = sweep(spec, tmp_path / "d", "--gpus", "cpu")
    assert result.exit_code == 0, result.output
    trials = sorted(report_json(tmp_path / "d")["trials"], key=lambda t: t["number"])
    assert [t["params"] for t in trials] == preview(parse_spec(yaml.safe_load(spec.read_text())))
    for t in trials:
        assert t["value"] == pytest.approx(
            fake_eval_loss(t["params"]["learning_rate"], t["params"]["lora_rank"])
        )
    # raising max_trials grows the sweep by new draws, not replays of the first ones
    spec = write_spec(tmp_path, method="random", max_trials=6, parameters=params)
    assert sweep(spec, tmp_path / "d", "--gpus", "cpu").exit_code == 0
    rates = [t["params"]["learning_rate"] for t in report_json(tmp_path / "d")["trials"]]
    assert len(rates) == len(set(rates)) == 6


def test_tpe_sweep_spends_exactly_its_budget(tmp_path: Path, fake_lf: Path) -> None:
    params = {"learning_rate": {"distribution": "log_uniform", "min": 1.0e-5, "max": 1.0e-2}}
    spec = write_spec(tmp_path, method="tpe", max_trials=3, parameters=params)
    result = sweep(spec, tmp_path / "d", "--gpus", "0,1")
    assert result.exit_code == 0, result.output
    assert len(report_json(tmp_path / "d")["trials"]) == 3
    assert len(fake_lf.read_text().splitlines()) == 3


def test_nan_trial_is_marked_diverged_and_the_search_goes_on(
    tmp_path: Path, fake_lf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_LF_NAN_LR", "1.0e-3")
    result = sweep(write_spec(tmp_path), tmp_path / "d", "--gpus", "cpu")
    assert result.exit_code == 0, result.output
    by_lr: dict[float, set[str]] = {}
    for t in report_json(tmp_path / "d")["trials"]:
        by_lr.setdefault(t["params"]["learning_rate"], set()).add(t["status"])
    assert by_lr == {1.0e-4: {"completed"}, 3.0e-4: {"completed"}, 1.0e-3: {"diverged"}}
    assert "trial 4 diverged" in result.stderr
    assert "loss nan at step" in result.stderr


def test_a_loss_blowup_is_stopped_while_the_trial_runs(
    tmp_path: Path, fake_lf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_LF_BLOWUP_LR", "1.0e-3")  # after the blow-up the stand-in hangs for 60 s
    params = {"learning_rate": {"values": [1.0e-3, 1.0e-4]}}
    started = time.monotonic()
    result = sweep(
        write_spec(tmp_path, parameters=params, divergence_factor=3.0), tmp_path / "d", "--gpus", "cpu"
    )
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started < 30  # killed, not waited for
    trials = {t["number"]: t for t in report_json(tmp_path / "d")["trials"]}
    assert trials[0]["status"] == "diverged"
    assert "above 3 x its first value" in trials[0]["reason"]
    assert trials[1]["status"] == "completed"


def test_metric_from_an_evaluation_command(tmp_path: Path, fake_lf: Path) -> None:
    script = tmp_path / "score.py"
    script.write_text(
        "import json, sys\n"
        "r = json.load(open(sys.argv[1] + '/all_results.json'))\n"
        "print('scoring...')\n"
        "print(1.0 - r['eval_loss'] / 10)\n"
    )
    metric = {
        "name": "accuracy",
        "goal": "maximize",
        "command": [sys.executable, str(script), "{output_dir}"],
    }
    params = {"learning_rate": {"values": [1.0e-4, 3.0e-4]}, "lora_rank": {"values": [8]}}
    result = sweep(write_spec(tmp_path, metric=metric, parameters=params), tmp_path / "d", "--gpus", "cpu")
    assert result.exit_code == 0, result.output
    data = report_json(tmp_path / "d")
    assert data["metric"] == {"name": "accuracy", "goal": "maximize"}
    assert data["best"]["number"] == 1
    assert data["best"]["value"] == pytest.approx(1.0 - fake_eval_loss(3.0e-4, 8) / 10)


def test_a_missing_metric_fails_the_trial_with_the_keys_seen(tmp_path: Path, fake_lf: Path) -> None:
    params = {"learning_rate": {"values": [1.0e-4]}}
    spec = write_spec(tmp_path, metric={"name": "eval_accuracy"}, parameters=params)
    result = sweep(spec, tmp_path / "d", "--gpus", "cpu")
    assert result.exit_code == 1
    assert "metric `eval_accuracy` is not in all_results.json" in result.stderr
    assert "(keys: epoch, eval_loss, train_loss, train_runtime)" in result.stderr
    assert result.stderr.endswith(
        f"Error: no trial completed; read {tmp_path / 'd'}/trial-*/launch.log, "
        f"or `lf-tuner report {tmp_path / 'd'}`\n"
    )


def test_a_changed_search_space_is_refused_in_the_same_dir(tmp_path: Path, fake_lf: Path) -> None:
    params = {"learning_rate": {"values": [1.0e-4]}}
    assert sweep(write_spec(tmp_path, parameters=params), tmp_path / "d", "--gpus", "cpu").exit_code == 0
    result = sweep(write_spec(tmp_path, parameters={"learning_rate": {"values": [2.0e-4]}}), tmp_path / "d")
    assert result.exit_code == 1
    assert "holds a sweep started from a different spec" in result.stderr
    assert "use a new --dir" in result.stderr


def _wait_for(path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_killed_sweep_resumes_without_losing_or_repeating_trials(tmp_path: Path, fake_lf: Path) -> None:
    params = {"learning_rate": {"values": [1.0e-4, 3.0e-4, 1.0e-3]}, "lora_rank": {"values": [8]}}
    spec = write_spec(tmp_path, parameters=params, budget={"max_steps": 4})
    argv = [sys.executable, "-m", "lf_tuner", *sweep_args(spec, tmp_path / "d", "--gpus", "cpu")]
    env = dict(os.environ, FAKE_LF_STEP_S="0.3", PYTHONPATH=str(REPO))
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # trial 1 is mid-run once it has logged a step
    _wait_for(tmp_path / "d" / "trial-001" / "output" / "trainer_log.jsonl")
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert not (tmp_path / "d" / "trial-001" / "output" / "all_results.json").exists()

    rerun = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert "trial 1: was running when its sweep stopped; marked failed and queued again" in rerun.stderr

    trials = {t["number"]: t for t in report_json(tmp_path / "d")["trials"]}
    assert trials[1]["status"] == "interrupted"
    completed = [t for t in trials.values() if t["status"] == "completed"]
    rates = sorted(t["params"]["learning_rate"] for t in completed)
    assert rates == [1.0e-4, 3.0e-4, 1.0e-3]  # every grid point finished exactly once
    retry = next(t for t in completed if t["params"]["learning_rate"] == 3.0e-4)
    assert retry["retry_of"] == 1
    starts = [line.split()[0] for line in fake_lf.read_text().splitlines()]
    assert starts.count(str(tmp_path / "d" / "trial-000" / "train.yaml")) == 1  # trial 0 was not run again
    assert len(starts) == 4  # 3 points + the one interrupted start
    # the interrupted trial's orphaned process was stopped, so it never finished behind the sweep's back
    time.sleep(1.0)
    assert not (tmp_path / "d" / "trial-001" / "output" / "all_results.json").exists()


def test_sigterm_marks_the_running_trial_and_requeues_it(tmp_path: Path, fake_lf: Path) -> None:
    params = {"learning_rate": {"values": [1.0e-4, 3.0e-4]}, "lora_rank": {"values": [8]}}
    spec = write_spec(tmp_path, parameters=params, budget={"max_steps": 20})
    argv = [sys.executable, "-m", "lf_tuner", *sweep_args(spec, tmp_path / "d", "--gpus", "cpu")]
    env = dict(os.environ, FAKE_LF_STEP_S="0.5", PYTHONPATH=str(REPO))
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(tmp_path / "d" / "trial-000" / "output" / "trainer_log.jsonl")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "sweep stopped; running trials were marked failed and queued again" in err
    data = report_json(tmp_path / "d")
    statuses = {t["number"]: (t["status"], t["retry_of"]) for t in data["trials"]}
    assert statuses[0] == ("interrupted", None)
    assert sorted(statuses.values(), key=str) == sorted(
        [("interrupted", None), ("queued", None), ("queued", 0)], key=str
    )


def test_worker_leaves_other_machines_running_trials_alone(tmp_path: Path, fake_lf: Path) -> None:
    import optuna

    from lf_tuner.sweep.engine import Sweep
    from lf_tuner.sweep.trial import LAUNCHERS

    spec = parse_spec(
        yaml.safe_load(
            write_spec(tmp_path, parameters={"learning_rate": {"values": [1.0e-4, 3.0e-4]}}).read_text()
        )
    )
    d = tmp_path / "d"
    d.mkdir()
    first = Sweep(spec, d, {}, LAUNCHERS["llamafactory"])
    trial = first.study.ask(first.dists)  # as if a worker on another machine were running it
    for key, value in {"host": "other-machine", "pid": 1, "pid_start": "0"}.items():
        trial.set_user_attr(key, value)

    Sweep(spec, d, {}, LAUNCHERS["llamafactory"], worker=True)
    states = [t.state for t in first.study.get_trials()]
    assert states == [optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING]

    Sweep(spec, d, {}, LAUNCHERS["llamafactory"])  # not a worker: this machine owns the sweep, so it reclaims
    trials = first.study.get_trials()
    assert trials[0].state == optuna.trial.TrialState.FAIL
    assert trials[0].user_attrs["status"] == "interrupted"
    assert trials[-1].user_attrs["retry_of"] == 0
    assert trials[-1].state == optuna.trial.TrialState.WAITING


def test_base_config_errors_name_the_key_and_the_file(tmp_path: Path) -> None:
    import pytest

    from lf_tuner.errors import LfTunerError
    from lf_tuner.sweep.engine import load_base_config
    from lf_tuner.sweep.spec import parse_spec

    spec = parse_spec(
        {"base": "missing.yaml", "method": "grid", "metric": {"name": "eval_loss", "goal": "minimize"},
         "parameters": {"learning_rate": {"values": [1e-4]}}}
    )  # fmt: skip
    with pytest.raises(
        LfTunerError, match=r"^base: .*missing\.yaml does not exist.*relative to the spec file"
    ):
        load_base_config(spec, tmp_path, tmp_path / "sweep")
    (tmp_path / "missing.yaml").write_text("- not\n- a mapping\n")
    with pytest.raises(LfTunerError, match=r"^base: .*expected a mapping of LLaMA-Factory keys, got list"):
        load_base_config(spec, tmp_path, tmp_path / "sweep")
