"""`lf-tuner models`: the catalog of known architectures with their parameter counts."""

from __future__ import annotations

import json

import click
from rich import box
from rich.table import Table

from lf_tuner.cli._common import console, show
from lf_tuner.models.catalog import CATALOG


def _billions(n: int) -> str:
    return f"{n / 1e9:.2f}B"


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="One JSON list on stdout.")
def command(as_json: bool) -> None:
    """List the built-in model catalog (any local model directory with config.json works too)."""
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "name": a.name,
                        "hf_id": a.hf_id,
                        "model_type": a.model_type,
                        "params": a.total_params,
                        "layers": a.num_layers,
                        "hidden_size": a.hidden_size,
                        "vocab_size": a.vocab_size,
                        "max_positions": a.max_positions,
                        "template": a.template,
                        "aliases": list(a.aliases),
                    }
                    for a in CATALOG
                ],
                indent=2,
            )
        )
        return
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("model", "params", "layers", "hidden", "heads/kv", "vocab", "context", "template"):
        table.add_column(column, justify="left" if column in ("model", "template") else "right", no_wrap=True)
    for a in CATALOG:
        experts = f" ({a.experts_per_token}/{a.num_experts} experts)" if a.is_moe else ""
        table.add_row(
            a.name + experts,
            _billions(a.total_params),
            str(a.num_layers),
            str(a.hidden_size),
            f"{a.num_heads}/{a.num_kv_heads}",
            str(a.vocab_size),
            str(a.max_positions),
            a.template,
        )
    show(table)
    console().print("Any model directory with a config.json works too: lf-tuner estimate --model ./my-model")
