"""The `lf-tuner` command group. Subcommands load lazily so `--help` stays fast."""

from __future__ import annotations

import errno
import functools
import importlib
from collections.abc import Callable
from typing import Any

import click

from lf_tuner import __version__
from lf_tuner.errors import BadValue, DoesNotFit, LfTunerError

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


def _click_error(exc: LfTunerError) -> click.ClickException:
    """The one place where the core's errors become click's messages and exit codes."""
    if isinstance(exc, BadValue):
        return click.BadParameter(exc.message, param_hint=exc.param)
    if isinstance(exc, DoesNotFit):
        return _NoFitError(exc.message)
    return _ConfigError(exc.message)


class _ConfigError(click.ClickException):
    exit_code = LfTunerError.exit_code


class _NoFitError(click.ClickException):
    exit_code = DoesNotFit.exit_code


# What to do about a file system error the core did not foresee, by errno
_OS_FIXES: dict[int, str] = {
    errno.EACCES: "check its permissions, or choose a path you can write",
    errno.EPERM: "check its permissions, or choose a path you can write",
    errno.EROFS: "the file system is read-only; choose another path",
    errno.ENOSPC: "the disk is full; free some space and run it again",
    errno.EDQUOT: "the disk quota is used up; free some space and run it again",
    errno.EISDIR: "it is a folder; give a file path",
    errno.ENOTDIR: "a part of that path is a file, not a folder; choose another path",
    errno.ENOENT: "it (or its folder) does not exist; check the path",
    errno.EEXIST: "it is already there; choose another path",
    errno.ENAMETOOLONG: "the name is too long; choose a shorter path",
}


def _os_error(exc: OSError) -> click.ClickException:
    """A file system error as one line naming the path and the fix (the last resort: no traceback)."""
    where = exc.filename if exc.filename is not None else ""
    if exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    what = exc.strerror or type(exc).__name__
    fix = _OS_FIXES.get(exc.errno or -1, "check the path and try again")
    return _ConfigError(f"{where}: {what}; {fix}" if where else f"{what}; {fix}")


def _mapping_errors(callback: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(callback)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return callback(*args, **kwargs)
        except LfTunerError as exc:
            raise _click_error(exc) from None
        except OSError as exc:
            if isinstance(exc, BrokenPipeError) or exc.errno == errno.EPIPE:
                raise  # click's own handling: the reader went away (`| head`)
            raise _os_error(exc) from None

    return wrapper


def _map_errors(command: click.Command) -> click.Command:
    """Wrap the command's callbacks (and its subcommands') so core errors reach the user as click errors.

    The callback runs inside click's own context, so a bad value is shown with the command's usage line.
    """
    if command.callback is not None and not getattr(command.callback, "__wrapped__", None):
        command.callback = _mapping_errors(command.callback)
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _map_errors(sub)
    return command


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._load(cmd_name)

    def _load(self, name: str) -> click.Command | None:
        module_name = COMMANDS.get(name)
        if module_name is None:
            return None
        module = importlib.import_module(f"lf_tuner.cli.{module_name}")
        command: click.Command = module.command
        return _map_errors(command)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lf-tuner")
def cli() -> None:
    """Measure before you launch: VRAM estimates, cutoff_len from your data,
    validated LLaMA-Factory configs, guarded launches and sweeps."""


def main(argv: list[str] | None = None) -> Any:
    """Console entry point."""
    return cli.main(args=argv, prog_name="lf-tuner")
