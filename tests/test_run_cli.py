"""`lf-tuner run` through CliRunner with a stand-in llamafactory-cli: plans, refusals, OOM retry, NaN stop, records."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from lf_tuner.cli import cli
from lf_tuner.train import GpuInfo
from tests.procs import gone, signal_stub_run
from tests.tiny import write_tiny_project

STUB = Path(__file__).parent / "stubs" / "llamafactory_cli_stub.py"
GIB = 2**30


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A model directory (config.json + tokenizer, no weights), a registered 16-row dataset and a CPU config."""
    cfg = {
        **write_tiny_project(tmp_path, tokenizer=True),
        "gradient_accumulation_steps": 2,
        "max_steps": 3,
        "logging_steps": 1,
        "learning_rate": 1.0e-4,
        "use_cpu": True,
        "bf16": False,
        "report_to": "none",
    }
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def stub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Puts the stand-in llamafactory-cli first on PATH; returns the file its calls are logged to."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "llamafactory-cli"
    exe.write_text(f"#!{sys.executable}\n" + STUB.read_text())
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("LF_STUB_CALLS", str(calls))
    return calls


def fake_gpus(monkeypatch: pytest.MonkeyPatch, gpus: list[GpuInfo]) -> None:
    import lf_tuner.train.gpus

    def detect(select: str | None = None) -> list[GpuInfo]:
        return lf_tuner.train.gpus.select_gpus(gpus, select) if gpus else []

    monkeypatch.setattr(lf_tuner.train.gpus, "detect_gpus", detect)


