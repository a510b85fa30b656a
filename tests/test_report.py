"""`lf-tuner report DIR`: the notebook table, formats, importance and plots, over a journal written as the sweep writes it."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from lf_tuner.cli import cli
from lf_tuner.sweep.engine import STUDY_NAME, storage

# number, learning_rate, lora_rank, status, value, runtime
ROWS = [
    (0, 1.0e-4, 8, "completed", 0.912, 61.0),
    (1, 3.0e-4, 8, "completed", 0.734, 58.2),
    (2, 1.5e-3, 8, "diverged", None, 12.0),
    (3, 3.0e-4, 32, "completed", 0.701, 3725.0),
    (4, 1.0e-4, 32, "oom", None, 4.5),
]


@pytest.fixture
def sweep_dir(tmp_path: Path) -> Path:
    """A finished sweep's journal plus trainer logs, written with the same attributes the engine sets."""
    d = tmp_path / "sweep"
    d.mkdir()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=STUDY_NAME, storage=storage(d), direction="minimize")
    for key, value in {
        "metric": "eval_loss",
        "goal": "minimize",
        "method": "grid",
        "parameters": ["learning_rate", "lora_rank", "lora_alpha"],
    }.items():
        study.set_user_attr(key, value)
    dists = {
        "learning_rate": FloatDistribution(1e-5, 1e-2, log=True),
        "lora_rank": CategoricalDistribution([8, 32]),
    }
    for number, lr, rank, status, value, runtime in ROWS:
        study.enqueue_trial({"learning_rate": lr, "lora_rank": rank})
        trial = study.ask(dists)
        assert trial.number == number
        trial.set_user_attr("params", {"learning_rate": lr, "lora_rank": rank, "lora_alpha": 2 * rank})
        trial.set_user_attr("status", status)
        trial.set_user_attr("runtime_s", runtime)
        trial.set_user_attr("reason", "" if status == "completed" else f"{status} at step 2")
        out = d / f"trial-{number:03d}" / "output"
        out.mkdir(parents=True)
        with (out / "trainer_log.jsonl").open("w") as fh:
            for step in range(1, 4):
                fh.write(
                    json.dumps({"current_steps": step, "total_steps": 3, "loss": 2.0 / step + lr}) + "\n"
                )
        if status == "completed":
            study.tell(trial, value)
        else:
            study.tell(trial, state=TrialState.FAIL)
    return d


TABLE = """\
| trial | learning_rate | lora_rank | lora_alpha | status | eval_loss | runtime |
|---|---|---|---|---|---|---|
| 3 ★ | 0.0003 | 32 | 64 | completed | 0.701 | 1h02m |
| 1 | 0.0003 | 8 | 16 | completed | 0.734 | 58.2s |
| 0 | 0.0001 | 8 | 16 | completed | 0.912 | 1m01s |
| 2 | 0.0015 | 8 | 16 | diverged | - | 12.0s |
| 4 | 0.0001 | 32 | 64 | oom | - | 4.5s |
"""


def test_markdown_table_sorted_by_metric_best_marked(sweep_dir: Path) -> None:
    result = CliRunner().invoke(cli, ["report", str(sweep_dir), "--no-plots"])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    md = result.stdout
    assert md.startswith("# Sweep: eval_loss (minimize)\n\n" + TABLE + "\n")
    assert "Best: trial 3 ★, eval_loss = 0.701: learning_rate=0.0003, lora_rank=32, lora_alpha=64\n" in md
    assert "- trial 2 (diverged): diverged at step 2\n- trial 4 (oom): oom at step 2\n" in md
    assert "## Parameter importance\n\n| parameter | importance |\n|---|---|\n" in md
    importance = dict(
        line.strip("| ").split(" | ") for line in md.split("|---|---|\n")[-1].split("\n\n")[0].splitlines()
    )
    assert set(importance) == {"learning_rate", "lora_rank"}
    assert sum(float(v) for v in importance.values()) == pytest.approx(1.0, abs=0.01)


def test_csv(sweep_dir: Path) -> None:
    result = CliRunner().invoke(cli, ["report", str(sweep_dir), "--format", "csv", "--no-plots"])
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "trial,learning_rate,lora_rank,lora_alpha,status,eval_loss,runtime_s\n"
        "3,0.0003,32,64,completed,0.701,3725.0\n"
        "1,0.0003,8,16,completed,0.734,58.2\n"
        "0,0.0001,8,16,completed,0.912,61.0\n"
        "2,0.0015,8,16,diverged,,12.0\n"
        "4,0.0001,32,64,oom,,4.5\n"
    )


def test_json_has_trials_and_best(sweep_dir: Path) -> None:
    result = CliRunner().invoke(cli, ["report", str(sweep_dir), "--format", "json", "--no-plots"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["best"] == {
        "number": 3,
        "params": {"learning_rate": 3.0e-4, "lora_rank": 32, "lora_alpha": 64},
        "value": 0.701,
    }
    assert [(t["number"], t["status"], t["value"]) for t in data["trials"]] == [
        (3, "completed", 0.701),
        (1, "completed", 0.734),
        (0, "completed", 0.912),
        (2, "diverged", None),
        (4, "oom", None),
    ]
    assert set(data["trials"][0]) >= {"number", "params", "status", "value"}


def test_plots_are_written_and_linked(sweep_dir: Path) -> None:
    result = CliRunner().invoke(cli, ["report", str(sweep_dir)])
    assert result.exit_code == 0, result.output
    names = [
        "loss_curves.png",
        "metric_vs_learning_rate.png",
        "metric_vs_lora_rank.png",
        "metric_vs_lora_alpha.png",
    ]
    for name in names:
        png = sweep_dir / "report" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({Path('report') / name})" in result.stdout
    assert result.stderr == "".join(f"wrote {sweep_dir / 'report' / n}\n" for n in names)


def test_maximize_sorts_the_other_way(tmp_path: Path) -> None:
    d = tmp_path / "s"
    d.mkdir()
    study = optuna.create_study(study_name=STUDY_NAME, storage=storage(d), direction="maximize")
    study.set_user_attr("metric", "accuracy")
    study.set_user_attr("goal", "maximize")
    study.set_user_attr("parameters", ["x"])
    for x in (1, 3, 2):
        t = study.ask({"x": CategoricalDistribution([1, 2, 3])})
        t.set_user_attr("status", "completed")
        study.tell(t, x / 10)
    result = CliRunner().invoke(cli, ["report", str(d), "--format", "csv", "--no-plots"])
    assert [line.split(",")[0] for line in result.stdout.splitlines()[1:]] == ["1", "2", "0"]
    md = CliRunner().invoke(cli, ["report", str(d), "--no-plots"]).stdout
    assert "| 1 ★ |" in md


def test_report_without_a_sweep_exits_1(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {tmp_path}: no optuna.journal here; start the sweep with `lf-tuner sweep SPEC.yaml --dir {tmp_path}`\n"
    )


def test_bad_format_exits_2(sweep_dir: Path) -> None:
    result = CliRunner().invoke(cli, ["report", str(sweep_dir), "--format", "xlsx"])
    assert result.exit_code == 2
