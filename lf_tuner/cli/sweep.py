"""`lf-tuner sweep SPEC.yaml --dir DIR`: a resumable hyperparameter search over real training runs."""

from __future__ import annotations

import importlib.util
import json
import signal
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from lf_tuner.errors import LfTunerError

if TYPE_CHECKING:
    from lf_tuner.sweep import SweepSpec


class Stopped(click.ClickException):
    """The sweep was interrupted: exit 130 like any program stopped by Ctrl-C."""

    exit_code = 130


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _echo(msg: str) -> None:
    click.echo(msg, err=True)


@click.command("sweep")
@click.argument("spec_path", metavar="SPEC.yaml", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--dir",
    "sweep_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder of the trial-NNN/ runs (and of optuna.journal, the default storage)  [default: sweeps/<spec name>]",
)
@click.option(
    "--storage",
    envvar="LF_TUNER_STORAGE",
    help="Where the study lives: sqlite:///FILE, postgresql://..., mysql://... (one database for several "
    "machines) or a journal file  [default: DIR/optuna.journal; env LF_TUNER_STORAGE]",
)
@click.option(
    "--study", "study_name", default="lf-tuner-sweep", show_default=True, help="Study name in the storage."
)
@click.option(
    "--import",
    "imports",
    multiple=True,
    type=click.Path(path_type=Path, exists=True),
    help="Finished runs to add as completed trials: a .csv/.md table (a column per parameter and metric), "
    "an earlier sweep's DIR, or a folder of `lf-tuner run` outputs. Repeatable.",
)
@click.option(
    "--gpus",
    help="GPUs to spread trials over, as for `run`: all, a count (4), positions (0,2), or cpu  "
    "[default: all visible GPUs, else cpu]",
)
@click.option("--worker", is_flag=True, help="Join a sweep other machines run (never reclaims their trials).")
@click.option(
    "--launcher",
    type=click.Choice(["run", "llamafactory"]),
    help="How trials start: `run` = `lf-tuner run` (preflight, OOM retry, record); "
    "`llamafactory` = `llamafactory-cli train` directly  [default: run]",
)
@click.option(
    "--slurm-script",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write a Slurm array job whose tasks join this sweep as workers, and start nothing.",
)
@click.option("--slurm-tasks", type=click.IntRange(min=1), default=4, show_default=True, help="Array size.")
@click.option("--force", is_flag=True, help="Replace an existing --slurm-script file.")
@click.option("--dry-run", is_flag=True, help="List the first stage's trials and start nothing.")
@click.option(
    "--json", "as_json", is_flag=True, help="Machine output on stdout: the trial list or the summary."
)
@click.option("--poll", "poll_s", type=click.FloatRange(min=0.01), default=1.0, hidden=True)
def command(spec_path: Path, sweep_dir: Path | None, **opts: Any) -> None:
    """Search hyperparameters over real runs, one trial per GPU set, resumable.

    Kill it at any moment and run the same command again: finished trials are kept, results that came in
    meanwhile are adopted, the trials that were running are queued again. `lf-tuner report DIR` shows the
    table; `optuna-dashboard DIR/optuna.journal` (or the --storage URL) is the live view.
    """
    from lf_tuner.sweep import load_spec

    spec = load_spec(spec_path)
    sweep_dir = sweep_dir or Path("sweeps") / spec_path.stem
    launcher = opts["launcher"] or ("run" if importlib.util.find_spec("lf_tuner.cli.run") else "llamafactory")
    if opts["dry_run"]:
        _dry_run(spec, opts["as_json"])
    elif opts["slurm_script"] is not None:
        _slurm(spec, spec_path, sweep_dir, launcher, opts)
    else:
        _run(spec, spec_path, sweep_dir, launcher, opts)


def _dry_run(spec: SweepSpec, as_json: bool) -> None:
    from lf_tuner.sweep import format_trials, preview, preview_heading

    trials = preview(spec)
    if as_json:
        click.echo(json.dumps([{"trial": i, "params": p} for i, p in enumerate(trials)], indent=2))
        return
    _echo(preview_heading(spec, len(trials)))
    if trials:
        click.echo(format_trials(trials))


def _slurm(spec: SweepSpec, spec_path: Path, sweep_dir: Path, launcher: str, opts: dict[str, Any]) -> None:
    from lf_tuner.sweep import render_array_script

    path: Path = opts["slurm_script"]
    if path.exists() and not opts["force"]:
        raise LfTunerError(f"{path} exists; pass --force to replace it")
    text = render_array_script(
        spec_path=spec_path,
        sweep_dir=sweep_dir,
        storage=opts["storage"],
        study=opts["study_name"],
        tasks=opts["slurm_tasks"],
        gpus_per_task=spec.gpus_per_trial,
        launcher=launcher,
    )
    try:
        path.write_text(text)
    except OSError as exc:
        raise LfTunerError(f"{path}: cannot write it ({exc.strerror})") from None
    path.chmod(0o755)
    _echo(f"wrote {path}: sbatch {path} starts {opts['slurm_tasks']} workers")


def _run(spec: SweepSpec, spec_path: Path, sweep_dir: Path, launcher: str, opts: dict[str, Any]) -> None:
    from lf_tuner.sweep import SweepInterrupted, gpu_slots, open_sweep

    slots = gpu_slots(opts["gpus"], spec.gpus_per_trial)
    if launcher != "run" and opts["launcher"] is None:
        _echo("warning: `lf-tuner run` is not installed; trials start `llamafactory-cli train` directly")
    sweep = open_sweep(
        spec,
        spec_path,
        sweep_dir,
        launcher,
        storage_url=opts["storage"],
        study_name=opts["study_name"],
        worker=opts["worker"],
        imports=opts["imports"],
        poll_s=opts["poll_s"],
        emit=_echo,
    )
    where = ", ".join("CPU" if s == "cpu" else f"GPU {s}" for s in slots)
    goals = ", ".join(f"{m.name} ({m.goal})" for m in spec.objectives)
    _echo(f"sweep in {sweep_dir}: {spec.method}, {goals}, slots: {where}")
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        summary = sweep.run(slots)
    except SweepInterrupted:
        raise Stopped(
            "sweep stopped; running trials were marked interrupted and queued again. "
            f"Run the same command to continue (`lf-tuner report {sweep_dir}` shows where it stands)"
        ) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    _echo("done: " + ", ".join(f"{n} {s}" for s, n in sorted(summary.counts.items())))
    if opts["as_json"]:
        click.echo(json.dumps({"dir": str(sweep_dir), **summary.as_json()}))
    if summary.best_number is None:
        raise LfTunerError(
            f"no trial completed; read {sweep_dir}/trial-*/launch.log, or `lf-tuner report {sweep_dir}`"
        )
    where = "" if summary.best_stage == "main" else f"{summary.best_stage} "
    _echo(
        f"best: {where}trial {summary.best_number}, {spec.objectives[0].name} = {summary.best_value:.6g}; "
        f"table: lf-tuner report {sweep_dir}"
    )
