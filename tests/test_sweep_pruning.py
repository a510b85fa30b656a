"""Pruning, early stopping, several metrics and stages, through the stand-in's learning curves. A run that must
be stopped mid-way waits at a gate file that never comes, so only the sweep can end it: no timing."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from lf_tuner.cli import cli
from lf_tuner.train import TrainerLog, process_start
from tests.stubs import llamafactory_cli_stub as stub
from tests.sweep_helpers import final_eval, report_json, starts, sweep, write_spec


def gated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, open_for: list[str], step: int) -> Path:
    """Runs wait after `step` unless their trial folder is listed."""
    gate = tmp_path / "gate"
    gate.mkdir()
    for name in open_for:
        (gate / name).touch()
    monkeypatch.setenv("LF_STUB_GATE", str(gate))
    monkeypatch.setenv("LF_STUB_GATE_STEP", str(step))
    return gate


@pytest.mark.parametrize(
    "pruner",
    [
        {"type": "median", "n_startup_trials": 2},
        {"type": "successive_halving", "min_resource": 2, "reduction_factor": 2},
    ],
)
def test_a_losing_trial_is_pruned_mid_run_and_recorded_with_its_step(
    tmp_path: Path, fake_lf: Path, monkeypatch: pytest.MonkeyPatch, pruner: dict[str, object]
) -> None:
    # two good runs, then one whose learning rate is far too low: its first eval_loss (step 2) is the worst
    gated(tmp_path, monkeypatch, ["trial-000", "trial-001"], step=4)
    params = {"learning_rate": {"values": [2.0e-4, 3.0e-4, 1.0e-5]}, "lora_rank": {"values": [8]}}
    spec = write_spec(tmp_path, parameters=params, budget={"max_steps": 20}, pruner=pruner)
    result = sweep(spec, tmp_path / "d", "--gpus", "cpu")
    assert result.exit_code == 0, result.output
    assert "trial 2 pruned eval_loss=" in result.stderr
    trials = {t["number"]: t for t in report_json(tmp_path / "d")["trials"]}
    assert [trials[n]["status"] for n in (0, 1)] == ["completed", "completed"]
    pruned = trials[2]
    assert pruned["status"] == "pruned"
    assert pruned["reason"] == "pruned at step 2 of 20"
    assert 2 <= pruned["steps"] <= 4 and pruned["total_steps"] == 20
    assert pruned["value"] == pytest.approx(stub.eval_loss(1.0e-5, 8, 2, 20))
    out = tmp_path / "d" / "trial-002" / "output"
    assert max(r["current_steps"] for r in TrainerLog(out / "trainer_log.jsonl").poll()) <= 4
    assert process_start(int((out / "stub.pids").read_text())) is None
    md = CliRunner().invoke(cli, ["report", str(tmp_path / "d"), "--no-plots"]).stdout
    assert "| 2 | 1e-05 | 8 | pruned |" in md
    assert "## Stopped early\n\n1 trial(s) pruned, 0 stopped by early stopping: they ran" in md
    assert "GPU time saved: " in md
    assert "- trial 2: pruned at step 2 of 20" in md


def test_early_stopping_ends_a_trial_whose_eval_loss_stops_improving(
    tmp_path: Path, fake_lf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # at a high rank the stand-in overfits: eval_loss is lowest near step 30 and rises after it
    evals = {s: stub.eval_loss(6.0e-4, 64, s, 100) for s in range(10, 101, 10)}
    best_step = min(evals, key=lambda s: evals[s])
    assert best_step == 30 and evals[40] > evals[30] and evals[50] > evals[30]  # the oracle's shape
    gated(tmp_path, monkeypatch, [], step=60)  # it never passes step 60 unless stopped before
    params = {"learning_rate": {"values": [6.0e-4]}, "lora_rank": {"values": [64]}}
    spec = write_spec(
        tmp_path,
        parameters=params,
        budget={"max_steps": 100},
        early_stopping={"patience": 2, "min_delta": 0.0},
    )
    result = sweep(spec, tmp_path / "d", "--gpus", "cpu")
    assert result.exit_code == 0, result.output
    (trial,) = report_json(tmp_path / "d")["trials"]
    assert trial["status"] == "completed"
    assert trial["reason"] == "early stopping at step 50; best eval_loss at step 30"
    assert trial["value"] == pytest.approx(evals[30])
    assert trial["steps"] <= 60


def test_two_metrics_give_a_pareto_front(tmp_path: Path, fake_lf: Path) -> None:
    # a higher rank lowers eval_loss up to 32 but every step costs more: 64 is beaten by 32 on both
    metrics = [{"name": "eval_loss", "goal": "minimize"}, {"name": "train_runtime", "goal": "minimize"}]
    params = {"learning_rate": {"values": [2.0e-4]}, "lora_rank": {"values": [4, 8, 16, 32, 64]}}
    spec = write_spec(tmp_path, metric=None, metrics=metrics, parameters=params, budget={"max_steps": 40})
    result = sweep(spec, tmp_path / "d", "--gpus", "cpu")
    assert result.exit_code == 0, result.output
    data = report_json(tmp_path / "d")
    front = sorted(p["number"] for p in data["pareto"])
    assert front == [0, 1, 2, 3]
    ranks = {t["number"]: t["params"]["lora_rank"] for t in data["trials"]}
    for p in data["pareto"]:
        rank = ranks[p["number"]]
        assert p["values"] == pytest.approx([final_eval(2.0e-4, rank, 40), 40 * stub.step_seconds(rank)])
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "d")])
    assert "Pareto front: 4 trial(s) marked ★, none beaten on every metric" in result.stdout
    assert "| 4 | 0.0002 | 64 | completed |" in result.stdout  # dominated: not marked
    assert (tmp_path / "d" / "report" / "pareto_front.png").stat().st_size > 0


STAGES = [
    {"name": "coarse"},
    {
        "name": "fine",
        "method": "tpe",
        "max_trials": 4,
        "parameters": {"learning_rate": {"around_best": 3}},
    },
    {"name": "local", "parameters": {"learning_rate": {"values_around_best": [0.8, 1, 1.25]}}},
]


def test_stages_narrow_around_the_best_so_far(tmp_path: Path, fake_lf: Path) -> None:
    params = {
        "learning_rate": {"values": [1.0e-5, 1.0e-4, 1.0e-3]},
        "lora_rank": {"values": [8, 32]},
        "lora_alpha": {"expr": "2 * lora_rank"},
    }
    spec = write_spec(tmp_path, parameters=params, budget={"max_steps": 20}, stages=STAGES)
    result = sweep(spec, tmp_path / "d", "--gpus", "0,1")
    assert result.exit_code == 0, result.output
    data = report_json(tmp_path / "d")
    assert data["stages"] == ["coarse", "fine", "local"]
    by_stage: dict[str, list[dict[str, object]]] = {}
    for t in data["trials"]:
        by_stage.setdefault(str(t["stage"]), []).append(t)
    coarse_done = [t for t in by_stage["coarse"] if t["status"] == "completed"]
    coarse_best = min(coarse_done, key=lambda t: float(t["value"]))  # type: ignore[arg-type]
    lr0, rank0 = coarse_best["params"]["learning_rate"], coarse_best["params"]["lora_rank"]  # type: ignore[index]
    assert len(by_stage["fine"]) == 4
    for t in by_stage["fine"]:
        p = t["params"]
        assert lr0 / 3 <= p["learning_rate"] <= lr0 * 3  # type: ignore[index]
        assert p["lora_rank"] == rank0 and p["lora_alpha"] == 2 * rank0  # type: ignore[index]
    done = [t for t in by_stage["coarse"] + by_stage["fine"] if t["status"] == "completed"]
    so_far = min(done, key=lambda t: float(t["value"]))  # type: ignore[arg-type]
    lr1 = so_far["params"]["learning_rate"]  # type: ignore[index]
    local = sorted(t["params"]["learning_rate"] for t in by_stage["local"])  # type: ignore[index]
    assert local == pytest.approx(sorted([0.8 * lr1, lr1, 1.25 * lr1]), rel=1e-5)
    assert f"stage fine: around the best so far (learning_rate={lr0:.4g}" in result.stderr
    assert (tmp_path / "d" / "trial-fine-000" / "train.yaml").is_file()
    md = CliRunner().invoke(cli, ["report", str(tmp_path / "d"), "--no-plots"]).stdout
    heads = [line for line in md.splitlines() if line.startswith("## Stage")]
    assert heads == [
        "## Stage 1: coarse (grid, 6 trials)",
        "## Stage 2: fine (tpe, 4 trials)",
        "## Stage 3: local (grid, 3 trials)",
    ]
    assert len(starts(fake_lf)) == 13


def test_a_relative_first_stage_without_a_best_says_what_to_do(tmp_path: Path, fake_lf: Path) -> None:
    params = {"learning_rate": {"values_around_best": [0.5, 1, 2]}, "lora_rank": {"values": [8]}}
    result = sweep(write_spec(tmp_path, parameters=params), tmp_path / "d", "--gpus", "cpu")
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: stage `main`: `learning_rate` is set relative to the best trial, but no trial has completed yet; "
        "run an earlier stage first or `--import` earlier results\n"
    )
