"""The one watcher of a training process, for `lf-tuner run` and for every sweep trial.

`run_child` starts the child in its own session, tees its output to a log file, follows `trainer_log.jsonl`,
forwards SIGINT/SIGTERM to the whole group (from the main thread), stops it when the loss or grad_norm turns
NaN/inf (or, with a factor, grows past it) or when the caller asks, and leaves no process of its group behind.
One OOM pattern, one log tail, one group kill. No torch, no click, no print here.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

from lf_tuner.errors import LfTunerError
from lf_tuner.train.command import Command
from lf_tuner.train.gpus import ProcessGroupPeak

LOG_NAME = "lf-tuner.log"
TRAINER_LOG = "trainer_log.jsonl"
TRAINER_STATE = "trainer_state.json"

# PyTorch / CUDA allocator messages for a device out of memory
OOM_PATTERN = re.compile(
    r"CUDA out of memory|CUDA error: out of memory|OutOfMemoryError|CUBLAS_STATUS_ALLOC_FAILED"
    r"|HIP out of memory|NPU out of memory"
)
# HF Trainer prints its log dicts: {'loss': 'nan', 'grad_norm': 'inf', ...} (transformers 5 quotes the values)
NAN_LINE_PATTERN = re.compile(r"'(loss|grad_norm|eval_loss)': '?(nan|-?inf)'?", re.IGNORECASE)


def _finite_or_none(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _is_bad(value: Any) -> bool:
    number = _finite_or_none(value)
    return number is not None and not math.isfinite(number)


@dataclass
class TrainerLog:
    """What `trainer_log.jsonl` has said so far (read incrementally)."""

    path: Path
    entries: list[dict[str, Any]] = field(default_factory=list)
    _offset: int = 0
    _partial: bytes = b""

    def poll(self) -> list[dict[str, Any]]:
        """New complete entries since the last call."""
        try:
            if self.path.stat().st_size < self._offset:  # rewritten from the start (overwrite_output_dir)
                self._offset, self._partial = 0, b""
                self.entries.clear()
            with self.path.open("rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
                self._offset = fh.tell()
        except OSError:
            return []
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        if self._partial.strip() and _parse_entry(self._partial) is not None:
            lines.append(self._partial)  # LLaMA-Factory's last line may lack its newline
            self._partial = b""
        new = [entry for line in lines if (entry := _parse_entry(line)) is not None]
        self.entries.extend(new)
        return new


def _parse_entry(line: bytes) -> dict[str, Any] | None:
    try:
        entry = json.loads(line.decode("utf-8", errors="replace"))
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


class Divergence:
    """Whether a run has diverged, entry by entry: a NaN/inf loss, grad_norm or eval_loss, or (with `factor`)
    a training loss above `factor` x the first finite loss seen."""

    def __init__(self, factor: float | None = None, baseline: float | None = None) -> None:
        self.factor = factor
        self.baseline = baseline

    def check(self, entry: Mapping[str, Any]) -> str | None:
        step = entry.get("current_steps", entry.get("step", "?"))
        for key in ("loss", "grad_norm", "eval_loss"):
            if _is_bad(entry.get(key)):
                return f"{key} {entry[key]} at step {step}"
        loss = _finite_or_none(entry.get("loss"))
        if self.factor is None or loss is None:
            return None
        if self.baseline is None:
            self.baseline = loss
        elif self.baseline > 0 and loss > self.factor * self.baseline:
            return f"loss {loss:.4g} at step {step} is above {self.factor:g} x its first value {self.baseline:.4g}"
        return None

    def first(self, entries: Iterable[Mapping[str, Any]]) -> str | None:
        """The first divergence among `entries`, or None."""
        for entry in entries:
            if found := self.check(entry):
                return found
        return None


def divergence_in_entry(entry: Mapping[str, Any]) -> str | None:
    """'loss nan at step 5' when a trainer log or log_history entry holds a NaN/inf loss or grad_norm."""
    return Divergence().check(entry)


def divergence_in_state(output_dir: Path) -> str | None:
    """Look through trainer_state.json files (top level and checkpoints) for NaN/inf values."""
    candidates = [output_dir / TRAINER_STATE, *sorted(output_dir.glob(f"checkpoint-*/{TRAINER_STATE}"))]
    for path in candidates:
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for entry in state.get("log_history", []) if isinstance(state, dict) else []:
            if isinstance(entry, dict) and (found := divergence_in_entry(entry)):
                return found
    return None


@dataclass
class ChildResult:
    """How one child process ended."""

    returncode: int
    oom: bool
    interrupted_by: int | None  # signal number forwarded to the child
    diverged: str | None  # what was NaN/inf
    tail: list[str]  # last lines of output
    runtime_s: float
    trainer_log: list[dict[str, Any]]
    nvml_peak_bytes: int | None = None  # the child's process group, per GPU, as nvidia-smi shows it
    stopped_for: str | None = None  # why the caller's `should_stop` stopped it


Progress = Callable[[dict[str, Any]], None]


class _SignalForwarder:
    """While active, SIGINT/SIGTERM received by lf-tuner go to the child's whole process group."""

    def __init__(self, pgid: int) -> None:
        self.pgid = pgid
        self.received: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _SignalForwarder:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
        _killpg(self.pgid, signum)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def process_start(pid: int) -> str | None:
    """The start time of a live process (tells a reused pid apart), or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return "?"
        return "?"


def kill_group(pgid: int, grace_s: float = 5.0) -> None:
    """SIGTERM a process group that is not our child (a leftover of an earlier process), SIGKILL it after
    grace_s if its leader is still there."""
    _killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and process_start(pgid) is not None:
        time.sleep(0.1)
    _killpg(pgid, signal.SIGKILL)


def _pump(
    stream: IO[str], log: IO[str], tail: deque[str], flags: dict[str, Any], echo: IO[str] | None
) -> None:
    for line in iter(stream.readline, ""):
        log.write(line)
        log.flush()
        if echo is not None:
            echo.write(line)
            echo.flush()
        tail.append(line.rstrip("\n"))
        if OOM_PATTERN.search(line):
            flags["oom"] = True
        if flags.get("nan_line") is None and (m := NAN_LINE_PATTERN.search(line)):
            flags["nan_line"] = f"{m.group(1)} {m.group(2)}"
    stream.close()


def run_child(
    command: Command,
    *,
    output_dir: Path,
    log_path: Path,
    stop_on_nan: bool = True,
    divergence_factor: float | None = None,
    on_progress: Progress | None = None,
    on_start: Callable[[int], None] | None = None,
    should_stop: Callable[[], str | None] | None = None,
    echo: IO[str] | None = None,
    poll_s: float = 0.5,
    grace_s: float = 30.0,
    base_env: Mapping[str, str] | None = None,
) -> ChildResult:
    """Start the child in its own session, watch it until it ends, and leave no process of its group behind.

    `on_start` gets the child's pid (its process group); `should_stop`, asked at every poll, returns a reason
    to stop the child (SIGTERM to the group, SIGKILL after `grace_s`), kept in `ChildResult.stopped_for`.
    """
    env = dict(os.environ if base_env is None else base_env)
    env.update(command.env)
    env.setdefault("PYTHONUNBUFFERED", "1")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    trainer_log = TrainerLog(output_dir / TRAINER_LOG)
    tail: deque[str] = deque(maxlen=40)
    flags: dict[str, Any] = {"oom": False, "nan_line": None}
    diverged: str | None = None
    stopped_for: str | None = None
    watch = Divergence(divergence_factor)
    started = time.monotonic()
    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"# lf-tuner: {' '.join(command.argv)}\n")
        log.flush()
        try:
            proc = subprocess.Popen(
                command.argv,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                errors="replace",
                bufsize=1,
                start_new_session=True,
            )
        except OSError as exc:
            raise LfTunerError(f"llamafactory-cli: cannot start {command.argv[0]!r}: {exc.strerror}") from exc
        assert proc.stdout is not None
        if on_start is not None:
            on_start(proc.pid)
        reader = threading.Thread(target=_pump, args=(proc.stdout, log, tail, flags, echo), daemon=True)
        reader.start()
        stop_sent_at: float | None = None
        with _SignalForwarder(proc.pid) as forwarder, ProcessGroupPeak(proc.pid) as gpu_peak:
            while True:
                try:
                    proc.wait(timeout=poll_s)
                    finished = True
                except subprocess.TimeoutExpired:
                    finished = False
                for entry in trainer_log.poll():
                    if on_progress is not None:
                        on_progress(entry)
                    if diverged is None and (found := watch.check(entry)):
                        diverged = found
                if diverged is None and not finished:
                    diverged = flags["nan_line"] and f"{flags['nan_line']} in the training output"
                    if diverged is None and trainer_log.entries:
                        diverged = divergence_in_state(output_dir)
                if finished:
                    break
                if stopped_for is None and should_stop is not None:
                    stopped_for = should_stop()
                if ((diverged and stop_on_nan) or stopped_for) and stop_sent_at is None:
                    _killpg(proc.pid, signal.SIGTERM)
                    stop_sent_at = time.monotonic()
                stopping_since = stop_sent_at
                if forwarder.received is not None and stopping_since is None:
                    stop_sent_at = stopping_since = time.monotonic()
                if stopping_since is not None and time.monotonic() - stopping_since > grace_s:
                    _killpg(proc.pid, signal.SIGKILL)
            # the leader is gone; anything left in its group (torchrun workers, dataloaders) goes too
            _killpg(proc.pid, signal.SIGKILL)
        reader.join(timeout=5)
        received = forwarder.received
    if diverged is None:
        diverged = flags["nan_line"] and f"{flags['nan_line']} in the training output"
    if diverged is None:
        diverged = divergence_in_state(output_dir)
    return ChildResult(
        returncode=proc.returncode,
        oom=bool(flags["oom"]),
        interrupted_by=received,
        diverged=diverged,
        tail=list(tail),
        runtime_s=time.monotonic() - started,
        trainer_log=trainer_log.entries,
        nvml_peak_bytes=gpu_peak.peak_bytes,
        stopped_for=stopped_for,
    )
