"""`lf-tuner doctor`: versions of the training stack, the GPUs, and what is missing for which feature."""

from __future__ import annotations

import json
import platform
import shutil
from importlib import metadata
from typing import TYPE_CHECKING, Any

import click
from rich import box
from rich.table import Table

from lf_tuner.cli._common import show

if TYPE_CHECKING:
    from lf_tuner.train import GpuSummary

# distribution name -> what needs it
PACKAGES: dict[str, str] = {
    "torch": "training",
    "llamafactory": "training",
    "transformers": "training",
    "peft": "LoRA",
    "bitsandbytes": "QLoRA (quantization_bit)",
    "liger-kernel": "enable_liger_kernel, --retry-oom's last step",
    "deepspeed": "deepspeed (ZeRO)",
    "flash-attn": "flash_attn: fa2",
}
# LLaMA-Factory 0.9.5's check_dependencies() ranges, as (min, max) inclusive
PINS: dict[str, tuple[str, str]] = {"transformers": ("4.55.0", "5.6.0"), "peft": ("0.18.0", "0.20.0")}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _key(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("+")[0].split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def torch_info() -> dict[str, Any]:
    """torch's CUDA build and whether it sees a GPU (imports torch: only here)."""
    if _version("torch") is None:
        return {"cuda": None, "cuda_available": False}
    try:
        import torch
    except Exception as exc:  # a broken install must not crash the doctor
        return {"cuda": None, "cuda_available": False, "error": str(exc).splitlines()[0]}
    return {"cuda": torch.version.cuda, "cuda_available": bool(torch.cuda.is_available())}


def gather() -> dict[str, Any]:
    from lf_tuner.train import detect_gpus, gpu_summary

    versions = {"python": platform.python_version(), **{d: _version(d) for d in PACKAGES}}
    gpus = [gpu_summary(g) for g in detect_gpus()]
    return {
        "versions": versions,
        "torch": torch_info(),
        "gpus": gpus,
        "llamafactory_cli": shutil.which("llamafactory-cli"),
        "problems": problems(versions, gpus),
    }


def problems(versions: dict[str, str | None], gpus: list[GpuSummary]) -> list[str]:
    """`feature: what is missing, and the fix` lines."""
    found: list[str] = []
    for dist, feature in PACKAGES.items():
        if versions.get(dist) is None:
            fix = "pip install 'lf-tuner[train]'" if feature == "training" else f"pip install {dist}"
            found.append(f"{feature}: needs {dist}; {fix}")
    for dist, (low, high) in PINS.items():
        have = versions.get(dist)
        if have and not _key(low) <= _key(have) <= _key(high):
            found.append(
                f"training: llamafactory 0.9.5 wants {dist} {low}..{high}, found {have}; "
                f"pip install '{dist}>={low},<={high}'"
            )
    if not gpus:
        found.append(
            "GPU training: no GPU visible through NVML (check nvidia-smi, CUDA_VISIBLE_DEVICES); "
            "CPU runs need --cpu"
        )
    elif len(gpus) == 1:
        found.append("multi-GPU training: one GPU visible")
    return found


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def command(as_json: bool) -> None:
    """Show the versions, GPUs and missing pieces of the training stack."""
    info = gather()
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    table = Table(box=box.SIMPLE, show_edge=False, pad_edge=False)
    table.add_column("component")
    table.add_column("version")
    for name, version in info["versions"].items():
        extra = ""
        if name == "torch" and version:
            cuda = info["torch"]["cuda"]
            extra = (
                f" (CUDA {cuda}{', GPU visible' if info['torch']['cuda_available'] else ', no GPU'})"
                if cuda
                else " (CPU build)"
            )
        table.add_row(name, (version or "missing") + extra)
    table.add_row("llamafactory-cli", info["llamafactory_cli"] or "not on PATH")
    show(table)
    for g in info["gpus"]:
        click.echo(f"GPU {g['index']}: {g['name']}, {g['total_gib']:.1f} GiB, {g['free_gib']:.1f} GiB free")
    for line in info["problems"]:
        click.echo(f"missing: {line}")
    if not info["problems"]:
        click.echo("nothing missing")
