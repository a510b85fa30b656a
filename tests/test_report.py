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
from lf_tuner.sweep.storage import STUDY_NAME, storage
from tests.sweep_helpers import install_stub, sweep, write_spec

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
        trial.set_user_attr("trial_dir", f"trial-{number:03d}")
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
    # three trials cannot show that a parameter matters: the report says so instead of a share that sums to 1
    assert "Share of the variance of eval_loss each parameter explains alone, over 3 completed trials" in md
    rows = [
        line
        for line in md.splitlines()
        if line.startswith("| learning_rate |") or line.startswith("| lora_rank |")
    ]
    assert len(rows) == 2 and all(row.endswith("| no: chance reaches it with 3 trials |") for row in rows)


def test_csv(sweep_dir: Path) -> None:
    result = CliRunner().invoke(cli, ["report", str(sweep_dir), "--format", "csv", "--no-plots"])
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "trial,learning_rate,lora_rank,lora_alpha,status,eval_loss,steps,total_steps,runtime_s\n"
        "3,0.0003,32,64,completed,0.701,,,3725.0\n"
        "1,0.0003,8,16,completed,0.734,,,58.2\n"
        "0,0.0001,8,16,completed,0.912,,,61.0\n"
        "2,0.0015,8,16,diverged,,,,12.0\n"
        "4,0.0001,32,64,oom,,,,4.5\n"
    )


def test_json_has_trials_and_best(sweep_dir: Path) -> None:
    result = CliRunner().invoke(cli, ["report", str(sweep_dir), "--format", "json", "--no-plots"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["best"] == {
        "number": 3,
        "stage": "main",
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
    names = ["loss_curves.png", "history.png", "parallel_coordinates.png", "slice.png", "contour.png"]
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


def _importance(xs: list[float], ys: list[float], tmp_path: Path) -> dict[str, object]:
    d = tmp_path / "s"
    d.mkdir()
    study = optuna.create_study(study_name=STUDY_NAME, storage=storage(d), direction="minimize")
    for key, value in {
        "metric": "eval_loss",
        "goal": "minimize",
        "parameters": ["learning_rate", "lora_dropout"],
    }.items():
        study.set_user_attr(key, value)
    dists = {
        "learning_rate": FloatDistribution(1e-5, 1e-2, log=True),
        "lora_dropout": FloatDistribution(0.0, 0.2),
    }
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        study.add_trial(
            optuna.trial.create_trial(
                params={"learning_rate": x, "lora_dropout": 0.01 * (i % 7)}, distributions=dists, value=y
            )
        )
    data: dict[str, object] = json.loads(
        CliRunner().invoke(cli, ["report", str(d), "--format", "json", "--no-plots"]).stdout
    )["importance"]
    return data


def test_importance_over_six_noisy_trials_is_not_backed(tmp_path: Path) -> None:
    # issue 11: six trials where the metric does not depend on a parameter; optuna's normalised importance
    # still gives it a large share, because the shares always sum to 1
    import random

    rng = random.Random(3)
    xs = [10 ** rng.uniform(-5, -2) for _ in range(6)]
    ys = [1.0 + rng.gauss(0, 0.01) for _ in range(6)]
    imp = _importance(xs, ys, tmp_path)
    study = optuna.load_study(study_name=STUDY_NAME, storage=storage(tmp_path / "s"))
    normalised = optuna.importance.get_param_importances(study)
    assert max(normalised.values()) > 0.4  # what the old report printed as "importance"
    for entry in imp.values():
        assert isinstance(entry, dict)
        assert entry["trials"] == 6 and entry["backed"] is False
        assert entry["p_value"] >= 0.05


def test_importance_over_thirty_trials_with_a_real_effect_is_backed(tmp_path: Path) -> None:
    import math
    import random

    rng = random.Random(5)
    xs = [10 ** rng.uniform(-5, -2) for _ in range(30)]
    ys = [(math.log10(x) + 3.5) ** 2 + rng.gauss(0, 0.05) for x in xs]
    imp = _importance(xs, ys, tmp_path)
    lr, dropout = imp["learning_rate"], imp["lora_dropout"]
    assert isinstance(lr, dict) and isinstance(dropout, dict)
    assert lr["backed"] is True and lr["share"] > 0.9 and lr["p_value"] < 0.01
    assert lr["spread"][0] <= lr["share"] <= lr["spread"][1] + 1e-9
    assert dropout["backed"] is False


def test_best_config_is_a_ready_training_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    install_stub(tmp_path, monkeypatch)
    params = {
        "learning_rate": {"values": [1.0e-5, 2.0e-4]},
        "lora_rank": {"values": [16]},
        "lora_alpha": {"expr": "2 * lora_rank"},
    }
    spec = write_spec(tmp_path, parameters=params, budget={"max_steps": 10})
    assert sweep(spec, tmp_path / "d", "--gpus", "cpu").exit_code == 0
    result = CliRunner().invoke(
        cli, ["report", str(tmp_path / "d"), "--no-plots", "--best-config", "best.yaml"]
    )
    assert result.exit_code == 0, result.output
    assert result.stderr == "wrote best.yaml\n"
    text = (tmp_path / "best.yaml").read_text()
    assert text.startswith(f"# The best trial of the sweep in {tmp_path / 'd'}: trial 1, eval_loss = ")
    assert "# Train it: lf-tuner run best.yaml\n" in text
    cfg = yaml.safe_load(text)
    assert cfg == {
        "stage": "sft",
        "finetuning_type": "lora",
        "learning_rate": 2.0e-4,
        "lora_rank": 16,
        "lora_alpha": 32,
        "output_dir": "saves/d-best",
    }  # the base, the best parameters; the sweep's max_steps cap and trial output_dir gone
    again = CliRunner().invoke(
        cli, ["report", str(tmp_path / "d"), "--no-plots", "--best-config", "best.yaml"]
    )
    assert again.exit_code == 1 and again.stderr == "Error: best.yaml exists; pass --force to replace it\n"
    forced = ["report", str(tmp_path / "d"), "--no-plots", "--best-config", "best.yaml", "--force"]
    assert CliRunner().invoke(cli, forced).exit_code == 0
