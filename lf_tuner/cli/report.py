"""`lf-tuner report DIR`: the lab-notebook table of a sweep, importance where the trials back it, plots, and
the best configuration as a training YAML."""

from __future__ import annotations

from pathlib import Path

import click

from lf_tuner.errors import LfTunerError


@click.command("report")
@click.argument("sweep_dir", metavar="DIR", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["md", "csv", "json"]),
    default="md",
    show_default=True,
    help="md: stages, table, Pareto front, pruned trials, importance, plot links; csv: the table; json: all of it.",
)
@click.option(
    "--plots/--no-plots",
    default=True,
    show_default=True,
    help="Write loss_curves.png and optuna's history, parallel-coordinate, slice and contour plots under DIR/report/.",
)
@click.option(
    "--best-config",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the best trial's configuration as a training YAML (the base without the sweep's budget caps).",
)
@click.option("--force", is_flag=True, help="Replace an existing --best-config file.")
@click.option(
    "--storage",
    envvar="LF_TUNER_STORAGE",
    help="The study's database URL, when the sweep used one with a password  [env LF_TUNER_STORAGE]",
)
def command(
    sweep_dir: Path, fmt: str, plots: bool, best_config: Path | None, force: bool, storage: str | None
) -> None:
    """Summarise a sweep: stages in order, one row per trial sorted by the metric, the best marked."""
    from lf_tuner.sweep import best_config as render_best
    from lf_tuner.sweep import load_results, to_csv, to_json, to_markdown, write_plots

    results = load_results(sweep_dir, importance=fmt != "csv", storage_url=storage)
    if best_config is not None:
        if best_config.exists() and not force:
            raise LfTunerError(f"{best_config} exists; pass --force to replace it")
        text = render_best(results, sweep_dir, best_config.name)
        try:
            best_config.write_text(text)
        except OSError as exc:
            raise LfTunerError(f"{best_config}: cannot write it ({exc.strerror})") from None
        click.echo(f"wrote {best_config}", err=True)
    written = write_plots(results, sweep_dir, sweep_dir / "report") if plots else []
    for path in written:
        click.echo(f"wrote {path}", err=True)
    if fmt == "json":
        click.echo(to_json(results), nl=False)
    elif fmt == "csv":
        click.echo(to_csv(results), nl=False)
    else:
        click.echo(to_markdown(results, written, base=sweep_dir), nl=False)
