"""The pure launch core: argv/env cases, trainer-log reading, divergence, OOM changes, preflight checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lf_tuner.errors import LfTunerError
from lf_tuner.train import build_command
from lf_tuner.train.preflight import local_problems, output_dir_state
from lf_tuner.train.runner import child_status, next_oom_change
from lf_tuner.train.watch import ChildResult, TrainerLog, divergence_in_entry, divergence_in_state

CFG = "/runs/a/lf-tuner-config.yaml"

CASES = [
    (
        "one GPU",
        dict(gpus=[1]),
        ["llamafactory-cli", "train", CFG],
        {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "1", "RECORD_VRAM": "1"},
    ),
    (
        "two GPUs",
        dict(gpus=[0, 2]),
        ["llamafactory-cli", "train", CFG],
        {
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            "CUDA_VISIBLE_DEVICES": "0,2",
            "FORCE_TORCHRUN": "1",
            "NPROC_PER_NODE": "2",
            "RECORD_VRAM": "1",
        },
    ),
    (
        "DeepSpeed on one GPU",
        dict(gpus=[0], deepspeed=True),
        ["llamafactory-cli", "train", CFG],
        {
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            "CUDA_VISIBLE_DEVICES": "0",
            "FORCE_TORCHRUN": "1",
            "NPROC_PER_NODE": "1",
            "RECORD_VRAM": "1",
        },
    ),
    (
        "two nodes, rank 1",
        dict(gpus=[0, 1, 2, 3], nnodes=2, node_rank=1, master_addr="10.0.0.1"),
        ["llamafactory-cli", "train", CFG],
        {
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            "CUDA_VISIBLE_DEVICES": "0,1,2,3",
            "FORCE_TORCHRUN": "1",
            "NPROC_PER_NODE": "4",
            "NNODES": "2",
            "NODE_RANK": "1",
            "MASTER_ADDR": "10.0.0.1",
            "MASTER_PORT": "29500",
            "RECORD_VRAM": "1",
        },
    ),
    (
        "two nodes, own port",
        dict(nnodes=2, master_addr="head", master_port=31000),
        ["llamafactory-cli", "train", CFG],
        {
            "FORCE_TORCHRUN": "1",
            "NNODES": "2",
            "NODE_RANK": "0",
            "MASTER_ADDR": "head",
            "MASTER_PORT": "31000",
            "RECORD_VRAM": "1",
        },
    ),
    (
        "Ray, 4 workers",
        dict(gpus=[0, 1, 2, 3], ray_workers=4),
        ["llamafactory-cli", "train", CFG, "ray_num_workers=4"],
        {
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            "CUDA_VISIBLE_DEVICES": "0,1,2,3",
            "USE_RAY": "1",
            "RECORD_VRAM": "1",
        },
    ),
    (
        "CPU",
        dict(cpu=True),
        ["llamafactory-cli", "train", CFG],
        {"CUDA_VISIBLE_DEVICES": "", "RECORD_VRAM": "1"},
    ),
    ("no GPU choice, no VRAM record", dict(record_vram=False), ["llamafactory-cli", "train", CFG], {}),
    (
        "FSDP through accelerate, two GPUs",
        dict(cli="/opt/lf/bin/llamafactory-cli", gpus=[0, 1], accelerate_config="/cfg/fsdp.yaml"),
        [
            "/opt/lf/bin/accelerate",
            "launch",
            "--config_file",
            "/cfg/fsdp.yaml",
            "--num_processes",
            "2",
            "-m",
            "llamafactory.launcher",
            CFG,
        ],
        {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "0,1", "RECORD_VRAM": "1"},
    ),
    (
        "FSDP through accelerate, node 1 of 2",
        dict(gpus=[0, 1], nnodes=2, node_rank=1, master_addr="head", accelerate_config="/cfg/fsdp.yaml"),
        [
            "accelerate",
            "launch",
            "--config_file",
            "/cfg/fsdp.yaml",
            "--num_processes",
            "4",
            "--num_machines",
            "2",
            "--machine_rank",
            "1",
            "--main_process_ip",
            "head",
            "--main_process_port",
            "29500",
            "-m",
            "llamafactory.launcher",
            CFG,
        ],
        {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "0,1", "RECORD_VRAM": "1"},
    ),
    (
        "own llamafactory-cli",
        dict(cli="/opt/lf/bin/llamafactory-cli", gpus=[0]),
        ["/opt/lf/bin/llamafactory-cli", "train", CFG],
        {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "0", "RECORD_VRAM": "1"},
    ),
]


@pytest.mark.parametrize(("case", "kwargs", "argv", "env"), CASES, ids=[c[0] for c in CASES])
def test_build_command(case: str, kwargs: dict, argv: list[str], env: dict[str, str]) -> None:
    command = build_command(CFG, **kwargs)
    assert command.argv == argv
    assert command.env == env


def test_path_with_spaces_is_fine_without_torchrun() -> None:
    command = build_command("/my runs/a b.yaml", gpus=[0])
    assert command.argv == ["llamafactory-cli", "train", "/my runs/a b.yaml"]
    # accelerate passes its arguments on as a list: no torchrun relaunch that splits them
    command = build_command("/my runs/a b.yaml", gpus=[0, 1], accelerate_config="fsdp.yaml")
    assert command.argv[-1] == "/my runs/a b.yaml" and "FORCE_TORCHRUN" not in command.env


@pytest.mark.parametrize(
    "kwargs", [dict(gpus=[0, 1]), dict(gpus=[0], deepspeed=True), dict(nnodes=2, master_addr="h")]
)
def test_path_with_spaces_is_refused_under_torchrun(kwargs: dict) -> None:
    with pytest.raises(
        LfTunerError, match=r"contains whitespace, and LLaMA-Factory's torchrun relaunch splits"
    ):
        build_command("/my runs/a b.yaml", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(nnodes=2), r"master_addr: several nodes need --master-addr"),
        (dict(nnodes=2, node_rank=2, master_addr="h"), r"node_rank: must be in 0\.\.1"),
        (dict(ray_workers=2, nnodes=2, master_addr="h"), r"--ray and --nnodes exclude each other"),
        (dict(cpu=True, gpus=[0]), r"use_cpu: a CPU run cannot also select GPUs"),
        (dict(ray_workers=0), r"ray_num_workers: must be at least 1"),
        (
            dict(accelerate_config="f.yaml", deepspeed=True),
            r"FSDP through accelerate excludes Ray, DeepSpeed",
        ),
    ],
)
def test_build_command_rejects(kwargs: dict, message: str) -> None:
    with pytest.raises(LfTunerError, match=message):
        build_command(CFG, **kwargs)


def test_trainer_log_reads_incrementally(tmp_path: Path) -> None:
    path = tmp_path / "trainer_log.jsonl"
    log = TrainerLog(path)
    assert log.poll() == []
    path.write_text('{"current_steps": 1, "loss": 2.0}\n{"current_steps": 2, ')
    assert log.poll() == [{"current_steps": 1, "loss": 2.0}]
    with path.open("a") as fh:
        fh.write('"loss": NaN}\n')
    new = log.poll()
    assert new[0]["current_steps"] == 2 and new[0]["loss"] != new[0]["loss"]  # NaN
    path.write_text('{"current_steps": 1, "loss": 3.0}\n')  # rewritten (overwrite_output_dir)
    assert log.poll() == [{"current_steps": 1, "loss": 3.0}]
    assert [e["loss"] for e in log.entries] == [3.0]


def test_divergence_in_entries_and_state(tmp_path: Path) -> None:
    assert divergence_in_entry({"current_steps": 3, "loss": 1.5}) is None
    assert divergence_in_entry({"current_steps": 3, "loss": float("inf")}) == "loss inf at step 3"
    assert (
        divergence_in_entry({"step": 7, "loss": 0.0, "grad_norm": float("nan")}) == "grad_norm nan at step 7"
    )
    ckpt = tmp_path / "checkpoint-5"
    ckpt.mkdir()
    (ckpt / "trainer_state.json").write_text(
        json.dumps({"log_history": [{"step": 5, "loss": 0.0, "grad_norm": float("nan")}]})
    )
    assert divergence_in_state(tmp_path) == "grad_norm nan at step 5"


@pytest.mark.parametrize(
    ("cfg", "expected"),
    [
        (
            {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 2},
            {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 4},
        ),
        (
            {"per_device_train_batch_size": 3},
            {"per_device_train_batch_size": 1, "gradient_accumulation_steps": 3},
        ),
        (
            {},
            {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 2},
        ),  # HF default micro-batch 8
        ({"per_device_train_batch_size": 1}, {"enable_liger_kernel": True}),
        ({"per_device_train_batch_size": 1, "enable_liger_kernel": True}, None),
    ],
)
def test_next_oom_change(cfg: dict, expected: dict | None) -> None:
    change = next_oom_change(cfg)
    assert (change[1] if change else None) == expected


def test_oom_change_keeps_effective_batch() -> None:
    change = next_oom_change({"per_device_train_batch_size": 16, "gradient_accumulation_steps": 4})
    assert change is not None
    assert change[0] == (
        "per_device_train_batch_size 16 -> 8, gradient_accumulation_steps 4 -> 8 (effective batch 64 -> 64)"
    )


def _result(**kw: object) -> ChildResult:
    base = dict(
        returncode=0, oom=False, interrupted_by=None, diverged=None, tail=[], runtime_s=1.0, trainer_log=[]
    )
    base.update(kw)
    return ChildResult(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({}, ("completed", 0)),
        ({"returncode": 1}, ("failed", 1)),
        ({"returncode": 1, "oom": True}, ("oom", 1)),
        ({"returncode": -15, "interrupted_by": 15}, ("interrupted", 143)),
        ({"returncode": -2, "interrupted_by": 2}, ("interrupted", 130)),
        ({"returncode": -15, "diverged": "loss nan at step 2"}, ("diverged", 143)),
        ({"returncode": 0, "diverged": "loss nan at step 2"}, ("diverged", 1)),
        ({"returncode": -9}, ("failed", 137)),
    ],
)
def test_child_status(kw: dict, expected: tuple[str, int]) -> None:
    assert child_status(_result(**kw)) == expected


def _data(tmp_path: Path) -> dict:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.json").write_text("[]")
    (tmp_path / "data" / "dataset_info.json").write_text(
        json.dumps({"alpaca_a": {"file_name": "a.json"}, "gone": {"file_name": "gone.json"}})
    )
    return {"model_name_or_path": "model", "dataset": "alpaca_a", "dataset_dir": "data"}


def test_local_problems(tmp_path: Path) -> None:
    cfg = _data(tmp_path)
    assert local_problems(cfg, cwd=tmp_path) == []
    assert local_problems({**cfg, "model_name_or_path": "Qwen/Qwen2.5-0.5B"}, cwd=tmp_path) == []  # hub id
    bad = {
        **cfg,
        "model_name_or_path": "./nope",
        "dataset": "alpaca_b,gone",
        "deepspeed": "ds.json",
        "use_cpu": True,
        "bf16": True,
    }
    assert local_problems(bad, cwd=tmp_path) == [
        "model_name_or_path: ./nope does not exist; point it at a model directory or a hub id",
        f"dataset: `alpaca_b` is not in {tmp_path}/data/dataset_info.json; did you mean `alpaca_a`?",
        f"dataset: `gone` points at {tmp_path}/data/gone.json, which does not exist",
        "deepspeed: ds.json does not exist; `lf-tuner render` writes the DeepSpeed JSON",
        "bf16: mixed precision needs a GPU; set bf16: false (and fp16: false) with use_cpu: true",
    ]
    assert local_problems({**cfg, "dataset_dir": "elsewhere"}, cwd=tmp_path) == [
        f"dataset_dir: {tmp_path}/elsewhere/dataset_info.json does not exist; register your data there "
        "(see `lf-tuner render`)"
    ]


def test_output_dir_state(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert output_dir_state(out) == "empty"
    out.mkdir()
    (out / "trial.yaml").write_text("x: 1")
    assert output_dir_state(out, ignore=[out / "trial.yaml"]) == "empty"
    assert output_dir_state(out) == "nonempty"
    (out / "checkpoint-10").mkdir()
    assert output_dir_state(out) == "checkpoint"
