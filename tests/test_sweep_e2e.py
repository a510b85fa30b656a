"""One real sweep: 2 trials on a tiny random Qwen2 on the CPU, through `lf-tuner run` and the real llamafactory-cli."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import requires_llamafactory

TRAIN = """\
model_name_or_path: {model}
stage: sft
do_train: true
finetuning_type: lora
lora_target: all
dataset: tiny
dataset_dir: {data}
template: qwen
cutoff_len: 64
per_device_train_batch_size: 2
learning_rate: 1.0e-4
logging_steps: 1
val_size: 0.25
eval_strategy: steps
eval_steps: 2
per_device_eval_batch_size: 2
save_strategy: "no"
report_to: none
use_cpu: true
bf16: false
preprocessing_num_workers: 1
dataloader_num_workers: 0
"""

SPEC = """\
base: train.yaml
method: grid
metric: {name: eval_loss, goal: minimize}
budget: {max_steps: 2}
parameters:
  learning_rate: {values: [1.0e-4, 1.0e-3]}
  lora_rank: {values: [4]}
  lora_alpha: {expr: "2 * lora_rank"}
"""


@pytest.mark.slow
@pytest.mark.llamafactory
@requires_llamafactory
def test_real_sweep_then_report(tmp_path: Path) -> None:
    from tests.tiny import build_tiny_model, write_alpaca

    if (
        shutil.which("llamafactory-cli") is None
        and not (Path(sys.executable).parent / "llamafactory-cli").exists()
    ):
        pytest.skip("llamafactory-cli is not on PATH")
    model = build_tiny_model(tmp_path / "model")
    data = tmp_path / "data"
    data.mkdir()
    write_alpaca(data / "train.json", 16)
    (data / "dataset_info.json").write_text(json.dumps({"tiny": {"file_name": "train.json"}}))
    (tmp_path / "train.yaml").write_text(TRAIN.format(model=model, data=data))
    (tmp_path / "spec.yaml").write_text(SPEC)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)

    def lf_tuner(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "lf_tuner", *args]
        return subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)

    args = ["sweep", "spec.yaml", "--dir", "out", "--gpus", "cpu", "--launcher", "run", "--poll", "0.5"]
    sweep = lf_tuner(*args, timeout=240)
    assert sweep.returncode == 0, sweep.stderr
    assert "done: 2 completed" in sweep.stderr
    for n in (0, 1):
        record = json.loads((tmp_path / "out" / f"trial-00{n}" / "output" / "lf-tuner-run.json").read_text())
        assert record["status"] == "completed"  # each trial went through `lf-tuner run`

    report = lf_tuner("report", "out", "--format", "json", timeout=120)
    assert report.returncode == 0, report.stderr
    data_out = json.loads(report.stdout)
    assert [t["status"] for t in data_out["trials"]] == ["completed", "completed"]
    results = {
        n: json.loads((tmp_path / "out" / f"trial-00{n}" / "output" / "all_results.json").read_text())[
            "eval_loss"
        ]
        for n in (0, 1)
    }
    best = min(results, key=lambda n: results[n])
    assert data_out["best"]["number"] == best
    assert data_out["best"]["value"] == pytest.approx(results[best])
    assert data_out["best"]["params"]["lora_alpha"] == 8
    assert (tmp_path / "out" / "report" / "loss_curves.png").stat().st_size > 0
