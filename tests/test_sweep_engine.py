"""The sweep engine driven through the one llamafactory-cli stand-in (tests/stubs): it tests the engine, not
LLaMA-Factory. Nothing here waits on time: runs that must be caught mid-way block on a gate file."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lf_tuner.sweep import parse_spec, preview
from lf_tuner.train import process_start
from tests.sweep_helpers import (
    final_eval,
    report_json,
    starts,
    subprocess_env,
    sweep,
    sweep_args,
    write_spec,
)


def wait_for(path: Path, proc: subprocess.Popen[str] | None = None) -> None:
    """Until `path` exists (an event the stand-in writes), or the process we wait on has died."""
    while not path.exists():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{path} never appeared; the sweep exited: {proc.communicate()}")
        time.sleep(0.01)


def wait_gone(pid: int) -> None:
    while process_start(pid) is not None:
        time.sleep(0.01)


def stub_pid(trial_dir: Path) -> int:
    return int((trial_dir / "output" / "stub.pids").read_text().split()[0])


def test_grid_sweep_finds_the_best_trial_over_two_gpus(tmp_path: Path, fake_lf: Path) -> None:
    result = sweep(write_spec(tmp_path), tmp_path / "d", "--gpus", "0,1")
    assert result.exit_code == 0, result.output
    grid = [(lr, r) for lr in (1.0e-4, 3.0e-4, 1.0e-3) for r in (8, 32)]
    best = min(range(6), key=lambda i: final_eval(*grid[i], 10))
    assert f"best: trial {best}, eval_loss = {final_eval(*grid[best], 10):.6g}" in result.stderr
    data = report_json(tmp_path / "d")
    lr, rank = grid[best]
    assert data["best"] == {
        "number": best,
        "stage": "main",
        "params": {"learning_rate": lr, "lora_rank": rank, "lora_alpha": 2 * rank},
        "value": pytest.approx(final_eval(lr, rank, 10)),
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
        "max_steps": 10,
        "output_dir": str((tmp_path / "d" / "trial-003" / "output").absolute()),
        "logging_nan_inf_filter": False,
    }
    # one start per trial, spread over both GPUs, one GPU each
    runs = starts(fake_lf)
    assert len(runs) == 6
    assert {r["env"]["CUDA_VISIBLE_DEVICES"] for r in runs} == {"0", "1"}


def test_rerunning_a_finished_sweep_starts_nothing(tmp_path: Path, fake_lf: Path) -> None:
    spec = write_spec(tmp_path)
    assert sweep(spec, tmp_path / "d", "--gpus", "cpu").exit_code == 0
    result = sweep(spec, tmp_path / "d", "--gpus", "cpu")
    assert result.exit_code == 0, result.output
    assert "started" not in result.stderr
    assert len(starts(fake_lf)) == 6


def test_random_sweep_runs_what_dry_run_showed(tmp_path: Path, fake_lf: Path) -> None:
    params = {
        "learning_rate": {"distribution": "log_uniform", "min": 1.0e-5, "max": 1.0e-3},
        "lora_rank": {"values": [8, 16, 32]},
    }
    spec = write_spec(tmp_path, method="random", max_trials=4, parameters=params)
    result = sweep(spec, tmp_path / "d", "--gpus", "cpu")
    assert result.exit_code == 0, result.output
    trials = sorted(report_json(tmp_path / "d")["trials"], key=lambda t: t["number"])
    assert [t["params"] for t in trials] == preview(parse_spec(yaml.safe_load(spec.read_text())))
    for t in trials:
        assert t["value"] == pytest.approx(
            final_eval(t["params"]["learning_rate"], t["params"]["lora_rank"], 10)
        )
    # raising max_trials grows the sweep by new draws, not replays of the first ones
    spec = write_spec(tmp_path, method="random", max_trials=6, parameters=params)
    assert sweep(spec, tmp_path / "d", "--gpus", "cpu").exit_code == 0
    rates = [t["params"]["learning_rate"] for t in report_json(tmp_path / "d")["trials"]]
    assert len(rates) == len(set(rates)) == 6


@pytest.mark.parametrize("method", ["tpe", "sobol", "cmaes", "nsga2"])
def test_each_sampler_spends_exactly_its_budget(tmp_path: Path, fake_lf: Path, method: str) -> None:
    params = {"learning_rate": {"distribution": "log_uniform", "min": 1.0e-5, "max": 1.0e-3}}
    spec = write_spec(tmp_path, method=method, max_trials=3, parameters=params)
    result = sweep(spec, tmp_path / "d", "--gpus", "0,1")
    assert result.exit_code == 0, result.output
    trials = report_json(tmp_path / "d")["trials"]
    assert len(trials) == 3 and all(t["status"] == "completed" for t in trials)
    assert len(starts(fake_lf)) == 3


def test_a_nan_trial_is_marked_diverged_and_the_search_goes_on(tmp_path: Path, fake_lf: Path) -> None:
    # 3e-3 is past the stand-in's divergence threshold: its loss grows until it is NaN
    params = {"learning_rate": {"values": [1.0e-4, 3.0e-3]}, "lora_rank": {"values": [8]}}
    spec = write_spec(tmp_path, parameters=params, budget={"max_steps": 60}, divergence_factor=1.0e9)
    result = sweep(spec, tmp_path / "d", "--gpus", "cpu")
    assert result.exit_code == 0, result.output
    by_lr = {t["params"]["learning_rate"]: t for t in report_json(tmp_path / "d")["trials"]}
    assert by_lr[1.0e-4]["status"] == "completed"
    assert by_lr[3.0e-3]["status"] == "diverged"
    assert "loss nan at step" in by_lr[3.0e-3]["reason"]
    assert "trial 1 diverged" in result.stderr


def test_a_loss_blowup_is_stopped_while_the_trial_runs(
    tmp_path: Path, fake_lf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # after blowing up, the stand-in hangs until killed: the sweep ends only because it stopped the run
    monkeypatch.setenv("LF_STUB_HANG_DIVERGED", "1")
    params = {"learning_rate": {"values": [3.0e-3, 1.0e-4]}, "lora_rank": {"values": [8]}}
    spec = write_spec(tmp_path, parameters=params, budget={"max_steps": 60}, divergence_factor=3.0)
    result = sweep(spec, tmp_path / "d", "--gpus", "cpu")
    assert result.exit_code == 0, result.output
    trials = {t["number"]: t for t in report_json(tmp_path / "d")["trials"]}
    assert trials[0]["status"] == "diverged"
    assert "above 3 x its first value" in trials[0]["reason"]
    assert trials[0]["steps"] < 60
    assert process_start(stub_pid(tmp_path / "d" / "trial-000")) is None
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
    params = {"learning_rate": {"values": [1.0e-5, 2.0e-4]}, "lora_rank": {"values": [8]}}
    result = sweep(write_spec(tmp_path, metric=metric, parameters=params), tmp_path / "d", "--gpus", "cpu")
    assert result.exit_code == 0, result.output
    data = report_json(tmp_path / "d")
    assert data["metric"] == {"name": "accuracy", "goal": "maximize"}
    assert data["best"]["number"] == 1
    assert data["best"]["value"] == pytest.approx(1.0 - final_eval(2.0e-4, 8, 10) / 10)


def test_a_missing_metric_fails_the_trial_with_the_keys_seen(tmp_path: Path, fake_lf: Path) -> None:
    params = {"learning_rate": {"values": [1.0e-4]}}
    spec = write_spec(tmp_path, metric={"name": "eval_accuracy"}, parameters=params)
    result = sweep(spec, tmp_path / "d", "--gpus", "cpu")
    assert result.exit_code == 1
    assert "metric `eval_accuracy` is not in all_results.json" in result.stderr
    assert "(keys: epoch, eval_loss, train_loss, train_runtime)" in result.stderr
    assert result.stderr.endswith(
        f"Error: no trial completed; read {tmp_path / 'd'}/trial-*/launch.log, or `lf-tuner report {tmp_path / 'd'}`\n"
    )


def test_a_changed_search_space_is_refused_in_the_same_dir(tmp_path: Path, fake_lf: Path) -> None:
    params = {"learning_rate": {"values": [1.0e-4]}}
    assert sweep(write_spec(tmp_path, parameters=params), tmp_path / "d", "--gpus", "cpu").exit_code == 0
    result = sweep(write_spec(tmp_path, parameters={"learning_rate": {"values": [2.0e-4]}}), tmp_path / "d")
    assert result.exit_code == 1
    assert "holds a sweep started from a different spec" in result.stderr
    assert "use a new --dir" in result.stderr


# --- killed and resumed: synchronised on the stand-in's files, never on time ---


def _killed_mid_trial(tmp_path: Path, gate: Path) -> tuple[list[str], dict[str, str], Path]:
    """Start a 3-point grid whose trial 1 blocks after its first step; SIGKILL the sweep once it is there."""
    params = {"learning_rate": {"values": [1.0e-4, 3.0e-4, 1.0e-3]}, "lora_rank": {"values": [8]}}
    spec = write_spec(tmp_path, parameters=params, budget={"max_steps": 4})
    argv = [sys.executable, "-m", "lf_tuner", *sweep_args(spec, tmp_path / "d", "--gpus", "cpu")]
    env = subprocess_env(LF_STUB_GATE=str(gate))
    gate.mkdir()
    (gate / "trial-000").touch()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    trial_1 = tmp_path / "d" / "trial-001"
    wait_for(trial_1 / "output" / "trainer_log.jsonl", proc)  # trial 1 logged step 1 and waits at its gate
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    return argv, env, trial_1


def test_killed_sweep_resumes_without_losing_or_repeating_trials(tmp_path: Path, fake_lf: Path) -> None:
    gate = tmp_path / "gate"
    argv, env, trial_1 = _killed_mid_trial(tmp_path, gate)
    orphan = stub_pid(trial_1)
    assert process_start(orphan) is not None  # its training outlived the killed sweep, still at its gate
    for name in ("trial-002", "trial-003", "trial-004"):
        (gate / name).touch()  # every later run may go on; trial-001 never may

    rerun = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "trial 1: stopped its training, left running by a sweep that was killed" in rerun.stderr
    assert "trial 1: was running when its sweep stopped; marked interrupted and queued again" in rerun.stderr
    assert process_start(orphan) is None  # stopped, so it can never finish behind the sweep's back
    assert not (trial_1 / "output" / "all_results.json").exists()

    trials = {t["number"]: t for t in report_json(tmp_path / "d")["trials"]}
    assert trials[1]["status"] == "interrupted"
    completed = [t for t in trials.values() if t["status"] == "completed"]
    assert sorted(t["params"]["learning_rate"] for t in completed) == [1.0e-4, 3.0e-4, 1.0e-3]
    retry = next(t for t in completed if t["params"]["learning_rate"] == 3.0e-4)
    assert retry["retry_of"] == 1
    configs = [r["argv"][2] for r in starts(fake_lf)]
    assert configs.count(str(tmp_path / "d" / "trial-000" / "train.yaml")) == 1  # trial 0 was not run again
    assert len(configs) == 4  # 3 points + the one interrupted start


def test_a_trial_that_finished_while_the_sweep_was_dead_is_adopted(tmp_path: Path, fake_lf: Path) -> None:
    gate = tmp_path / "gate"
    argv, env, trial_1 = _killed_mid_trial(tmp_path, gate)
    orphan = stub_pid(trial_1)
    for name in ("trial-001", "trial-002"):
        (gate / name).touch()
    wait_gone(orphan)  # it finished on its own, with nobody watching
    assert (trial_1 / "output" / "all_results.json").exists()

    rerun = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "trial 1: ended while its sweep was stopped; its result is adopted" in rerun.stderr
    trials = {t["number"]: t for t in report_json(tmp_path / "d")["trials"]}
    assert [trials[n]["status"] for n in sorted(trials)] == ["completed"] * 3
    assert trials[1]["value"] == pytest.approx(final_eval(3.0e-4, 8, 4))
    configs = [r["argv"][2] for r in starts(fake_lf)]
    assert len(configs) == 3  # no grid point ran twice
    assert len(set(configs)) == 3


def test_sigterm_marks_the_running_trial_and_requeues_it(tmp_path: Path, fake_lf: Path) -> None:
    params = {"learning_rate": {"values": [1.0e-4, 3.0e-4]}, "lora_rank": {"values": [8]}}
    spec = write_spec(tmp_path, parameters=params, budget={"max_steps": 4})
    argv = [sys.executable, "-m", "lf_tuner", *sweep_args(spec, tmp_path / "d", "--gpus", "cpu")]
    gate = tmp_path / "gate"
    gate.mkdir()
    env = subprocess_env(LF_STUB_GATE=str(gate))
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(tmp_path / "d" / "trial-000" / "output" / "trainer_log.jsonl", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "sweep stopped; running trials were marked interrupted and queued again" in err
    assert process_start(stub_pid(tmp_path / "d" / "trial-000")) is None
    data = report_json(tmp_path / "d")
    statuses = {t["number"]: (t["status"], t["retry_of"]) for t in data["trials"]}
    assert statuses[0] == ("interrupted", None)
    assert sorted(statuses.values(), key=str) == sorted(
        [("interrupted", None), ("queued", None), ("queued", 0)], key=str
    )


def test_worker_leaves_other_machines_running_trials_alone(tmp_path: Path, fake_lf: Path) -> None:
    import optuna

    from lf_tuner.sweep import LAUNCHERS, Sweep

    spec = parse_spec(
        yaml.safe_load(
            write_spec(tmp_path, parameters={"learning_rate": {"values": [1.0e-4, 3.0e-4]}}).read_text()
        )
    )
    d = tmp_path / "d"
    d.mkdir()
    first = Sweep(spec, d, {}, LAUNCHERS["llamafactory"])
    space = first.spaces["main"]
    alive = first.study.ask(space.distributions())  # a worker on another machine, heard from just now
    owner = {"host": "other-machine", "pid": 1, "start": "0"}
    for key, value in {"owner": owner, "heartbeat": time.time()}.items():
        alive.set_user_attr(key, value)
    silent = first.study.ask(space.distributions())  # one that has not said anything for an hour
    for key, value in {"owner": owner, "heartbeat": time.time() - 3600}.items():
        silent.set_user_attr(key, value)

    Sweep(
        spec, d, {}, LAUNCHERS["llamafactory"], worker=True
    )  # a worker never reclaims other machines' trials
    assert [t.state for t in first.study.get_trials()] == [optuna.trial.TrialState.RUNNING] * 2

    Sweep(spec, d, {}, LAUNCHERS["llamafactory"])  # the owner reclaims only the silent one
    trials = first.study.get_trials()
    assert trials[0].state == optuna.trial.TrialState.RUNNING
    assert trials[1].state == optuna.trial.TrialState.FAIL
    assert trials[1].user_attrs["status"] == "interrupted"
    assert trials[-1].user_attrs["retry_of"] == 1
    assert trials[-1].state == optuna.trial.TrialState.WAITING


def test_base_config_errors_name_the_key_and_the_file(tmp_path: Path) -> None:
    from lf_tuner.errors import LfTunerError
    from lf_tuner.sweep import load_base_config

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


def test_a_missing_base_is_refused_before_any_trial(tmp_path: Path, fake_lf: Path) -> None:
    result = sweep(write_spec(tmp_path, base="nope.yaml"), tmp_path / "d", "--gpus", "cpu")
    assert result.exit_code == 1
    assert "nope.yaml does not exist" in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "d").exists() and starts(fake_lf) == []


def test_tied_values_of_the_wrong_type_are_refused_before_any_trial(tmp_path: Path, fake_lf: Path) -> None:
    params = {"lora_rank": {"values": [8, 16]}, "lora_alpha": {"expr": "lora_rank / 3"}}
    result = sweep(write_spec(tmp_path, parameters=params), tmp_path / "d", "--gpus", "cpu")
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "Error: sweep has 1 problem:\nparameters.lora_alpha: 2.6666666666666665 is a float"
    )
    assert "(in the trial lora_rank=8 lora_alpha=2.667)" in result.stderr
    assert starts(fake_lf) == []
