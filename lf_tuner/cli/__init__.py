"""The `lf-tuner` command group. Subcommands load lazily so `--help` stays fast."""

from __future__ import annotations

import importlib
from typing import Any

import click

from lf_tuner import __version__

# command name -> module under lf_tuner.cli that defines `command`
COMMANDS: dict[str, str] = {
    "estimate": "estimate",
    "models": "models",
    "cutoff": "cutoff",
    "render": "render",
    "validate": "validate",
    "presets": "presets",
    "run": "run",
    "runs": "runs",
    "doctor": "doctor",
    "sweep": "sweep",
    "report": "report",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if self._load(name) is not None]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._load(cmd_name)

    def _load(self, name: str) -> click.Command | None:
        module_name = COMMANDS.get(name)
        if module_name is None:
            return None
        try:
            module = importlib.import_module(f"lf_tuner.cli.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"lf_tuner.cli.{module_name}":
                return None  # not built yet
            raise
        command: click.Command = module.command
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lf-tuner")
def cli() -> None:
    """Measure before you launch: VRAM estimates, cutoff_len from your data,
    validated LLaMA-Factory configs, guarded launches and sweeps."""


def main(argv: list[str] | None = None) -> Any:
    """Console entry point."""
    return cli.main(args=argv, prog_name="lf-tuner")
