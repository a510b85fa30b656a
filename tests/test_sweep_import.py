"""`sweep --import`: tables, earlier sweeps and `lf-tuner run` outputs become completed trials."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import yaml

from lf_tuner.sweep import load_spec, parse_spec, read_rows
from lf_tuner.sweep.storage import storage
from tests.sweep_helpers import final_eval, report_json, starts, sweep, write_spec

REPO = Path(__file__).resolve().parent.parent
GRID = {"learning_rate": {"values": [1.0e-4, 3.0e-4, 1.0e-3]}, "lora_rank": {"values": [8, 32]}}


def test_a_grid_skips_the_points_a_table_measured(tmp_path: Path, fake_lf: Path) -> None:
    table = tmp_path / "results.md"
    table.write_text(
        "# Round 1\n\nNotes before the table.\n\n"
        "| run | learning_rate | lora_rank | eval_loss | status |\n"
        "|---|---|---|---|---|\n"
        "| a | 1e-4 | 8 | 1.25 | completed |\n"
        "| b ★ | 0.0003 | 32 | 1.01 | completed |\n"
        "| c | 1e-3 | 8 | - | diverged |\n"
        "| d | 5e-3 | 8 | 3.5 | completed |\n"
    )
    spec = write_spec(tmp_path, parameters=GRID)
    result = sweep(spec, tmp_path / "d", "--gpus", "cpu", "--import", str(table))
    assert result.exit_code == 0, result.output
    assert f"{table}: 1 row(s) not completed left out" in result.stderr
    assert (
        f"imported 2 trial(s) from {table} into stage main; 1 row(s) outside the search space left out: "
        f"{table}:10 (learning_rate=0.005, lora_rank=8)" in result.stderr
    )
    ran = {(c["config"]["learning_rate"], c["config"]["lora_rank"]) for c in starts(fake_lf)}
    assert ran == {(1.0e-4, 32), (3.0e-4, 8), (1.0e-3, 8), (1.0e-3, 32)}  # 6 points - 2 measured
    data = report_json(tmp_path / "d")
    imported = {t["number"]: t for t in data["trials"] if t["status"] == "imported"}
    assert sorted(t["value"] for t in imported.values()) == [1.01, 1.25]
    assert data["best"]["value"] == 1.01  # the imported run is still the best: the report says so

    again = sweep(spec, tmp_path / "d", "--gpus", "cpu", "--import", str(table))
    assert again.exit_code == 0, again.output
    assert "imported 0 trial(s)" in again.stderr and "2 row(s) imported before" in again.stderr
    assert len(starts(fake_lf)) == 4


def test_a_csv_table_warms_up_tpe_without_using_its_budget(tmp_path: Path, fake_lf: Path) -> None:
    rows = [(lr, r) for lr in (3.0e-5, 1.0e-4, 3.0e-4, 1.0e-3) for r in (8, 32)]
    table = tmp_path / "results.csv"
    table.write_text(
        "learning_rate,lora_rank,eval_loss\n"
        + "".join(f"{lr},{r},{final_eval(lr, r, 10)}\n" for lr, r in rows)
    )
    params = {
        "learning_rate": {"distribution": "log_uniform", "min": 1.0e-5, "max": 1.0e-3},
        "lora_rank": GRID["lora_rank"],
    }
    spec = write_spec(
        tmp_path, method="tpe", max_trials=3, parameters=params, sampler={"n_startup_trials": 8}
    )
    result = sweep(spec, tmp_path / "d", "--gpus", "cpu", "--import", str(table))
    assert result.exit_code == 0, result.output
    assert f"imported 8 trial(s) from {table}" in result.stderr
    assert len(starts(fake_lf)) == 3  # the budget is for new trials
    # the imported trials sit in the study with the sampled trials' distributions, so TPE models them: with
    # n_startup_trials 8 already met, its first trial differs from what the same seed draws without them
    study = optuna.load_study(study_name="lf-tuner-sweep", storage=storage(tmp_path / "d"))
    assert len(optuna.search_space.intersection_search_space(study.get_trials())) == 2
    cold = sweep(spec, tmp_path / "cold", "--gpus", "cpu")
    assert cold.exit_code == 0, cold.output
    first = [t for t in report_json(tmp_path / "d")["trials"] if t["status"] != "imported"]
    first_cold = sorted(report_json(tmp_path / "cold")["trials"], key=lambda t: t["number"])
    assert min(first, key=lambda t: t["number"])["params"] != first_cold[0]["params"]


def test_an_earlier_sweep_and_run_outputs_import_as_trials(tmp_path: Path, fake_lf: Path) -> None:
    params = {"learning_rate": {"values": [1.0e-4, 3.0e-4]}, "lora_rank": {"values": [8]}}
    first = write_spec(tmp_path, "first.yaml", parameters=params)
    assert sweep(first, tmp_path / "first", "--gpus", "cpu").exit_code == 0
    second = write_spec(tmp_path, "second.yaml", parameters=params)
    result = sweep(second, tmp_path / "second", "--gpus", "cpu", "--import", str(tmp_path / "first"))
    assert result.exit_code == 0, result.output
    assert "imported 2 trial(s)" in result.stderr
    assert len(starts(fake_lf)) == 2  # nothing ran again

    runs = tmp_path / "runs" / "a"
    runs.mkdir(parents=True)
    (runs / "train.yaml").write_text(yaml.safe_dump({"learning_rate": 1.0e-4, "lora_rank": 8}))
    record = {"status": "completed", "config_path": str(runs / "train.yaml")}
    (runs / "lf-tuner-run.json").write_text(json.dumps(record))
    (runs / "all_results.json").write_text(json.dumps({"eval_loss": 0.9}))
    spec = load_spec(second)
    rows, notes = read_rows(tmp_path / "runs", spec)
    assert [(r.params, r.values) for r in rows] == [({"learning_rate": 1.0e-4, "lora_rank": 8}, [0.9])]
    assert notes == []


def test_a_table_without_the_columns_is_one_line(tmp_path: Path, fake_lf: Path) -> None:
    table = tmp_path / "t.csv"
    table.write_text("lr,rank,loss\n1e-4,8,1.0\n")
    result = sweep(write_spec(tmp_path, parameters=GRID), tmp_path / "d", "--import", str(table))
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {table}: no column `learning_rate`, `lora_rank`, `eval_loss` (columns: lr, rank, loss); "
        "name the columns after the sweep's parameters and metric\n"
    )
    assert not (tmp_path / "d").exists()


def test_a_first_stage_around_the_best_imported_run(tmp_path: Path, fake_lf: Path) -> None:
    table = tmp_path / "r.csv"
    table.write_text("learning_rate,lora_rank,eval_loss\n1e-4,8,1.2\n2e-4,16,1.0\n")
    params = {"learning_rate": {"values_around_best": [0.5, 1, 2]}, "lora_rank": {"at_best": True}}
    result = sweep(
        write_spec(tmp_path, parameters=params), tmp_path / "d", "--gpus", "cpu", "--import", str(table)
    )
    assert result.exit_code == 0, result.output
    ran = sorted((c["config"]["learning_rate"], c["config"]["lora_rank"]) for c in starts(fake_lf))
    assert ran == [(1.0e-4, 16), (4.0e-4, 16)]  # 2e-4 at rank 16 is measured: imported, not run


def test_the_shipped_example_table_imports(tmp_path: Path) -> None:
    spec = parse_spec(yaml.safe_load((REPO / "examples" / "sweep.yaml").read_text()))
    rows, notes = read_rows(REPO / "examples" / "results.md", spec)
    assert len(rows) >= 6 and all(len(r.values) == 1 for r in rows)
    assert {"learning_rate", "lora_rank"} <= set(rows[0].params)
