"""`lf-tuner presets ls|show|cp`: list, print and copy the shipped presets."""

from __future__ import annotations

import json
from pathlib import Path

import click

from lf_tuner import config  # its names load on use: presets need pydantic, which --help must not load
from lf_tuner.errors import LfTunerError


@click.group("presets")
def command() -> None:
    """List, show and copy training presets (use one with `lf-tuner render --preset NAME`)."""


@command.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list on stdout.")
def ls_cmd(as_json: bool) -> None:
    """List the shipped presets."""
    rows = [
        (name, config.parse_preset(config.builtin_text(name), f"preset {name}").description)
        for name in config.builtin_names()
    ]
    if as_json:
        click.echo(json.dumps([{"name": n, "description": d} for n, d in rows], indent=1))
        return
    width = max(len(n) for n, _ in rows)
    click.echo(f"{'NAME'.ljust(width)}  DESCRIPTION")
    for name, description in rows:
        click.echo(f"{name.ljust(width)}  {description}")


@command.command("show")
@click.argument("name")
def show_cmd(name: str) -> None:
    """Print a preset's file (comments included)."""
    click.echo(config.builtin_text(name), nl=False)


@command.command("cp")
@click.argument("name")
@click.argument("dest", type=click.Path(dir_okay=True, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite DEST if it exists.")
def cp_cmd(name: str, dest: Path, force: bool) -> None:
    """Copy preset NAME to DEST (a file, or a directory to hold NAME.yaml) to edit it."""
    text = config.builtin_text(name)
    target = dest / f"{name}.yaml" if dest.is_dir() else dest
    if target.exists() and not force:
        raise LfTunerError(f"{target} exists; pass --force to overwrite it or choose another DEST")
    if not target.parent.is_dir():
        raise LfTunerError(f"{target.parent} is not a directory; create it first")
    target.write_text(text, encoding="utf-8")
    click.echo(f"copied {name} to {target}; use it with `lf-tuner render --preset {target}`", err=True)
