"""`sweep --slurm-script FILE`: a Slurm array job whose tasks join one study as workers."""

from __future__ import annotations

import shlex
from pathlib import Path

from lf_tuner.errors import LfTunerError
from lf_tuner.sweep.storage import JOURNAL_FILE, is_url, mask


def render_array_script(
    *,
    spec_path: Path,
    sweep_dir: Path,
    storage: str | None,
    study: str,
    tasks: int,
    gpus_per_task: int,
    launcher: str,
    job_name: str = "lf-tuner-sweep",
    cli: str = "lf-tuner",
) -> str:
    """The script text; paths are made absolute (every task must see them on a shared filesystem)."""
    if tasks < 1:
        raise LfTunerError(f"--slurm-tasks: must be at least 1, got {tasks}")
    from lf_tuner.config import render_template
    from lf_tuner.train import check_job_name

    check_job_name(job_name)
    sweep_dir = sweep_dir.absolute()
    url = storage or str(sweep_dir / JOURNAL_FILE)
    if is_url(url) and url.startswith("sqlite"):
        raise LfTunerError(
            "--storage sqlite:/// cannot be shared by Slurm tasks (SQLite locks break on network filesystems); "
            "use postgresql://..., mysql://... or the journal file on a shared filesystem"
        )
    shown = mask(url)
    context = {
        "tasks": tasks,
        "gpus": gpus_per_task,
        "study": shlex.quote(study),
        "storage": shlex.quote(url),
        "storage_shown": shown,
        "needs_env": shown != url,
        "dashboard": shown,
        "job_name": job_name,
        "cli": shlex.quote(cli),
        "spec": shlex.quote(str(spec_path.absolute())),
        "sweep_dir": shlex.quote(str(sweep_dir)),
        "launcher": launcher,
    }
    return render_template("slurm_sweep.sh.j2", context)
