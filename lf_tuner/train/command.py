"""The `llamafactory-cli train` command: a pure argv/env builder, and where the config is written.

`build_command` decides everything about the child process (argv and the environment variables lf-tuner sets);
`--dry-run` shows what it returns before anything starts.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lf_tuner.errors import LfTunerError

DEFAULT_MASTER_PORT = 29500


@dataclass(frozen=True)
class Command:
    """What to start: the argv (never through a shell) and the variables set on top of the caller's env."""

    argv: list[str]
    env: dict[str, str]


def uses_torchrun(
    *, num_gpus: int, deepspeed: bool, nnodes: int, ray: bool, accelerate: bool = False
) -> bool:
    """Whether LLaMA-Factory's launcher will re-launch itself through torchrun (not under Ray or accelerate)."""
    if ray or accelerate:
        return False
    return num_gpus > 1 or deepspeed or nnodes > 1


# What `accelerate launch` runs: LLaMA-Factory documents `accelerate launch --config_file
# examples/accelerate/fsdp_config.yaml src/train.py CONFIG` (examples/extras/fsdp_qlora/train.sh); src/train.py is
# not in the wheel, and `llamafactory/launcher.py` run as a module calls the same `run_exp()` on argv[1].
ACCELERATE_MODULE = "llamafactory.launcher"


def _accelerate_argv(
    cli: str,
    accelerate_config: str,
    *,
    gpus: Sequence[int] | None,
    nnodes: int,
    node_rank: int,
    master_addr: str | None,
    master_port: int | None,
) -> list[str]:
    """`accelerate launch --config_file FILE [...] -m llamafactory.launcher`, from the llamafactory-cli's bin dir."""
    accelerate = str(Path(cli).with_name("accelerate")) if Path(cli).name != cli else "accelerate"
    argv = [accelerate, "launch", "--config_file", accelerate_config]
    if gpus:
        argv += ["--num_processes", str(len(gpus) * nnodes)]
    if nnodes > 1:
        assert master_addr is not None
        argv += ["--num_machines", str(nnodes), "--machine_rank", str(node_rank)]
        argv += [
            "--main_process_ip",
            master_addr,
            "--main_process_port",
            str(master_port or DEFAULT_MASTER_PORT),
        ]
    return [*argv, "-m", ACCELERATE_MODULE]


def build_command(
    config_path: str,
    *,
    cli: str = "llamafactory-cli",
    gpus: Sequence[int] | None = None,
    cpu: bool = False,
    deepspeed: bool = False,
    nnodes: int = 1,
    node_rank: int = 0,
    master_addr: str | None = None,
    master_port: int | None = None,
    ray_workers: int | None = None,
    record_vram: bool = True,
    accelerate_config: str | None = None,
) -> Command:
    """The argv and environment for one `llamafactory-cli train` process on this node.

    `gpus` are NVML indices (None: leave CUDA_VISIBLE_DEVICES alone); `cpu` hides every GPU. LLaMA-Factory's
    torchrun relaunch joins its arguments with spaces and splits them again, so a config path with whitespace is
    refused whenever torchrun is used (stage a copy elsewhere first). `accelerate_config` (FSDP) starts
    `accelerate launch --config_file` instead, as LLaMA-Factory documents for FSDP; accelerate starts the
    processes itself, so no FORCE_TORCHRUN.
    """
    if nnodes < 1:
        raise LfTunerError(f"nnodes: must be at least 1, got {nnodes}")
    if not 0 <= node_rank < nnodes:
        raise LfTunerError(f"node_rank: must be in 0..{nnodes - 1} for {nnodes} node(s), got {node_rank}")
    if ray_workers is not None and ray_workers < 1:
        raise LfTunerError(f"ray_num_workers: must be at least 1, got {ray_workers}")
    if ray_workers is not None and nnodes > 1:
        raise LfTunerError(
            "ray: --ray and --nnodes exclude each other; Ray places workers across its own cluster"
        )
    if nnodes > 1 and not master_addr:
        raise LfTunerError("master_addr: several nodes need --master-addr (the address of node rank 0)")
    if cpu and gpus:
        raise LfTunerError("use_cpu: a CPU run cannot also select GPUs; drop --gpus or --cpu")
    if accelerate_config and (ray_workers is not None or deepspeed or cpu):
        raise LfTunerError(
            "accelerate_config: FSDP through accelerate excludes Ray, DeepSpeed and CPU runs; drop one of them"
        )

    num_gpus = 0 if cpu else len(gpus or [])
    accelerate = accelerate_config is not None
    torchrun = uses_torchrun(
        num_gpus=num_gpus,
        deepspeed=deepspeed,
        nnodes=nnodes,
        ray=ray_workers is not None,
        accelerate=accelerate,
    )
    if torchrun and re.search(r"\s", config_path):
        raise LfTunerError(
            f"config_path: {config_path!r} contains whitespace, and LLaMA-Factory's torchrun relaunch splits "
            "arguments on spaces; use a path without spaces"
        )

    argv = [cli, "train", config_path]
    if accelerate_config is not None:
        argv = _accelerate_argv(
            cli,
            accelerate_config,
            gpus=gpus,
            nnodes=nnodes,
            node_rank=node_rank,
            master_addr=master_addr,
            master_port=master_port,
        )
        argv.append(config_path)
    env: dict[str, str] = {}
    if cpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    elif gpus is not None:
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # NVML numbers GPUs by PCI bus; CUDA by speed unless told
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in gpus)
    if torchrun:
        env["FORCE_TORCHRUN"] = "1"
        if num_gpus:
            env["NPROC_PER_NODE"] = str(num_gpus)
    if nnodes > 1 and not accelerate:
        assert master_addr is not None
        env["NNODES"] = str(nnodes)
        env["NODE_RANK"] = str(node_rank)
        env["MASTER_ADDR"] = master_addr
        env["MASTER_PORT"] = str(master_port or DEFAULT_MASTER_PORT)
    elif master_port is not None and torchrun:
        env["MASTER_PORT"] = str(master_port)
    if ray_workers is not None:
        env["USE_RAY"] = "1"
        argv.append(f"ray_num_workers={ray_workers}")
    if record_vram:
        env["RECORD_VRAM"] = "1"
    return Command(argv=argv, env=env)


def staged_path(kept: Path, *, torchrun: bool) -> Path:
    """The config path the child is given: `kept`, or a path in a new temporary directory when torchrun would
    split `kept` on its whitespace (`write_config` puts a copy there)."""
    if torchrun and any(c.isspace() for c in str(kept.absolute())):
        return Path(tempfile.mkdtemp(prefix="lf-tuner-")) / "config.yaml"
    return kept


def write_config(cfg: Mapping[str, Any], kept: Path, staged: Path | None = None) -> None:
    """Write the training config as YAML to `kept` (creating its directory) and copy it to `staged`."""
    import yaml

    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_text(yaml.safe_dump(dict(cfg), sort_keys=False, allow_unicode=True), encoding="utf-8")
    if staged is not None and staged != kept:
        shutil.copyfile(kept, staged)
