"""`lf-tuner models`: the models lf-tuner knows and where each one's config.json comes from."""

from __future__ import annotations

import json
from collections import Counter

import click
from rich import box
from rich.table import Table

from lf_tuner.cli._common import console, show
from lf_tuner.models import ModelRow, list_models

WHERE = {"catalog": "offline", "cache": "cache", "download": "download"}


def _billions(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e9:.2f}B"


def render_table(rows: list[ModelRow]) -> Table:
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("Hub id", no_wrap=True)
    table.add_column("params", justify="right", no_wrap=True)
    table.add_column("inputs", no_wrap=True)
    table.add_column("template", no_wrap=True)
    table.add_column("config", no_wrap=True)
    for row in rows:
        inputs = "vision" if row.multimodal else "text"
        table.add_row(row.hf_id, _billions(row.params), inputs, row.template or "-", WHERE[row.available])
    return table


def summary(rows: list[ModelRow]) -> str:
    count = Counter(row.available for row in rows)
    return (
        f"{len(rows)} models: {count['catalog']} offline (lf-tuner's catalog), {count['cache']} in your Hugging Face "
        f"cache, {count['download']} download config.json on first use (`lf-tuner estimate --model HUB_ID`, online). "
        "Any model directory with a config.json works too."
    )


@click.command("models")
@click.argument("query", required=False)
@click.option("--json", "as_json", is_flag=True, help="One JSON list on stdout.")
def command(query: str | None, as_json: bool) -> None:
    """List LLaMA-Factory's registered models and lf-tuner's catalog (QUERY filters by name or Hub id).

    "params" is left out for families whose count needs transformers (estimate derives it).
    """
    rows = list_models(query)
    if as_json:
        click.echo(json.dumps([row.as_dict() for row in rows], indent=2))
        return
    if not rows:
        raise click.UsageError(f"no model matches `{query}`; run `lf-tuner models` for the whole list")
    show(render_table(rows))
    console().print(summary(rows), highlight=False)
