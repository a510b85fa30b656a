"""Sweep specs: strict schema, grid expansion, tied parameters, dry runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from lf_tuner.cli import cli
from lf_tuner.errors import BadValue
from lf_tuner.sweep import ExprError, Space, SpecError, eval_expr, expr_names, parse_spec, preview, resolve

BASE: dict[str, Any] = {
    "base": "train.yaml",
    "method": "grid",
    "metric": {"name": "eval_loss", "goal": "minimize"},
    "parameters": {
        "learning_rate": {"values": [1.0e-4, 3.0e-4, 1.0e-3]},
        "lora_rank": {"values": [8, 32]},
        "lora_alpha": {"expr": "2 * lora_rank"},
    },
}


def spec_with(**changes: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(BASE))
    data.update(changes)
    return data


def grid_points(spec: Any) -> list[dict[str, Any]]:
    return Space(spec.parameters).grid_points()


def grid_size(spec: Any) -> int:
    return Space(spec.parameters).grid_size()


def test_grid_points_in_stable_order_with_tied_values() -> None:
    spec = parse_spec(BASE)
    assert grid_size(spec) == 6
    assert grid_points(spec) == [
        {"learning_rate": 1.0e-4, "lora_rank": 8, "lora_alpha": 16},
        {"learning_rate": 1.0e-4, "lora_rank": 32, "lora_alpha": 64},
        {"learning_rate": 3.0e-4, "lora_rank": 8, "lora_alpha": 16},
        {"learning_rate": 3.0e-4, "lora_rank": 32, "lora_alpha": 64},
        {"learning_rate": 1.0e-3, "lora_rank": 8, "lora_alpha": 16},
        {"learning_rate": 1.0e-3, "lora_rank": 32, "lora_alpha": 64},
    ]


INT_KEYS = ["lora_rank", "max_steps", "save_steps", "seed"]


@given(st.lists(st.lists(st.integers(1, 99), min_size=1, max_size=4, unique=True), min_size=1, max_size=4))
def test_grid_size_is_the_product_of_the_value_counts(lists: list[list[int]]) -> None:
    params = {INT_KEYS[i]: {"values": values} for i, values in enumerate(lists)}
    spec = parse_spec(spec_with(parameters=params))
    points = grid_points(spec)
    expected = 1
    for values in lists:
        expected *= len(values)
    assert grid_size(spec) == len(points) == expected
    assert len({json.dumps(p, sort_keys=True) for p in points}) == expected  # no point twice


def test_grid_respects_max_trials_and_chained_expressions() -> None:
    params = {
        "lora_rank": {"values": [4, 8, 16]},
        "lora_alpha": {"expr": "2 * lora_rank"},
        "warmup_steps": {"expr": "min(lora_alpha, 20) + 1"},
    }
    spec = parse_spec(spec_with(parameters=params, max_trials=2))
    assert preview(spec) == [
        {"lora_rank": 4, "lora_alpha": 8, "warmup_steps": 9},
        {"lora_rank": 8, "lora_alpha": 16, "warmup_steps": 17},
    ]


def test_eval_expr_is_arithmetic_only() -> None:
    assert eval_expr("2 * r + 1", {"r": 8}) == 17
    assert eval_expr("r / 4", {"r": 8}) == 2.0
    params = {"lora_rank": {"values": [1]}, "lora_alpha": {"expr": "lora_rank.__class__"}}
    with pytest.raises(
        SpecError, match=r"parameters\.lora_alpha\.expr: cannot read .*`Attribute` is not allowed"
    ):
        parse_spec(spec_with(parameters=params))
    params["lora_alpha"] = {"expr": "__import__('os')"}
    with pytest.raises(SpecError, match=r"parameters\.lora_alpha\.expr: cannot read .*only min, max"):
        parse_spec(spec_with(parameters=params))


# what the spec check accepts is exactly what evaluates: one whitelist (`~a` once passed one copy and
# evaluated as `not a` in the other)
EXPRESSIONS = [
    ("2 * r", 16),
    ("-r", -8),
    ("+r", 8),
    ("not r", False),
    ("r // 3 + r % 3", 4),
    ("r ** 2", 64),
    ("min(r, 4) if r > 2 else max(r, 1)", 4),
    ("1 < r <= 8", True),
    ("round(r / 3)", 3),
    ("abs(-r)", 8),
    ("~r", None),
    ("r << 1", None),
    ("r & 1", None),
    ("r.real", None),
    ("[r]", None),
    ("'x'", None),
    ("r if True else 1", None),
    ("pow(r, 2)", None),
    ("min", None),
    ("lambda: r", None),
]


@pytest.mark.parametrize(("expr", "expected"), EXPRESSIONS)
def test_one_whitelist_checks_and_evaluates(expr: str, expected: Any) -> None:
    if expected is None:
        with pytest.raises(ExprError):
            expr_names(expr)
        with pytest.raises(ExprError):
            eval_expr(expr, {"r": 8})
    else:
        assert expr_names(expr) == {"r"}
        assert eval_expr(expr, {"r": 8}) == expected


def test_an_inverted_expression_is_refused_in_the_spec() -> None:
    params = {"lora_rank": {"values": [8]}, "lora_alpha": {"expr": "~lora_rank"}}
    with pytest.raises(SpecError, match=r"lora_alpha\.expr: cannot read `~lora_rank`: the operator `Invert`"):
        parse_spec(spec_with(parameters=params))


def test_random_preview_is_reproducible_and_within_bounds() -> None:
    params = {
        "learning_rate": {"distribution": "log_uniform", "min": 1.0e-5, "max": 1.0e-3},
        "lora_dropout": {"distribution": "uniform", "min": 0.0, "max": 0.1},
        "num_train_epochs": {"distribution": "int", "min": 2, "max": 5},
        "lora_rank": {"values": [8, 32]},
        "lora_alpha": {"expr": "2 * lora_rank"},
    }
    spec = parse_spec(spec_with(method="random", max_trials=20, parameters=params))
    first = preview(spec, 5)
    assert first == preview(spec, 5)
    assert len(first) == 5
    for p in first:
        assert 1.0e-5 <= p["learning_rate"] <= 1.0e-3
        assert 0.0 <= p["lora_dropout"] <= 0.1
        assert p["num_train_epochs"] in range(2, 6)
        assert p["lora_alpha"] == 2 * p["lora_rank"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_trial": 5}, r"unknown key `max_trial`; did you mean `max_trials`\?"),
        ({"metric": {"nmae": "eval_loss"}}, r"metric\.nmae: unknown key `nmae`; did you mean `name`\?"),
        (
            {"parameters": {"learning_rate": {"valuse": [1]}}},
            r"parameters\.learning_rate\.valuse: unknown key `valuse`; did you mean `values`\?",
        ),
        (
            {"method": "bayes"},
            r"method: Input should be 'grid', 'random', 'sobol', 'tpe', 'cmaes' or 'nsga2'",
        ),
        (
            {"parameters": {"lr": {"distribution": "uniform", "min": 0, "max": 1}}},
            r"parameters\.lr: grid search takes only `values",
        ),
        ({"method": "random"}, r"max_trials: required for `method: random`"),
        (
            {
                "method": "tpe",
                "max_trials": 3,
                "parameters": {"lr": {"distribution": "log_uniform", "min": 0, "max": 1}},
            },
            r"parameters\.lr: log_uniform needs `min` > 0",
        ),
        (
            {
                "method": "tpe",
                "max_trials": 3,
                "parameters": {"lr": {"distribution": "uniform", "min": 2, "max": 1}},
            },
            r"parameters\.lr: `min` \(2\) must be below `max` \(1\)",
        ),
        (
            {"parameters": {"lora_rank": {"values": [8]}, "lora_alpha": {"expr": "2 * lora_rnak"}}},
            r"`lora_rnak` is not a parameter of this sweep; did you mean `lora_rank`\?",
        ),
        ({"parameters": {"a": {"expr": "b + 1"}, "b": {"expr": "a + 1"}}}, r"cycle: a, b"),
        ({"parameters": {"lr": {"values": [1], "expr": "2"}}}, r"parameters\.lr: give exactly one of"),
        ({"parameters": {"output_dir": {"values": ["x"]}}}, r"the sweep sets `output_dir`"),
        ({"preset": "lora-sft"}, r"base: give either `base: train.yaml` or `preset: NAME`"),
        ({"budget": {"max_steps": 0}}, r"budget\.max_steps: Input should be greater than 0"),
        ({"divergence_factor": 1.0}, r"divergence_factor: Input should be greater than 1"),
        # names and values LLaMA-Factory would refuse, before any trial starts
        (
            {"parameters": {"learning_rat": {"values": [1.0e-4]}}},
            r"parameters\.learning_rat: unknown LLaMA-Factory 0\.9\.5 key; did you mean `learning_rate`\?",
        ),
        (
            {"parameters": {"learning_rate": {"values": ["high"]}}},
            r'parameters\.learning_rate: "high" is a str, expected float',
        ),
        (
            {"parameters": {"lora_rank": {"values": [8, 16.5]}}},
            r"parameters\.lora_rank: 16\.5 is a float, expected int",
        ),
        (
            {
                "method": "tpe",
                "max_trials": 4,
                "parameters": {"lora_rank": {"distribution": "uniform", "min": 1, "max": 8}},
            },
            r"parameters\.lora_rank: 1\.0 is a float, expected int",
        ),
        (
            {"parameters": {"learning_rate": {"values": [-1.0e-4]}}},
            r"parameters\.learning_rate: -0\.0001 must be greater than 0",
        ),
        (
            {"parameters": {"lora_rank": {"values": [8]}, "lora_alpah": {"expr": "2 * lora_rank"}}},
            r"parameters\.lora_alpah: unknown LLaMA-Factory .* did you mean `lora_alpha` or",
        ),
        # samplers, pruners and early stopping take optuna's arguments, checked against its signatures
        (
            {"method": "tpe", "max_trials": 4, "sampler": {"n_startup_trial": 2}},
            r"sampler\.n_startup_trial: not an argument of optuna's TPESampler; did you mean `n_startup_trials`\?",
        ),
        (
            {"method": "tpe", "max_trials": 4, "sampler": {"seed": 2}},
            r"sampler\.seed: set by the spec itself",
        ),
        ({"sampler": {"n_startup_trials": 2}}, r"sampler: grid search takes no sampler arguments"),
        (
            {"pruner": {"type": "median", "n_startup_trial": 2}},
            r"pruner\.n_startup_trial: not an argument of optuna's MedianPruner; did you mean `n_startup_trials`\?",
        ),
        (
            {"pruner": "asha"},
            r"pruner\.type: Input should be 'median', 'successive_halving', 'hyperband' or 'none'",
        ),
        (
            {"intermediate": "eval_accuracy"},
            r"intermediate: `eval_accuracy` is not written to trainer_log\.jsonl",
        ),
        (
            {"metric": {"name": "eval_accuracy", "goal": "maximize"}, "early_stopping": {"patience": 2}},
            r"early_stopping: stops on `eval_loss` .* the metric must be `eval_loss` itself",
        ),
        ({"early_stopping": {"patience": 0}}, r"early_stopping\.patience: Input should be greater than 0"),
        # several metrics
        (
            {
                "metric": None,
                "metrics": [{"name": "eval_loss"}, {"name": "train_runtime"}],
                "method": "cmaes",
                "max_trials": 3,
            },
            r"method: CMA-ES optimises one metric",
        ),
        (
            {
                "metric": None,
                "metrics": [{"name": "eval_loss"}, {"name": "train_runtime"}],
                "pruner": "median",
            },
            r"pruner: optuna cannot prune a multi-objective study",
        ),
        ({"metrics": [{"name": "eval_loss"}]}, r"metric: give `metric: \{name: \.\.\., goal: \.\.\.\}` or"),
        # stages
        (
            {"stages": [{"name": "a"}, {"name": "a"}]},
            r"stages\.1\.name: `a` is already the name of an earlier stage",
        ),
        ({"stages": [{"name": "a b"}]}, r"stages\.0\.name: use letters, digits"),
        ({"stages": [{"name": "a"}], "max_trials": 3}, r"max_trials: with `stages:` each stage has its own"),
        (
            {"stages": [{"name": "a", "parameters": {"lora_dropout": {"values": [0.1]}}}]},
            r"stages\.0\.parameters\.lora_dropout: not a parameter of the sweep",
        ),
        (
            {"stages": [{"name": "a"}, {"name": "b", "parameters": {"learning_rate": {"around_best": 3}}}]},
            r"stages\.1\.parameters\.learning_rate: grid search takes only values; use `values_around_best",
        ),
        (
            {
                "stages": [
                    {"name": "a"},
                    {"name": "b", "parameters": {"learning_rate": {"values_around_best": [0, 1]}}},
                ]
            },
            r"stages\.1\.parameters\.learning_rate\.values_around_best: give positive factors",
        ),
        (
            {"stages": [{"name": "a"}, {"name": "b", "method": "tpe"}]},
            r"stages\.1\.max_trials: required for `method: tpe`",
        ),
        (
            {"stages": [{"name": "a", "parameters": {"learning_rate": {"valeus": [1]}}}]},
            r"stages\.0\.parameters\.learning_rate\.valeus: unknown key `valeus`; did you mean `values`\?",
        ),
    ],
)
def test_spec_problems_name_the_key(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_spec(spec_with(**changes))


def test_all_problems_are_reported_at_once() -> None:
    data = spec_with(max_trial=5, metrc={})
    del data["metric"]
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    assert info.value.message.splitlines() == [
        "spec has 2 problems:",
        "max_trial: unknown key `max_trial`; did you mean `max_trials`?",
        "metrc: unknown key `metrc`; did you mean `metric` or `metrics`?",
    ]
    assert [str(p) for p in info.value.problems] == info.value.message.splitlines()[1:]


def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    (tmp_path / "train.yaml").write_text("learning_rate: 1.0e-4\n")
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_dry_run_lists_every_grid_point(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE)
    result = CliRunner().invoke(cli, ["sweep", str(path), "--dry-run", "--dir", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "trial  learning_rate  lora_rank  lora_alpha\n"
        "0      0.0001         8          16\n"
        "1      0.0001         32         64\n"
        "2      0.0003         8          16\n"
        "3      0.0003         32         64\n"
        "4      0.001          8          16\n"
        "5      0.001          32         64\n"
    )
    assert result.stderr == "grid: 6 of 6 grid points\n"
    assert not (tmp_path / "d").exists()  # nothing started, nothing written


def test_dry_run_json_is_one_object_per_trial(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE)
    result = CliRunner().invoke(cli, ["sweep", str(path), "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    trials = json.loads(result.stdout)
    assert [t["params"] for t in trials] == grid_points(parse_spec(BASE))
    assert [t["trial"] for t in trials] == list(range(6))


def test_bad_spec_exits_1_with_one_line_per_problem(tmp_path: Path) -> None:
    path = _write(tmp_path, spec_with(max_trial=3))
    result = CliRunner().invoke(cli, ["sweep", str(path), "--dry-run"])
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {path} has 1 problem:\nmax_trial: unknown key `max_trial`; did you mean `max_trials`?\n"
    )


def test_missing_and_malformed_spec_files(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["sweep", str(tmp_path / "nope.yaml"), "--dry-run"])
    assert result.exit_code == 1
    assert "cannot read the sweep spec" in result.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: [grid\n")
    result = CliRunner().invoke(cli, ["sweep", str(bad), "--dry-run"])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {bad}: line 2 not valid YAML")


def test_bad_gpus_flag_exits_2(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE)
    result = CliRunner().invoke(cli, ["sweep", str(path), "--dir", str(tmp_path / "d"), "--gpus", "x,y"])
    assert result.exit_code == 2
    assert "--gpus" in result.stderr


def test_example_specs_are_valid() -> None:
    from lf_tuner.sweep import load_spec

    examples = Path(__file__).resolve().parent.parent / "examples"
    spec = load_spec(examples / "sweep.yaml")
    assert grid_size(spec) == 12
    staged = load_spec(examples / "sweep_stages.yaml")
    assert [s.name for s in staged.stage_list()] == ["coarse", "fine", "local"]
    assert staged.stage_parameters(staged.stage_list()[1])["lora_rank"].at_best  # kept at the best


def test_stage_ranges_resolve_around_the_best() -> None:
    spec = parse_spec(
        spec_with(
            stages=[
                {"name": "coarse"},
                {
                    "name": "fine",
                    "method": "tpe",
                    "max_trials": 3,
                    "parameters": {"learning_rate": {"around_best": 4}, "lora_rank": {"around_best": 2}},
                },
                {"name": "local", "parameters": {"learning_rate": {"values_around_best": [0.5, 1, 2]}}},
            ]
        )
    )
    best = {"learning_rate": 2.0e-4, "lora_rank": 32, "lora_alpha": 64}
    fine = resolve(spec.stage_parameters(spec.stage_list()[1]), best, "fine")
    lr, rank = fine.parameters["learning_rate"], fine.parameters["lora_rank"]
    assert (lr.distribution, lr.min, lr.max) == ("log_uniform", 5.0e-5, 8.0e-4)
    assert (rank.distribution, rank.min, rank.max) == ("int", 16, 64)
    local = resolve(spec.stage_parameters(spec.stage_list()[2]), best, "local")
    assert local.grid_points() == [
        {"learning_rate": 1.0e-4, "lora_rank": 32, "lora_alpha": 64},
        {"learning_rate": 2.0e-4, "lora_rank": 32, "lora_alpha": 64},
        {"learning_rate": 4.0e-4, "lora_rank": 32, "lora_alpha": 64},
    ]
    ints = resolve(
        {
            "lora_rank": parse_spec(spec_with())
            .parameters["lora_rank"]
            .model_copy(update={"values": None, "values_around_best": [0.5, 0.75, 1]})
        },
        {"lora_rank": 8},
        "x",
    )
    assert ints.parameters["lora_rank"].values == [4, 6, 8]  # whole numbers stay whole


def test_gpu_slots_group_gpus_per_trial(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    import lf_tuner.train.gpus
    from lf_tuner.sweep import gpu_slots

    gpus = [SimpleNamespace(index=i) for i in (2, 3, 5, 7, 8)]
    monkeypatch.setattr(lf_tuner.train.gpus, "detect_gpus", lambda select=None: gpus)
    assert gpu_slots(None, 1) == ["2", "3", "5", "7", "8"]
    assert gpu_slots(None, 2) == ["2,3", "5,7"]
    assert gpu_slots("cpu", 2) == ["cpu"]
    with pytest.raises(BadValue, match="gpus_per_trial is 8 but only 5 GPU"):
        gpu_slots(None, 8)
    monkeypatch.setattr(lf_tuner.train.gpus, "detect_gpus", lambda select=None: [])
    assert gpu_slots(None, 1) == ["cpu"]
    # no NVML here: the GPUs the value names, as `run --gpus` reads it (positions, or a count N as 0..N-1)
    assert gpu_slots("0,1", 1) == ["0", "1"]
    assert gpu_slots("0", 1) == ["0"]
    assert gpu_slots("1,", 1) == ["1"]
    assert gpu_slots("2", 1) == ["0", "1"]
    with pytest.raises(BadValue, match="no GPU is visible to select `all`"):
        gpu_slots("all", 1)


def test_divergence_rules() -> None:
    from lf_tuner.train import Divergence

    def divergence(rows: list[dict[str, Any]], factor: float) -> str | None:
        return Divergence(factor).first(rows)

    assert divergence([{"loss": 2.0}, {"loss": 5.9}], 3.0) is None
    assert divergence([{"loss": 2.0, "current_steps": 1}, {"loss": 6.5, "current_steps": 2}], 3.0) == (
        "loss 6.5 at step 2 is above 3 x its first value 2"
    )
    assert (
        divergence([{"loss": 2.0}, {"grad_norm": float("inf"), "step": 4}], 3.0) == "grad_norm inf at step 4"
    )
    assert divergence([{"eval_loss": float("nan"), "step": 2}], 3.0) == "eval_loss nan at step 2"
    assert divergence([{"loss": 0.0}, {"loss": 9.0}], 3.0) is None  # no ratio to a zero first loss
