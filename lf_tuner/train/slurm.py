"""A SLURM batch script that starts the same LLaMA-Factory run on every node with the right rank variables."""

from __future__ import annotations

import re
import shlex

from lf_tuner.errors import LfTunerError

_JOB_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


def check_job_name(job_name: str) -> None:
    """Slurm's --job-name as lf-tuner writes it unquoted into a script."""
    if not _JOB_NAME.match(job_name):
        raise LfTunerError(f"job_name: `{job_name}` may only hold letters, digits, '.', '_' and '-'")


def render_slurm_script(
    config_path: str,
    *,
    nnodes: int,
    gpus_per_node: int,
    master_port: int = 29500,
    job_name: str = "lf-tuner",
    cli: str = "llamafactory-cli",
) -> str:
    """The script text. `config_path` must be reachable from every node (shared filesystem).

    LLaMA-Factory relaunches itself through torchrun with its arguments joined and split on spaces, so a
    config path with whitespace is refused.
    """
    if nnodes < 1:
        raise LfTunerError(f"nnodes: must be at least 1, got {nnodes}")
    if gpus_per_node < 1:
        raise LfTunerError(f"gpus_per_node: must be at least 1, got {gpus_per_node}")
    if not 1 <= master_port <= 65535:
        raise LfTunerError(f"master_port: must be in 1..65535, got {master_port}")
    check_job_name(job_name)
    if re.search(r"\s", config_path):
        raise LfTunerError(
            f"config_path: {config_path!r} contains whitespace, which LLaMA-Factory's torchrun relaunch splits "
            "apart; move the config to a path without spaces"
        )
    from lf_tuner.config import render_template

    context = {
        "config_path": shlex.quote(config_path),
        "cli": shlex.quote(cli),
        "nnodes": nnodes,
        "gpus_per_node": gpus_per_node,
        "master_port": master_port,
        "job_name": job_name,
    }
    return render_template("slurm.sh.j2", context)
