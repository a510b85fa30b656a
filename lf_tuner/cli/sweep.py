"""`lf-tuner sweep SPEC.yaml --dir DIR`: a resumable hyperparameter search over real training runs."""

from __future__ import annotations

import importlib.util
import json
import signal
from pathlib import Path
from types import FrameType
from typing import Any

import click

from lf_tuner.errors import LfTunerError


def _default_launcher() -> str:
    return "run" if importlib.util.find_spec("lf_tuner.cli.run") is not None else "llamafactory"


class Stopped(click.ClickException):
    """The sweep was interrupted: exit 130 like any program stopped by Ctrl-C."""

    exit_code = 130


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@click.command("sweep")
@click.argument("spec_path", metavar="SPEC.yaml", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--dir",
    "sweep_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder of the study (optuna.journal) and the trial-NNN/ runs  [default: sweeps/<spec name>]",
)
@click.option(
    "--gpus",
    help="GPUs to spread trials over, as for `run`: all, a count (4), positions (0,2), or cpu  "
    "[default: all visible GPUs, else cpu]",
)
@click.option(
    "--worker",
    is_flag=True,
    help="Join a sweep other machines run in the same DIR on a shared filesystem (never reclaims their trials).",
)
@click.option(
    "--launcher",
    type=click.Choice(["run", "llamafactory"]),
    help="How trials start: `run` = `lf-tuner run` (preflight, OOM retry, record); "
    "`llamafactory` = `llamafactory-cli train` directly  [default: run]",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="List the trials (grid: all; random/tpe: the first sampled) and start nothing.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Machine output on stdout: the trial list with --dry-run, else the summary.",
)
@click.option("--poll", "poll_s", type=click.FloatRange(min=0.01), default=1.0, hidden=True)
def command(
    spec_path: Path,
    sweep_dir: Path | None,
    gpus: str | None,
    worker: bool,
    launcher: str | None,
    dry_run: bool,
    as_json: bool,
    poll_s: float,
) -> None:
    """Search hyperparameters over real runs, one trial per GPU set, resumable.

    Kill it at any moment and run the same command again: finished trials are kept,
    the ones that were running are marked failed and queued again. See `lf-tuner report DIR`.
    """
    from lf_tuner.sweep import load_spec
    from lf_tuner.sweep.space import format_trials, grid_size, preview

    spec = load_spec(spec_path)
    if dry_run:
        trials = preview(spec)
        if as_json:
            click.echo(json.dumps([{"trial": i, "params": p} for i, p in enumerate(trials)], indent=2))
            return
        total = grid_size(spec) if spec.method == "grid" else spec.max_trials
        what = "grid points" if spec.method == "grid" else f"trials, the first sampled (seed {spec.seed})"
        click.echo(f"{spec.method}: {len(trials)} of {total} {what}", err=True)
        click.echo(format_trials(trials))
        return
    _run(
        spec, spec_path, sweep_dir or Path("sweeps") / spec_path.stem, gpus, worker, launcher, as_json, poll_s
    )


def _run(
    spec: Any,
    spec_path: Path,
    sweep_dir: Path,
    gpus: str | None,
    worker: bool,
    launcher: str | None,
    as_json: bool,
    poll_s: float,
) -> None:
    from lf_tuner.sweep.engine import Sweep, SweepInterrupted, load_base_config, save_spec_copy
    from lf_tuner.sweep.slots import gpu_slots
    from lf_tuner.sweep.trial import LAUNCHERS

    slots = gpu_slots(gpus, spec.gpus_per_trial)
    if launcher is None:
        launcher = _default_launcher()
        if launcher != "run":
            click.echo(
                "warning: `lf-tuner run` is not installed; trials start `llamafactory-cli train` directly",
                err=True,
            )
    base = load_base_config(spec, spec_path.parent, sweep_dir.absolute())
    sweep_dir.mkdir(parents=True, exist_ok=True)
    save_spec_copy(spec_path, sweep_dir)
    sweep = Sweep(
        spec,
        sweep_dir.absolute(),
        base,
        LAUNCHERS[launcher],
        worker=worker,
        poll_s=poll_s,
        emit=lambda msg: click.echo(msg, err=True),
    )
    where = ", ".join("CPU" if s == "cpu" else f"GPU {s}" for s in slots)
    click.echo(
        f"sweep in {sweep_dir}: {spec.method}, metric {spec.metric.name} ({spec.metric.goal}), slots: {where}",
        err=True,
    )
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        summary = sweep.run(slots)
    except SweepInterrupted:
        raise Stopped(
            f"sweep stopped; running trials were marked failed and queued again. "
            f"Run the same command to continue (`lf-tuner report {sweep_dir}` shows where it stands)"
        ) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(summary.counts.items()))
    click.echo(f"done: {counts}", err=True)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "dir": str(sweep_dir),
                    "counts": summary.counts,
                    "best": None
                    if summary.best_number is None
                    else {
                        "number": summary.best_number,
                        "params": summary.best_params,
                        "value": summary.best_value,
                    },
                }
            )
        )
    if summary.best_number is None:
        raise LfTunerError(
            f"no trial completed; read {sweep_dir}/trial-*/launch.log, or `lf-tuner report {sweep_dir}`"
        )
    click.echo(
        f"best: trial {summary.best_number}, {spec.metric.name} = {summary.best_value:.6g}; "
        f"table: lf-tuner report {sweep_dir}",
        err=True,
    )
