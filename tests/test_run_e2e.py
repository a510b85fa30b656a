"""The real thing: `lf-tuner run` starts the real `llamafactory-cli train` on a tiny random model, on the CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from lf_tuner.cli import cli
from tests.conftest import requires_llamafactory
from tests.procs import proc_stats
from tests.tiny import build_tiny_model, write_alpaca

pytestmark = [pytest.mark.slow, pytest.mark.llamafactory, requires_llamafactory]
BIN = Path(sys.executable).parent


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    if not (BIN / "llamafactory-cli").exists():
        pytest.skip(f"no llamafactory-cli next to {sys.executable}")
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ['PATH']}")
    build_tiny_model(tmp_path / "model")
    data = tmp_path / "data"
    data.mkdir()
    write_alpaca(data / "alpaca16.json", 16)
    (data / "dataset_info.json").write_text(json.dumps({"alpaca16": {"file_name": "alpaca16.json"}}))
    cfg = {
        "model_name_or_path": str(tmp_path / "model"),
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "lora",
        "lora_target": "all",
        "dataset": "alpaca16",
        "dataset_dir": str(data),
        "template": "qwen",
        "cutoff_len": 64,
        "output_dir": str(tmp_path / "out"),
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 1,
        "max_steps": 3,
        "logging_steps": 1,
        "save_steps": 1000,
        "learning_rate": 1.0e-4,
        "bf16": True,
        "report_to": "none",
        "preprocessing_num_workers": 1,
        "dataloader_num_workers": 0,
    }
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_real_run_on_cpu(project: Path) -> None:
    result = CliRunner().invoke(cli, ["run", "train.yaml", "--cpu"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr + (project / "out" / "lf-tuner.log").read_text()[-3000:]
    out = project / "out"
    assert (out / "adapter_model.safetensors").stat().st_size > 0
    assert json.loads((out / "adapter_config.json").read_text())["peft_type"] == "LORA"
    record = json.loads((out / "lf-tuner-run.json").read_text())
    state = json.loads((out / "trainer_state.json").read_text())
    losses = [e["loss"] for e in state["log_history"] if "loss" in e]
    assert len(losses) == 3
    assert record["status"] == "completed" and record["exit_code"] == 0
    assert record["final_train_loss"] == losses[-1]
    assert record["mean_train_loss"] == state["log_history"][-1]["train_loss"]
    assert record["steps"] == 3 and record["total_steps"] == 3
    assert record["throughput_tokens_per_s"] > 0
    assert record["gpus"] == [] and record["measured_peak_gib"] is None
    assert record["env"] == {"CUDA_VISIBLE_DEVICES": "", "RECORD_VRAM": "1"}
    staged = yaml.safe_load((out / "lf-tuner-config.yaml").read_text())
    assert staged["use_cpu"] is True and staged["bf16"] is False  # --cpu turned bf16 off
    assert "note: bf16: true -> false (CPU run)" in result.stderr
    assert "step 3/3" in result.stderr


def _children(pid: int) -> list[int]:
    return [child for child, fields in proc_stats() if int(fields[1]) == pid]  # ppid


def _group_members(pgid: int) -> list[int]:
    return [member for member, fields in proc_stats() if int(fields[2]) == pgid and fields[0] != "Z"]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_during_a_real_run(project: Path, sig: signal.Signals) -> None:
    cfg = yaml.safe_load((project / "train.yaml").read_text())
    cfg.update(max_steps=2000, bf16=False, use_cpu=True)
    (project / "train.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen(
        [sys.executable, "-m", "lf_tuner", "run", "train.yaml"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = project / "out" / "trainer_log.jsonl"
    deadline = time.monotonic() + 600  # a guard against a hang only: the first logged step is waited for
    while time.monotonic() < deadline and not (log.exists() and log.read_text().strip()):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    children = _children(proc.pid)
    assert len(children) == 1
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, stderr
    record = json.loads((project / "out" / "lf-tuner-run.json").read_text())
    assert (
        record["status"] == "interrupted" and record["reason"] == f"stopped by {sig.name} (signal {int(sig)})"
    )
    assert record["steps"] is not None and record["steps"] < 2000
    assert _group_members(children[0]) == []  # nothing of the child's process group is left
