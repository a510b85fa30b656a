"""The cores behind `lf-tuner run`, called directly: preflight checks, the plan, staging, records, progress lines."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from lf_tuner.cli.progress import ProgressView, describe_entry
from lf_tuner.errors import BadValue, LfTunerError
from lf_tuner.memory import Estimate, Peak, setup_from_config
from lf_tuner.train import ChildResult, Command, GpuInfo, preflight, runner
from lf_tuner.train import records as runs
from tests.tiny import write_tiny_project

GIB = 2**30
A100 = [GpuInfo(0, "NVIDIA A100", 80 * GIB, 79 * GIB), GpuInfo(2, "NVIDIA A100", 80 * GIB, 60 * GIB)]


@pytest.fixture
def cfg(tmp_path: Path) -> dict[str, Any]:
    """A valid LoRA config on a tiny model (config.json only) and a registered 16-row dataset, absolute paths."""
    return {**write_tiny_project(tmp_path), "bf16": True}


@pytest.fixture
def fake_gpus(monkeypatch: pytest.MonkeyPatch) -> list[GpuInfo]:
    """NVML replaced by a list the test fills in."""
    import lf_tuner.train.gpus

    found: list[GpuInfo] = []
    monkeypatch.setattr(
        lf_tuner.train.gpus,
        "detect_gpus",
        lambda select=None: lf_tuner.train.gpus.select_gpus(found, select) if found else [],
    )
    return found


# ------------------------------------------------------------------------------------------ llamafactory-cli


def test_find_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(
        LfTunerError, match=r"^llamafactory-cli: not found on PATH; install it with `pip install"
    ):
        preflight.find_cli(None, needed=True)
    assert preflight.find_cli(None, needed=False) == "llamafactory-cli"  # planning needs no executable
    with pytest.raises(LfTunerError, match=r"^llamafactory-cli: /nope/cli does not exist; install it"):
        preflight.find_cli("/nope/cli", needed=False)
    exe = tmp_path / "llamafactory-cli"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    assert preflight.find_cli(None, needed=True) == str(exe)
    assert preflight.find_cli(str(exe), needed=True) == str(exe)


# ------------------------------------------------------------------------------------------------ config

NO_RENDER = dict.fromkeys(
    ("preset", "model", "dataset", "dataset_dir", "template", "method", "output_dir", "cutoff")
)


@pytest.mark.parametrize(
    ("config_given", "render", "problem"),
    [
        (True, {}, None),
        (True, {"dataset_dir": "data"}, "give CONFIG or render options, not both (got --dataset-dir)"),
        (False, {"model": "m", "dataset": "d", "output_dir": "o"}, None),
        (
            False,
            {"model": "m", "dataset": "d"},
            "give CONFIG.yaml, or --model, --dataset and --output-dir to render one",
        ),
        (False, {}, "give CONFIG.yaml, or --model, --dataset and --output-dir to render one"),
    ],
)
def test_source_problem(config_given: bool, render: dict[str, Any], problem: str | None) -> None:
    assert preflight.source_problem(config_given, {**NO_RENDER, **render}) == problem


def test_load_config_applies_overrides_to_the_file(cfg: dict[str, Any]) -> None:
    loaded = preflight.load_config(dict(cfg), NO_RENDER, ["cutoff_len=128", "~bf16", "max_steps=3"])
    assert loaded == {**{k: v for k, v in cfg.items() if k != "bf16"}, "cutoff_len": 128, "max_steps": 3}


def test_load_config_renders_without_a_file(cfg: dict[str, Any], tmp_path: Path) -> None:
    render = {
        **NO_RENDER,
        "model": cfg["model_name_or_path"],
        "dataset": "tiny",
        "output_dir": str(tmp_path / "o"),
    }
    loaded = preflight.load_config(None, {**render, "dataset_dir": cfg["dataset_dir"]}, ["max_steps=2"])
    assert loaded["model_name_or_path"] == cfg["model_name_or_path"]
    assert loaded["output_dir"] == str(tmp_path / "o") and loaded["max_steps"] == 2


# -------------------------------------------------------------------------------------------------- GPUs


def test_choose_gpus_cpu_run_turns_off_mixed_precision(cfg: dict[str, Any], fake_gpus: list[GpuInfo]) -> None:
    fake_gpus.extend(A100)  # present, but a CPU run does not look
    cfg.update(fp16=True, pure_bf16=False)
    assert preflight.choose_gpus(cfg, None, cpu=True, planning=False) == (
        [],
        ["note: bf16: true -> false (CPU run)", "note: fp16: true -> false (CPU run)"],
    )
    assert cfg["use_cpu"] is True and cfg["bf16"] is False and cfg["fp16"] is False
    assert preflight.choose_gpus(dict(cfg), "cpu", cpu=False, planning=False) == ([], [])


def test_choose_gpus_use_cpu_config_refuses_gpus(cfg: dict[str, Any]) -> None:
    with pytest.raises(BadValue, match=r"the config sets use_cpu: true; drop --gpus") as info:
        preflight.choose_gpus({**cfg, "use_cpu": True}, "0", cpu=False, planning=True)
    assert info.value.param == "--gpus"


def test_choose_gpus_selects_or_stops_without_one(cfg: dict[str, Any], fake_gpus: list[GpuInfo]) -> None:
    assert preflight.choose_gpus(cfg, None, cpu=False, planning=True) == (  # planning goes on
        [],
        [
            "note: NVML sees no GPU here; the plan leaves CUDA_VISIBLE_DEVICES as it is "
            "(name the GPUs with --gpus 0,1 to plan for them)"
        ],
    )
    assert preflight.choose_gpus(cfg, "0", cpu=False, planning=True) == (
        [],
        ["note: NVML sees no GPU here; planning for GPU 0 from --gpus 0"],
    )
    with pytest.raises(BadValue, match="lists GPU 0 twice"):  # a bad value is refused even without NVML
        preflight.choose_gpus(cfg, "0,0", cpu=False, planning=True)
    with pytest.raises(LfTunerError, match=r"^gpus: no GPU found \(NVML sees none;.*--cpu, or .* --dry-run$"):
        preflight.choose_gpus(cfg, None, cpu=False, planning=False)
    fake_gpus.extend(A100)
    assert preflight.choose_gpus(cfg, "1", cpu=False, planning=False) == ([A100[0]], [])
    assert "use_cpu" not in cfg


@pytest.mark.parametrize(
    ("gpus", "select", "cpu", "ids"),
    [
        (A100, None, False, [0, 2]),  # NVML indices, not positions
        (A100, "0,2", True, []),
        ([], "0,2", False, [0, 2]),  # no NVML here (a login node): --gpus still names them
        ([], " 1, 3", False, [1, 3]),
        ([], "0", False, [0]),  # GPU 0, as `0,` or `0,1` name theirs
        ([], "1,", False, [1]),
        ([], "2", False, [0, 1]),  # a count: the first N, as with NVML
        ([], "all", False, []),
        ([], None, False, []),
    ],
)
def test_gpu_ids(gpus: list[GpuInfo], select: str | None, cpu: bool, ids: list[int]) -> None:
    assert preflight.gpu_ids(gpus, select, cpu=cpu) == ids


# ----------------------------------------------------------------------------------------------- memory


def test_check_fit_without_estimate_warns(cfg: dict[str, Any]) -> None:
    said: list[str] = []
    cfg["model_name_or_path"] = "org/unknown-model"
    assert preflight.check_fit(cfg, A100, fit=False, force=False, say=said.append) is None
    assert len(said) == 1 and said[0].startswith(
        "warning: no memory estimate (unknown model `org/unknown-model`"
    )


def test_check_fit_quiet_when_it_fits_or_on_cpu(cfg: dict[str, Any]) -> None:
    said: list[str] = []
    on_gpus = preflight.check_fit(cfg, A100, fit=False, force=False, say=said.append)
    on_cpu = preflight.check_fit(cfg, [], fit=False, force=False, say=said.append)
    assert on_gpus is not None and on_cpu is not None
    assert 0 < on_gpus.total_gib < 60 and on_cpu.total_gib > 0
    assert said == []


def test_check_fit_refuses_then_forces(cfg: dict[str, Any]) -> None:
    tiny = [GpuInfo(0, "RTX", 24 * GIB, GIB // 100), GpuInfo(1, "RTX", 24 * GIB, GIB // 50)]
    said: list[str] = []
    with pytest.raises(
        LfTunerError, match=r"^estimate: the run does not fit the free GPU memory; rerun with --fit"
    ):
        preflight.check_fit(cfg, tiny, fit=True, force=False, say=said.append)  # --fit, but nothing fits
    assert said[0].startswith("estimated peak ") and said[0].endswith(" GiB per GPU")
    assert said[1].startswith("GPU 0 (RTX, 0.0 GiB free): does NOT fit: short by ")
    assert said[2].startswith("GPU 1 (RTX, 0.0 GiB free): does NOT fit: short by ")
    assert said[3:] == [
        "no change lf-tuner knows makes it fit: use more GPUs with ZeRO-3, or a smaller model"
    ]
    said.clear()
    forced = preflight.check_fit(cfg, tiny, fit=False, force=True, say=said.append)
    assert forced is not None and said[-1] == "--force: running anyway"


def test_check_fit_applies_the_first_change(cfg: dict[str, Any]) -> None:
    cfg.update(cutoff_len=8192, per_device_train_batch_size=64)
    free = preflight.check_fit(dict(cfg), [], fit=False, force=False, say=pytest.fail)
    assert free is not None
    gpu = [GpuInfo(0, "RTX", 24 * GIB, int(free.total_bytes * 0.9))]  # 10% short
    said: list[str] = []
    after = preflight.check_fit(cfg, gpu, fit=True, force=False, say=said.append)
    assert after is not None and after.total_bytes <= gpu[0].free_bytes
    assert "changes that fit:" in said
    first = said[said.index("changes that fit:") + 1]
    applied = said[-1]
    assert applied.startswith("--fit: applied `") and first.startswith(
        f"  - {applied[len('--fit: applied `') : -1]} -> "
    )
    keys = first.rsplit("(", 1)[1].rstrip(")")  # "key: value, ..." of the change, now in the config
    for item in keys.split(", "):
        key, value = item.split(": ", 1)
        assert str(cfg[key]) == value


# ------------------------------------------------------------------------------------------- output_dir


def test_prepare_output_dir_needs_one(cfg: dict[str, Any]) -> None:
    del cfg["output_dir"]
    with pytest.raises(
        LfTunerError, match=r"^output_dir: missing; set it in the config or pass --set output_dir=DIR$"
    ):
        preflight.prepare_output_dir(cfg, None, resume=False, overwrite=False, rank=0)


@pytest.mark.parametrize(
    ("content", "resume", "overwrite", "rank", "result"),
    [
        (None, False, False, 0, True),  # missing: a fresh run, retries start clean
        ([], False, False, 0, True),
        (["train.yaml"], False, False, 0, True),  # the config passed in does not count
        (["adapter.safetensors"], False, False, 0, "is not empty; pass --resume to continue"),
        (["adapter.safetensors"], False, True, 0, True),
        (["adapter.safetensors"], True, False, 0, "has no checkpoint-\\* to resume from; drop --resume"),
        (["checkpoint-2/"], True, False, 0, False),
        (["checkpoint-2/"], False, False, 0, "is not empty"),
        (["adapter.safetensors"], False, False, 1, True),  # other nodes do not look (shared directories)
        (None, True, False, 1, False),
    ],
)
def test_prepare_output_dir_policy(
    cfg: dict[str, Any],
    tmp_path: Path,
    content: list[str] | None,
    resume: bool,
    overwrite: bool,
    rank: int,
    result: bool | str,
) -> None:
    out = tmp_path / "out"
    if content is not None:
        out.mkdir()
    for name in content or []:
        (out / name).mkdir() if name.endswith("/") else (out / name).write_text("x")
    config = out / "train.yaml"
    if isinstance(result, str):
        with pytest.raises(LfTunerError, match=f"^output_dir: {out} {result}"):
            preflight.prepare_output_dir(cfg, config, resume=resume, overwrite=overwrite, rank=rank)
        assert "overwrite_output_dir" not in cfg
        return
    assert preflight.prepare_output_dir(cfg, config, resume=resume, overwrite=overwrite, rank=rank) == out
    assert cfg["overwrite_output_dir"] is result
    assert cfg["include_num_input_tokens_seen"] is True and cfg["logging_nan_inf_filter"] is False


def test_prepare_output_dir_keeps_logging_keys_the_config_sets(cfg: dict[str, Any], tmp_path: Path) -> None:
    cfg.update(output_dir="~/runs/a", include_num_input_tokens_seen=False, logging_nan_inf_filter=True)
    assert (
        preflight.prepare_output_dir(cfg, None, resume=False, overwrite=True, rank=1)
        == Path.home() / "runs/a"
    )
    assert cfg["include_num_input_tokens_seen"] is False and cfg["logging_nan_inf_filter"] is True


# --------------------------------------------------------------------------------------------- problems


def test_check_config_lists_every_problem(cfg: dict[str, Any], tmp_path: Path) -> None:
    preflight.check_config(cfg)
    (tmp_path / "data" / "tiny.json").unlink()
    with pytest.raises(LfTunerError) as info:
        preflight.check_config({**cfg, "dataset": "tiny,tiyn", "learning_rat": 1})
    lines = info.value.message.splitlines()
    assert lines[0] == "config has 3 problems:"
    assert lines[1].startswith("learning_rat: unknown LLaMA-Factory")
    assert lines[2:] == [
        f"dataset: `tiny` points at {tmp_path}/data/tiny.json, which does not exist",
        f"dataset: `tiyn` is not in {tmp_path}/data/dataset_info.json; did you mean `tiny`?",
    ]
    with pytest.raises(LfTunerError, match=r"^config has 1 problem:\ndataset: `tiny` points at"):
        preflight.check_config(cfg)


# ------------------------------------------------------------------------------------------------- plan


def test_plan_on_the_cpu(cfg: dict[str, Any], tmp_path: Path) -> None:
    cfg["use_cpu"] = True
    out = tmp_path / "out"
    plan = preflight.make_plan(cfg, out, [], None, cli="llamafactory-cli", select=None)
    kept = str(out / "lf-tuner-config.yaml")
    assert plan.as_dict() == {
        "config_path": kept,
        "argv": ["llamafactory-cli", "train", kept],
        "env": {"CUDA_VISIBLE_DEVICES": "", "RECORD_VRAM": "1"},
        "gpus": [],
        "estimate": None,
        "output_dir": str(out),
    }
    assert plan.describe() == [
        "gpus:     none (CPU)",
        "estimate: unavailable",
        f"config:   {kept}",
        "env:      CUDA_VISIBLE_DEVICES= RECORD_VRAM=1",
        f"argv:     llamafactory-cli train {kept}",
    ]
    assert not out.exists()  # planning writes nothing


def test_plan_stages_a_path_with_spaces_for_torchrun(cfg: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "my runs" / "a"
    estimate = Estimate(setup_from_config(cfg), Peak({"weights": int(12.345 * GIB)}, "step", {}), 0)
    plan = preflight.make_plan(
        cfg, out, A100, estimate, cli="lf", select=None, node_rank=1, nnodes=2, master_addr="h"
    )
    kept = out / "lf-tuner-config.node1.yaml"
    assert plan.config_path == kept and " " not in str(plan.staged_path)
    assert plan.command.argv == ["lf", "train", str(plan.staged_path)]
    assert plan.command.env["CUDA_VISIBLE_DEVICES"] == "0,2" and plan.command.env["NODE_RANK"] == "1"
    assert plan.describe()[:3] == [
        "gpus:     0 NVIDIA A100 (79.0 GiB free), 2 NVIDIA A100 (60.0 GiB free)",
        "estimate: 12.35 GiB per GPU",
        f"config:   {kept} (staged as {plan.staged_path})",
    ]
    assert plan.as_dict()["gpus"][1] == {
        "index": 2,
        "name": "NVIDIA A100",
        "total_gib": 80.0,
        "free_gib": 60.0,
    }
    plan.write_config({**cfg, "max_steps": 3})
    assert yaml.safe_load(kept.read_text())["max_steps"] == 3
    assert plan.staged_path.read_text() == kept.read_text()


def test_plan_one_gpu_needs_no_staging(cfg: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "my runs"
    plan = preflight.make_plan(cfg, out, A100[:1], None, cli="lf", select=None)
    assert plan.staged_path == plan.config_path == out / "lf-tuner-config.yaml"  # no torchrun, no splitting
    assert "FORCE_TORCHRUN" not in plan.command.env


def test_plan_refuses_what_the_launcher_cannot_do(cfg: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(LfTunerError, match=r"^master_addr: several nodes need --master-addr"):
        preflight.make_plan(cfg, tmp_path, A100, None, cli="lf", select=None, nnodes=2)


def test_write_slurm(cfg: dict[str, Any], tmp_path: Path) -> None:
    script, kept = tmp_path / "job.sh", tmp_path / "out" / "lf-tuner-config.yaml"
    options: dict[str, Any] = dict(select="8", gpus=[], nnodes=2, master_port=None)
    preflight.write_slurm(script, cfg, kept, force=False, **options)
    assert "#SBATCH --nodes=2\n#SBATCH --ntasks-per-node=1\n#SBATCH --gpus-per-node=8\n" in script.read_text()
    assert f"export LF_TUNER_CONFIG={kept}\n" in script.read_text()
    assert yaml.safe_load(kept.read_text()) == cfg
    with pytest.raises(LfTunerError, match=r"^slurm_script: .*job.sh exists; pass --force to replace it$"):
        preflight.write_slurm(script, cfg, kept, force=False, **options)
    preflight.write_slurm(script, cfg, kept, force=True, **{**options, "select": "0,1", "gpus": A100})
    assert "#SBATCH --gpus-per-node=2\n" in script.read_text()


# ---------------------------------------------------------------------------------------------- records


def _attempt(status: str, code: int = 0, **result: Any) -> runner.Attempt:
    base: dict[str, Any] = dict(
        returncode=code, oom=False, interrupted_by=None, diverged=None, tail=[], runtime_s=1.5, trainer_log=[]
    )
    return runner.Attempt(
        cfg={"per_device_train_batch_size": 1},
        result=ChildResult(**{**base, **result}),
        status=status,
        exit_code=code,
    )


@pytest.mark.parametrize(
    ("attempt", "reason"),
    [
        (_attempt("completed"), None),
        (_attempt("interrupted", 143, interrupted_by=15), "stopped by SIGTERM (signal 15)"),
        (_attempt("interrupted", 129, interrupted_by=1), "stopped by SIGHUP (signal 1)"),
        (
            _attempt("diverged", 1, diverged="loss nan at step 2"),
            "loss nan at step 2; lower learning_rate or check the data",
        ),
        (
            _attempt("oom", 1, oom=True),
            "out of GPU memory; try --retry-oom 2, --fit, or a smaller cutoff_len / batch",
        ),
        (_attempt("failed", 3), "llamafactory-cli exited with 3"),
    ],
)
def test_failure_reason(attempt: runner.Attempt, reason: str | None) -> None:
    assert runner.failure_reason(attempt) == reason


def test_record_and_config_paths_per_node(tmp_path: Path) -> None:
    assert runs.config_path(tmp_path) == tmp_path / "lf-tuner-config.yaml"
    assert runs.record_path(tmp_path) == tmp_path / "lf-tuner-run.json"
    assert runs.config_path(tmp_path, 2) == tmp_path / "lf-tuner-config.node2.yaml"
    assert runs.record_path(tmp_path, 2) == tmp_path / "lf-tuner-run.node2.json"


def test_build_and_save_record(cfg: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "trainer_state.json").write_text(json.dumps({"log_history": [{"step": 2, "loss": 2.25}]}))
    estimate = Estimate(setup_from_config(cfg), Peak({"weights": 20 * GIB}, "step", {}), 0)  # 20 GiB
    plan = preflight.make_plan(cfg, out, A100[:1], estimate, cli="lf", select=None)
    log = [{"current_steps": 2, "total_steps": 2, "loss": 2.25, "vram_reserved": 18.5}]
    attempts = [_attempt("oom", 1, oom=True), _attempt("completed", trainer_log=log)]
    changes = [("micro-batch 2 -> 1", {"per_device_train_batch_size": 1})]
    record = runner.build_record(
        plan, attempts, changes, log_path=out / "lf-tuner.log", started_at="2026-01-02T03:04:05+00:00"
    )
    assert (record.status, record.exit_code, record.reason) == ("completed", 0, None)
    assert record.config_hash == runs.config_hash(
        {"per_device_train_batch_size": 1}
    )  # the last attempt's config
    assert record.model == cfg["model_name_or_path"] and record.argv == plan.command.argv
    # without NVML the measured peak is torch's reserved memory plus the CUDA context it does not count
    assert (record.estimated_peak_gib, record.measured_peak_gib, record.final_train_loss) == (
        20.0,
        round(18.5 + 758 / 1024, 3),
        2.25,
    )
    assert record.measured_source == "torch reserved + CUDA context"
    assert (record.runtime_s, record.steps, record.total_steps) == (3.0, 2, 2)
    assert [(r.attempt, r.overrides) for r in record.retries] == [(2, {"per_device_train_batch_size": 1})]
    assert record.gpus[0].model_dump() == {
        "index": 0,
        "name": "NVIDIA A100",
        "total_gib": 80.0,
        "free_gib": 79.0,
    }
    runs.save_record(record, out / "lf-tuner-run.json")
    assert runs.read_record(out / "lf-tuner-run.json") == record
    assert [(r["status"], r["record_path"]) for r in runs.list_runs()] == [
        ("completed", str(out / "lf-tuner-run.json"))
    ]


# --------------------------------------------------------------------------------------------- progress


@pytest.mark.parametrize(
    ("entry", "text"),
    [
        ({"current_steps": 2, "loss": 2.25, "lr": 1e-4}, "loss 2.2500  lr 1.00e-04"),
        (
            {"eval_loss": 1, "remaining_time": "0:01:02", "throughput": 511.6},
            "eval_loss 1.0000  eta 0:01:02  512 tok/s",
        ),
        ({"loss": "nan", "remaining_time": ""}, ""),
    ],
)
def test_describe_entry(entry: dict[str, Any], text: str) -> None:
    assert describe_entry(entry) == text


def test_progress_view_writes_lines_when_not_a_terminal() -> None:
    stream = io.StringIO()
    with ProgressView(stream) as view:
        view.update({"current_steps": 1, "total_steps": 2, "loss": 2.5})
        view.update({"loss": 2.25})
    assert stream.getvalue() == "step 1/2  loss 2.5000\nstep ?/?  loss 2.2500\n"


def test_progress_view_draws_a_bar_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    with ProgressView(stream) as view:
        view.update({"current_steps": 1, "total_steps": 2, "loss": 2.5})
    assert view.bar is not None and view.bar.tasks[0].completed == 1 and view.bar.tasks[0].total == 2
    assert "loss 2.5000" in stream.getvalue()


def test_run_with_a_stand_in_child_writes_staged_config_and_record(
    cfg: dict[str, Any], tmp_path: Path
) -> None:
    """The whole core path without click: plan, stage the config, run a child, record it."""
    out = tmp_path / "out"
    cfg["use_cpu"] = True
    child = tmp_path / "child.py"
    child.write_text(
        "import json, sys, yaml\n"
        "cfg = yaml.safe_load(open(sys.argv[2]))\n"
        "open(cfg['output_dir'] + '/trainer_log.jsonl', 'w').write(json.dumps({'current_steps': 1, 'loss': 1.5}))\n"
    )
    plan = preflight.make_plan(cfg, out, [], None, cli=sys.executable, select=None)
    plan = launch_with_python(plan, child)
    plan.write_config(cfg)
    attempts, changes = runner.run_with_retries(
        cfg, plan.command, write_config=plan.write_config, output_dir=out, log_path=out / "log"
    )
    record = runner.build_record(plan, attempts, changes, log_path=out / "log", started_at="t")
    assert (record.status, record.final_train_loss, record.steps, record.estimated_peak_gib) == (
        "completed",
        1.5,
        1,
        None,
    )


def launch_with_python(plan: preflight.Plan, script: Path) -> preflight.Plan:
    """The plan with `python script` in place of llamafactory-cli (argv: python script train CONFIG)."""
    import dataclasses

    argv = [plan.command.argv[0], str(script), *plan.command.argv[1:]]
    return dataclasses.replace(plan, command=Command(argv=argv, env=plan.command.env))
