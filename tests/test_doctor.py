"""`lf-tuner doctor` and the SLURM script."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from lf_tuner.cli import cli
from lf_tuner.cli.doctor import problems
from lf_tuner.errors import LfTunerError
from lf_tuner.train import render_slurm_script

GOLDEN = Path(__file__).parent / "golden" / "slurm_2x8.sh"


def test_problems_name_feature_and_fix() -> None:
    versions = {
        "python": "3.11.7",
        "torch": "2.9.1",
        "llamafactory": "0.9.5",
        "transformers": "5.7.0",
        "peft": "0.18.1",
        "bitsandbytes": None,
        "liger-kernel": "0.6.0",
        "deepspeed": None,
        "flash-attn": "2.8.0",
    }
    gpus = [{"index": 0, "name": "RTX 4090", "total_gib": 23.6, "free_gib": 23.0}]
    assert problems(versions, gpus) == [
        "QLoRA (quantization_bit): needs bitsandbytes; pip install bitsandbytes",
        "deepspeed (ZeRO): needs deepspeed; pip install deepspeed",
        "training: llamafactory 0.9.5 wants transformers 4.55.0..5.6.0, found 5.7.0; "
        "pip install 'transformers>=4.55.0,<=5.6.0'",
        "multi-GPU training: one GPU visible",
    ]
    assert (
        problems({**versions, "torch": None}, [])[0] == "training: needs torch; pip install 'lf-tuner[train]'"
    )


def test_doctor_json(monkeypatch: pytest.MonkeyPatch) -> None:
    import lf_tuner.train.gpus

    monkeypatch.setattr(lf_tuner.train.gpus, "detect_gpus", lambda select=None: [])
    result = CliRunner().invoke(cli, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert set(info["versions"]) == {
        "python",
        "torch",
        "llamafactory",
        "transformers",
        "peft",
        "bitsandbytes",
        "liger-kernel",
        "deepspeed",
        "flash-attn",
    }
    assert info["gpus"] == []
    assert (
        "GPU training: no GPU visible through NVML (check nvidia-smi, CUDA_VISIBLE_DEVICES); CPU runs need --cpu"
        in info["problems"]
    )


def test_slurm_script_golden(update_golden: bool) -> None:
    script = render_slurm_script(
        "/shared/runs/a/lf-tuner-config.yaml",
        nnodes=2,
        gpus_per_node=8,
        master_port=29501,
        job_name="qwen-lora",
    )
    if update_golden:
        GOLDEN.write_text(script)
    assert script == GOLDEN.read_text()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(config_path="/my runs/c.yaml"), r"contains whitespace"),
        (dict(nnodes=0), r"nnodes: must be at least 1"),
        (dict(gpus_per_node=0), r"gpus_per_node: must be at least 1"),
        (dict(job_name="a b"), r"job_name: `a b` may only hold"),
    ],
)
def test_slurm_script_refuses(kwargs: dict, message: str) -> None:
    args = {"config_path": "/c.yaml", "nnodes": 2, "gpus_per_node": 8, **kwargs}
    with pytest.raises(LfTunerError, match=message):
        render_slurm_script(args.pop("config_path"), **args)


def test_run_writes_slurm_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:

    monkeypatch.chdir(tmp_path)
    model = tmp_path / "model"
    model.mkdir()
    from tests.tiny import TINY_CONFIG

    (model / "config.json").write_text(json.dumps(TINY_CONFIG))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "d.json").write_text("[]")
    (tmp_path / "data" / "dataset_info.json").write_text(json.dumps({"d": {"file_name": "d.json"}}))
    (tmp_path / "t.yaml").write_text(
        f"model_name_or_path: {model}\nstage: sft\ndo_train: true\nfinetuning_type: lora\ndataset: d\n"
        f"dataset_dir: data\ntemplate: qwen\noutput_dir: {tmp_path}/out\nbf16: true\n"
        "per_device_train_batch_size: 1\n"
    )
    args = ["run", "t.yaml", "--gpus", "8", "--nnodes", "2", "--slurm-script", "job.sh"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    script = (tmp_path / "job.sh").read_text()
    assert f"export LF_TUNER_CONFIG={tmp_path}/out/lf-tuner-config.yaml\n" in script
    assert "#SBATCH --nodes=2\n#SBATCH --ntasks-per-node=1\n#SBATCH --gpus-per-node=8\n" in script
    assert (tmp_path / "out" / "lf-tuner-config.yaml").exists()
    again = CliRunner().invoke(cli, [*args, "--overwrite"])
    assert again.exit_code == 1
    assert again.stderr == (
        "note: NVML sees no GPU here; planning for GPU 0,1,2,3,4,5,6,7 from --gpus 8\n"
        "Error: slurm_script: job.sh exists; pass --force to replace it\n"
    )
