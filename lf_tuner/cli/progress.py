"""Training progress for people, from `trainer_log.jsonl` entries: a rich bar on a terminal, lines otherwise."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import IO, Any


def describe_entry(entry: Mapping[str, Any]) -> str:
    """'loss 2.2500  lr 1.00e-04  eta 0:01:02  512 tok/s' for whatever the entry holds."""
    parts = []
    for key, label, fmt in (
        ("loss", "loss", "{:.4f}"),
        ("eval_loss", "eval_loss", "{:.4f}"),
        ("lr", "lr", "{:.2e}"),
    ):
        if isinstance(entry.get(key), int | float):
            parts.append(f"{label} {fmt.format(entry[key])}")
    if entry.get("remaining_time"):
        parts.append(f"eta {entry['remaining_time']}")
    if isinstance(entry.get("throughput"), int | float):
        parts.append(f"{entry['throughput']:.0f} tok/s")
    return "  ".join(parts)


class ProgressView:
    """Step of total, loss, learning rate, ETA and tokens/s on `stream`: a bar if it is a terminal, else a line
    per entry. Use as a context manager and pass `update` as `launch.run_child`'s `on_progress`."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.bar: Any = None
        self.task: Any = None
        if stream.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self.bar = Progress(
                TextColumn("train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                console=Console(file=stream),
                transient=False,
            )

    def __enter__(self) -> ProgressView:
        if self.bar is not None:
            self.bar.start()
            self.task = self.bar.add_task("train", total=None, info="loading")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            with contextlib.suppress(OSError):  # the terminal is gone (SIGHUP): the run still gets its record
                self.bar.stop()

    def update(self, entry: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            self._show(entry)

    def _show(self, entry: dict[str, Any]) -> None:
        info = describe_entry(entry)
        if self.bar is not None:
            self.bar.update(
                self.task, completed=entry.get("current_steps", 0), total=entry.get("total_steps"), info=info
            )
        else:
            self.stream.write(
                f"step {entry.get('current_steps', '?')}/{entry.get('total_steps', '?')}  {info}\n"
            )
            self.stream.flush()
