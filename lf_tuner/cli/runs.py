"""`lf-tuner runs`: the runs index; `--calibration` compares estimated with measured peak memory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich import box
from rich.table import Table

from lf_tuner.cli._common import console, show
from lf_tuner.train import STATUSES

if TYPE_CHECKING:
    from lf_tuner.train import IndexedRun


def _num(value: Any, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def runs_table(rows: list[IndexedRun]) -> Table:
    table = Table(box=box.SIMPLE, pad_edge=False, show_edge=False)
    for name, justify in (
        ("id", "right"),
        ("started", "left"),
        ("status", "left"),
        ("model", "left"),
        ("gpus", "left"),
        ("GiB est/peak", "right"),
        ("loss", "right"),
        ("time", "right"),
        ("output_dir", "left"),
    ):
        if name == "output_dir":
            table.add_column(name, overflow="fold", min_width=10)
        else:
            table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for r in rows:
        table.add_row(
            str(r["id"]),
            r["started_at"][5:16].replace("T", " "),
            r["status"],
            Path(r["model"] or "-").name,
            r["gpus"],
            f"{_num(r['estimated_peak_gib'], '{:.2f}')}/{_num(r['measured_peak_gib'], '{:.2f}')}",
            _num(r["final_train_loss"], "{:.4f}"),
            _num(r["runtime_s"], "{:.0f}s"),
            r["output_dir"],
        )
    return table


def calibration(rows: list[IndexedRun]) -> tuple[Table, str]:
    """Per run: estimate, measurement, error; and one summary line."""
    from lf_tuner.train import peak_error

    table = Table(box=box.SIMPLE, pad_edge=False, show_edge=False)
    for name in ("id", "model", "gpus", "est GiB", "peak GiB", "error"):
        table.add_column(name, justify="right" if name in ("id", "est GiB", "peak GiB", "error") else "left")
    errors = []
    for r in rows:
        error = peak_error(r)
        errors.append(error)
        table.add_row(
            str(r["id"]),
            Path(r["model"] or "-").name,
            r["gpus"],
            f"{r['estimated_peak_gib']:.2f}",
            f"{r['measured_peak_gib']:.2f}",
            f"{error:+.1%}",
        )
    mean_abs = sum(abs(e) for e in errors) / len(errors)
    within = sum(abs(e) <= 0.10 for e in errors)
    over = sum(e >= 0 for e in errors)
    summary = (
        f"{len(errors)} run(s): mean |error| {mean_abs:.1%}; {within} within ±10%; "
        f"{over} estimated at or above the measured peak"
    )
    return table, summary


@click.command("runs")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="Newest N runs.")
@click.option("--status", type=click.Choice(STATUSES), help="Only runs that ended this way.")
@click.option(
    "--calibration",
    "calibrate",
    is_flag=True,
    help="Estimated against measured peak memory, for runs that have both.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON list on stdout.")
def command(limit: int, status: str | None, calibrate: bool, as_json: bool) -> None:
    """List the runs started with `lf-tuner run` (index under LF_TUNER_HOME)."""
    from lf_tuner.train import list_runs, peak_error

    rows = list_runs(limit=None if calibrate else limit, status=status, calibration=calibrate)
    if as_json:
        shown = [{**r, "error": peak_error(r)} if calibrate else r for r in rows]
        click.echo(json.dumps(shown, indent=2))
        return
    out = console()
    if not rows:
        what = (
            "no runs with both an estimated and a measured peak (GPU runs record it)"
            if calibrate
            else "no runs yet"
        )
        click.echo(f"{what}; start one with `lf-tuner run CONFIG.yaml`", err=True)
        return
    if calibrate:
        table, summary = calibration(rows)
        show(table)
        out.print(summary)
    else:
        show(runs_table(rows))
