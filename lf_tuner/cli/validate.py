"""`lf-tuner validate FILE`: check a llamafactory-cli train config before anything loads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from lf_tuner.config.files import load_mapping
from lf_tuner.config.validate import llamafactory_available, validate_config, validate_with_llamafactory
from lf_tuner.errors import Problem, ProblemsError


def read_config(path: Path) -> dict[str, Any]:
    """A train config file as a dict; one clear line when it cannot be read."""
    return load_mapping(path)


@click.command("validate")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--schema-only", is_flag=True, help="Skip LLaMA-Factory's own parser (it takes seconds).")
@click.option("--json", "as_json", is_flag=True, help="Print the problems as a JSON list on stdout.")
def command(file: Path, schema_only: bool, as_json: bool) -> None:
    """Check FILE against LLaMA-Factory's arguments: keys, types, choices and cross-field rules.

    With llamafactory installed, LLaMA-Factory's own parser also checks it (no GPU needed).
    All problems are reported at once, one `key: message` line each; exit code 1 when any.
    """
    cfg = read_config(file)
    problems: list[Problem] = validate_config(cfg, base_dir=Path.cwd())
    checked = "schema"
    if not problems and not schema_only and llamafactory_available():
        problems = validate_with_llamafactory(cfg)
        checked = "schema + LLaMA-Factory's parser"
    if as_json:
        click.echo(json.dumps([{"key": p.key, "message": p.message} for p in problems], indent=1))
        if problems:
            raise SystemExit(1)
        return
    if problems:
        raise ProblemsError(problems, str(file))
    click.echo(f"{file}: ok ({checked})", err=True)
