"""`lf-tuner report DIR`: the lab-notebook table of a sweep, parameter importance and plots."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("report")
@click.argument("sweep_dir", metavar="DIR", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["md", "csv", "json"]),
    default="md",
    show_default=True,
    help="md: the table with importance and plot links; csv: the table; json: trials and best.",
)
@click.option(
    "--plots/--no-plots",
    default=True,
    show_default=True,
    help="Write loss_curves.png and metric_vs_<param>.png under DIR/report/.",
)
def command(sweep_dir: Path, fmt: str, plots: bool) -> None:
    """Summarise a sweep: one row per trial, sorted by the metric, the best marked."""
    from lf_tuner.sweep.report import load_results, to_csv, to_json, to_markdown, write_plots

    results = load_results(sweep_dir, importance=fmt != "csv")
    written = write_plots(results, sweep_dir, sweep_dir / "report") if plots else []
    for path in written:
        click.echo(f"wrote {path}", err=True)
    if fmt == "json":
        click.echo(to_json(results), nl=False)
    elif fmt == "csv":
        click.echo(to_csv(results), nl=False)
    else:
        click.echo(to_markdown(results, written, base=sweep_dir), nl=False)
