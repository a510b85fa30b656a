"""`lf-tuner validate FILE`: check a llamafactory-cli train config before anything loads."""

from __future__ import annotations

import json
from pathlib import Path

import click

from lf_tuner import config  # its names load on use: the checks need the schema and the data readers
from lf_tuner.errors import ProblemsError


@click.command("validate")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--schema-only", is_flag=True, help="Skip LLaMA-Factory's own parser (it takes seconds).")
@click.option("--json", "as_json", is_flag=True, help="Print the problems as a JSON list on stdout.")
def command(file: Path, schema_only: bool, as_json: bool) -> None:
    """Check FILE as LLaMA-Factory will: keys, types, choices, cross-field rules, the chat template,
    quantization, LoRA target modules, and the datasets in dataset_info.json (paths from the working
    directory, as llamafactory-cli reads them).

    With llamafactory installed, LLaMA-Factory's own parser also checks it (no GPU needed).
    All problems are reported at once, one `key: message` line each; exit code 1 when any.
    """
    cfg = config.load_mapping(file)
    use_parser = not schema_only and config.llamafactory_available()
    problems = config.check_config(cfg, use_llamafactory=use_parser, base_dir=Path.cwd(), files=True)
    if as_json:
        click.echo(json.dumps([{"key": p.key, "message": p.message} for p in problems], indent=1))
        if problems:
            raise SystemExit(1)
        return
    if problems:
        raise ProblemsError(problems, str(file))
    checked = "schema + LLaMA-Factory's parser" if use_parser else "schema"
    click.echo(f"{file}: ok ({checked})", err=True)