def invoke(*args: str) -> object:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def calls(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_dry_run_json_on_cpu(project: Path, stub: Path) -> None:
    result = invoke("run", "train.yaml", "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    plan = json.loads(result.stdout)
    config_path = str(project / "out" / "lf-tuner-config.yaml")
    assert plan["argv"] == [str(project / "bin" / "llamafactory-cli"), "train", config_path]
    assert plan["env"] == {"CUDA_VISIBLE_DEVICES": "", "RECORD_VRAM": "1"}
    assert plan["gpus"] == []
    assert plan["config_path"] == config_path
    assert plan["estimate"]["total_gib"] > 0
    assert not (project / "out").exists()  # a dry run writes nothing
    assert not stub.exists()  # and starts nothing


def test_dry_run_two_gpus_without_llamafactory(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(project))  # no llamafactory-cli: planning still works
    cfg = yaml.safe_load((project / "train.yaml").read_text())
    cfg.pop("use_cpu")
    (project / "gpu.yaml").write_text(yaml.safe_dump(cfg))
    fake_gpus(
        monkeypatch,
        [
            GpuInfo(0, "NVIDIA A100", 80 * GIB, 79 * GIB),
            GpuInfo(1, "NVIDIA A100", 80 * GIB, 60 * GIB),
            GpuInfo(2, "NVIDIA A100", 80 * GIB, 80 * GIB),
        ],
    )
    result = invoke("run", "gpu.yaml", "--gpus", "0,1", "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["argv"] == ["llamafactory-cli", "train", str(project / "out" / "lf-tuner-config.yaml")]
    assert plan["env"] == {
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "CUDA_VISIBLE_DEVICES": "0,1",
        "FORCE_TORCHRUN": "1",
        "NPROC_PER_NODE": "2",
        "RECORD_VRAM": "1",
    }
    assert [g["index"] for g in plan["gpus"]] == [0, 1]
    assert plan["gpus"][1] == {"index": 1, "name": "NVIDIA A100", "total_gib": 80.0, "free_gib": 60.0}


@pytest.mark.parametrize(
    ("gpus", "visible", "torchrun"),
    [("0", "0", False), ("1,", "1", False), ("0,1", "0,1", True), ("2", "0,1", True)],
)
def test_dry_run_without_nvml_plans_the_gpus_named(
    project: Path, monkeypatch: pytest.MonkeyPatch, gpus: str, visible: str, torchrun: bool
) -> None:
    fake_gpus(monkeypatch, [])
    result = invoke("run", "train.yaml", "--set", "use_cpu=false", "--gpus", gpus, "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    env = json.loads(result.stdout)["env"]
    assert env["CUDA_VISIBLE_DEVICES"] == visible
    assert ("FORCE_TORCHRUN" in env) is torchrun
    assert result.stderr == f"note: NVML sees no GPU here; planning for GPU {visible} from --gpus {gpus}\n"


def test_dry_run_with_an_accelerate_config_launches_accelerate(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(project))  # planning only
    cfg = yaml.safe_load((project / "train.yaml").read_text())
    cfg.pop("use_cpu")
    (project / "gpu.yaml").write_text(yaml.safe_dump(cfg))
    accelerate = project / "fsdp.yaml"
    accelerate.write_text(
        "distributed_type: FSDP\nnum_processes: 2\nnum_machines: 1\nmixed_precision: bf16\n"
        "fsdp_config:\n  fsdp_version: 2\n  fsdp_reshard_after_forward: true\n"
    )
    fake_gpus(
        monkeypatch,
        [GpuInfo(0, "NVIDIA A100", 80 * GIB, 79 * GIB), GpuInfo(1, "NVIDIA A100", 80 * GIB, 79 * GIB)],
    )
    result = invoke(
        "run", "gpu.yaml", "--gpus", "0,1", "--accelerate-config", "fsdp.yaml", "--dry-run", "--json"
    )
    assert result.exit_code == 0, result.stderr
    plan = json.loads(result.stdout)
    config_path = str(project / "out" / "lf-tuner-config.yaml")
    assert plan["argv"] == [
        "accelerate", "launch", "--config_file", str(accelerate), "--num_processes", "2",
        "-m", "llamafactory.launcher", config_path,
    ]  # fmt: skip
    assert "FORCE_TORCHRUN" not in plan["env"]
    assert plan["estimate"]["layout"] == "FSDP2 full-shard"
    text = invoke("run", "gpu.yaml", "--gpus", "0,1", "--accelerate-config", "fsdp.yaml", "--dry-run")
    assert "argv:     accelerate launch --config_file" in text.stdout


def test_dry_run_stages_a_config_path_with_spaces_for_torchrun(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = yaml.safe_load((project / "train.yaml").read_text())
    cfg.pop("use_cpu")
    cfg["output_dir"] = str(project / "my runs" / "a")
    (project / "gpu.yaml").write_text(yaml.safe_dump(cfg))
    fake_gpus(monkeypatch, [GpuInfo(0, "GPU", 24 * GIB, 24 * GIB), GpuInfo(1, "GPU", 24 * GIB, 24 * GIB)])
    plan = json.loads(invoke("run", "gpu.yaml", "--dry-run", "--json").stdout)
    assert plan["config_path"] == str(project / "my runs" / "a" / "lf-tuner-config.yaml")
    staged = plan["argv"][2]
    assert " " not in staged and staged.endswith("config.yaml")


def test_no_gpu_is_an_error(project: Path, stub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpus(monkeypatch, [])
    cfg = yaml.safe_load((project / "train.yaml").read_text())
    cfg.pop("use_cpu")
    (project / "gpu.yaml").write_text(yaml.safe_dump(cfg))
    result = invoke("run", "gpu.yaml")
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: gpus: no GPU found (NVML sees none; check `nvidia-smi` and CUDA_VISIBLE_DEVICES); train on the CPU "
        "with --cpu, or look at the plan with --dry-run\n"
    )
    assert not stub.exists()


def test_llamafactory_missing_is_an_error(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(project))
    result = invoke("run", "train.yaml")
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: llamafactory-cli: not found on PATH; install it with `pip install 'lf-tuner[train]'` "
        "(llamafactory==0.9.5) or pass --llamafactory-cli PATH\n"
    )


def test_missing_dataset_is_an_error(project: Path, stub: Path) -> None:
    (project / "data" / "tiny.json").unlink()
    result = invoke("run", "train.yaml", "--set", "dataset=tiny,tiyn")
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: config has 2 problems:\n"
        f"dataset: `tiny` points at {project}/data/tiny.json, which does not exist\n"
        f"dataset: `tiyn` is not in {project}/data/dataset_info.json; did you mean `tiny`?\n"
    )
    assert not stub.exists()


def test_every_config_problem_is_reported_at_once(project: Path, stub: Path) -> None:
    result = invoke("run", "train.yaml", "--dry-run", "--set", "learning_rat=1e-4", "--set", "~output_dir")
    assert result.exit_code == 1
    assert "learning_rat: unknown LLaMA-Factory 0.9.5 key; did you mean `learning_rate`?" in result.stderr
    assert "output_dir: missing" in result.stderr
    assert result.stderr.startswith("Error: config has 2 problems:")


def test_non_empty_output_dir_needs_resume_or_overwrite(project: Path, stub: Path) -> None:
    (project / "out").mkdir()
    (project / "out" / "adapter_model.safetensors").write_text("weights")
    result = invoke("run", "train.yaml")
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: output_dir: {project}/out is not empty; pass --resume to continue from its last checkpoint or "
        "--overwrite to start over\n"
    )
    result = invoke("run", "train.yaml", "--resume")
    assert result.exit_code == 1
    assert (
        result.stderr
        == f"Error: output_dir: {project}/out has no checkpoint-* to resume from; drop --resume\n"
    )
    assert invoke("run", "train.yaml", "--resume", "--overwrite").exit_code == 2
    assert (project / "out" / "adapter_model.safetensors").read_text() == "weights"
    assert not stub.exists()

    (project / "out" / "checkpoint-2").mkdir()
    assert invoke("run", "train.yaml", "--resume").exit_code == 0
    assert calls(stub)[-1]["config"]["overwrite_output_dir"] is False
    result = invoke("run", "train.yaml", "--overwrite")
    assert result.exit_code == 0, result.stderr
    assert calls(stub)[-1]["config"]["overwrite_output_dir"] is True


def test_completed_run_writes_record_and_index(project: Path, stub: Path) -> None:
    result = invoke("run", "train.yaml", "--json")
    assert result.exit_code == 0, result.stderr
    record = json.loads((project / "out" / "lf-tuner-run.json").read_text())
    assert json.loads(result.stdout) == record
    assert record["status"] == "completed" and record["exit_code"] == 0
    assert record["final_train_loss"] == 2.25
    assert record["steps"] == 3 - 1 and record["total_steps"] == 2
    assert record["env"] == {"CUDA_VISIBLE_DEVICES": "", "RECORD_VRAM": "1"}
    assert record["measured_peak_gib"] is None  # CPU
    assert record["retries"] == []
    staged = yaml.safe_load((project / "out" / "lf-tuner-config.yaml").read_text())
    assert staged["logging_nan_inf_filter"] is False and staged["include_num_input_tokens_seen"] is True
    assert calls(stub)[0]["env"] == {"CUDA_VISIBLE_DEVICES": "", "RECORD_VRAM": "1", "FORCE_TORCHRUN": None}
    assert "step 2/2  loss 2.2500  lr 1.00e-04" in result.stderr
    assert "loading model" in (project / "out" / "lf-tuner.log").read_text()
    listed = json.loads(invoke("runs", "--json").stdout)
    assert [(r["id"], r["status"], r["final_train_loss"]) for r in listed] == [(1, "completed", 2.25)]


@pytest.mark.parametrize("home", ["a-file", "corrupt-index"])
def test_a_finished_run_succeeds_when_the_index_cannot_be_written(
    project: Path, stub: Path, monkeypatch: pytest.MonkeyPatch, home: str
) -> None:
    if home == "a-file":
        (project / "homefile").write_text("not a folder\n")
        monkeypatch.setenv("LF_TUNER_HOME", str(project / "homefile"))
        problem = f"runs index: {project}/homefile is a file, not a folder; point LF_TUNER_HOME at a folder"
    else:
        (project / "home").mkdir()
        (project / "home" / "runs.sqlite").write_text("not a database\n")
        monkeypatch.setenv("LF_TUNER_HOME", str(project / "home"))
        problem = (
            f"runs index: {project}/home/runs.sqlite is not a usable runs index (file is not a database)"
        )
    result = invoke("run", "train.yaml", "--json")
    assert result.exit_code == 0, result.stderr
    record = json.loads((project / "out" / "lf-tuner-run.json").read_text())
    assert record["status"] == "completed" and json.loads(result.stdout) == record
    assert f"warning: the run is not in `lf-tuner runs`: {problem}" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("completed in ")
    listed = invoke("runs")
    assert listed.exit_code == 1 and listed.stderr.startswith(f"Error: {problem}")


def test_oom_retry_halves_batch_then_succeeds(
    project: Path, stub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LF_STUB_MODE", "oom")
    result = invoke("run", "train.yaml", "--retry-oom", "3")
    assert result.exit_code == 0, result.stderr
    seen = [
        (c["config"]["per_device_train_batch_size"], c["config"]["gradient_accumulation_steps"])
        for c in calls(stub)
    ]
    assert seen == [(4, 2), (2, 4), (1, 8)]
    assert (
        "out of memory; retry 1: per_device_train_batch_size 4 -> 2, gradient_accumulation_steps 2 -> 4 "
        "(effective batch 8 -> 8)" in result.stderr
    )
    record = json.loads((project / "out" / "lf-tuner-run.json").read_text())
    assert record["status"] == "completed"
    assert [(r["attempt"], r["overrides"]) for r in record["retries"]] == [
        (2, {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 4}),
        (3, {"per_device_train_batch_size": 1, "gradient_accumulation_steps": 8}),
    ]
    final = yaml.safe_load((project / "out" / "lf-tuner-config.yaml").read_text())
    assert (final["per_device_train_batch_size"], final["gradient_accumulation_steps"]) == (1, 8)


def test_oom_without_retries_left(project: Path, stub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LF_STUB_MODE", "oom")
    result = invoke("run", "train.yaml", "--retry-oom", "1")
    assert result.exit_code == 1
    assert len(calls(stub)) == 2
    record = json.loads((project / "out" / "lf-tuner-run.json").read_text())
    assert record["status"] == "oom" and record["exit_code"] == 1 and len(record["retries"]) == 1
    assert result.stderr.splitlines()[-1].startswith("Error: oom: out of GPU memory; try --retry-oom 2")


def test_nan_loss_stops_the_run(project: Path, stub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LF_STUB_MODE", "nan")
    result = invoke("run", "train.yaml")
    record = json.loads((project / "out" / "lf-tuner-run.json").read_text())
    assert record["status"] == "diverged"
    assert record["reason"] == "loss nan at step 2; lower learning_rate or check the data"
    assert result.exit_code == 128 + signal.SIGTERM  # stopped by the watch (left alone it would exit 0)
    pids = [int(p) for p in (project / "out" / "stub.pids").read_text().split()]
    assert all(gone(p) for p in pids)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT])
def test_a_stop_signal_stops_the_whole_tree_and_is_recorded(
    project: Path, stub: Path, sig: signal.Signals
) -> None:
    """The stand-in has a grandchild in its group and one that called setsid and ignores SIGTERM, SIGINT and
    SIGHUP; lf-tuner handles the signals from before the child starts (tests/procs.py waits on its pids file)."""
    run = signal_stub_run(project, os.environ, sig)
    assert len(run.pids) == 3 and run.left_group, run.stderr  # the third left the group
    assert run.returncode == 128 + sig, run.stderr
    assert "Traceback" not in run.stderr.replace("KeyboardInterrupt", "")  # the stand-in's own is in the log
    record = run.record
    assert record["status"] == "interrupted" and record["exit_code"] == 128 + sig
    assert record["reason"] == f"stopped by {sig.name} (signal {int(sig)})"
    assert run.left == [], "a process of the run outlived it"
    listed = json.loads(invoke("runs", "--json").stdout)
    assert [(r["status"], r["exit_code"]) for r in listed] == [("interrupted", 128 + sig)]
    assert run.stderr.splitlines()[-1].startswith(f"Error: interrupted: stopped by {sig.name}")


def test_a_signal_before_the_child_starts_starts_nothing(project: Path, stub: Path) -> None:
    from lf_tuner.train import Command, StopSignals, run_child

    with StopSignals() as signals:
        os.kill(os.getpid(), signal.SIGHUP)  # handled: pytest goes on
        result = run_child(
            Command([str(project / "bin" / "llamafactory-cli"), "train", "train.yaml"], {}),
            output_dir=project / "out",
            log_path=project / "out" / "lf-tuner.log",
            signals=signals,
        )
    assert (result.interrupted_by, result.returncode) == (signal.SIGHUP, -signal.SIGHUP)
    assert not stub.exists()  # the child never started


def test_retry_oom_catches_the_cuda_error_form(
    project: Path, stub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LF_STUB_MODE", "oom")
    monkeypatch.setenv(
        "LF_STUB_OOM_MESSAGE",
        "RuntimeError: CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported",
    )
    result = invoke("run", "train.yaml", "--retry-oom", "2")
    assert result.exit_code == 0, result.stderr
    assert "out of memory; retry 2: per_device_train_batch_size 2 -> 1" in result.stderr
    assert [c["config"]["per_device_train_batch_size"] for c in calls(stub)] == [4, 2, 1]


def test_yes_is_accepted_but_deprecated(project: Path, stub: Path) -> None:
    result = invoke("run", "train.yaml", "--yes")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.startswith(
        "warning: --yes is deprecated and does nothing (run never asks); drop it\n"
    )
    assert "--yes" not in invoke("run", "--help").stdout


def test_runs_table_and_calibration(project: Path) -> None:
    from lf_tuner.train import GpuRecord, RunRecord, add_to_index

    def record(**kw: object) -> RunRecord:
        base = dict(
            status="completed",
            exit_code=0,
            config_hash="abc",
            config_path="/r/c.yaml",
            output_dir="/r/out",
            model="/models/qwen2.5-7b",
            argv=["llamafactory-cli"],
            env={},
            runtime_s=61.0,
            started_at="2026-01-02T03:04:05+00:00",
            ended_at="2026-01-02T03:05:06+00:00",
            log_path="/r/l",
            gpus=[GpuRecord(index=0, name="RTX 4090", total_gib=23.6, free_gib=23.0)],
        )
        base.update(kw)
        return RunRecord(**base)  # type: ignore[arg-type]

    add_to_index(
        record(estimated_peak_gib=20.0, measured_peak_gib=18.5, final_train_loss=1.25), Path("/r/a.json")
    )
    add_to_index(record(status="oom", exit_code=1, estimated_peak_gib=22.0), Path("/r/b.json"))
    add_to_index(record(estimated_peak_gib=10.0, measured_peak_gib=12.5, gpus=[]), Path("/r/c.json"))
    result = invoke("runs")
    assert result.exit_code == 0
    assert [line.rstrip() for line in result.stdout.splitlines()] == [
        "id   started       status      model        gpus       GiB est/peak     loss   time   output_dir",
        "─" * 96,
        " 3   01-02 03:04   completed   qwen2.5-7b   cpu         10.00/12.50        -    61s   /r/out",
        " 2   01-02 03:04   oom         qwen2.5-7b   RTX 4090        22.00/-        -    61s   /r/out",
        " 1   01-02 03:04   completed   qwen2.5-7b   RTX 4090    20.00/18.50   1.2500    61s   /r/out",
    ]
    result = invoke("runs", "--calibration")
    assert [line.rstrip() for line in result.stdout.splitlines()] == [
        "id   model        gpus       est GiB   peak GiB    error",
        "─" * 56,
        " 3   qwen2.5-7b   cpu          10.00      12.50   -20.0%",
        " 1   qwen2.5-7b   RTX 4090     20.00      18.50    +8.1%",
        "2 run(s): mean |error| 14.1%; 1 within ±10%; 1 estimated at or above the measured peak",
    ]
    assert [r["id"] for r in json.loads(invoke("runs", "--status", "oom", "--json").stdout)] == [2]
