"""The one watcher of a training process, for `lf-tuner run` and for every sweep trial.

`run_child` starts the child in its own session, tees its output to a log file, follows `trainer_log.jsonl`,
passes SIGINT, SIGTERM, SIGHUP and SIGQUIT on to the whole training tree (from the main thread: `StopSignals`),
stops it when the loss or grad_norm turns NaN/inf (or, with a factor, grows past it) or when the caller asks,
and leaves no process behind: the tree is the child's process group plus every descendant seen, those that left
the group with setsid included (`ProcessTree`). One OOM pattern, one log tail, one tree kill. No torch, no click,
no print here.
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

import psutil

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


# What ends a run from outside: Ctrl-C, kill, a closed terminal, Ctrl-\\
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def forwarded_signal(signum: int) -> int:
    """What the training tree gets when lf-tuner receives `signum`: SIGINT stays SIGINT (a KeyboardInterrupt in
    Python), SIGTERM, SIGHUP and SIGQUIT become SIGTERM (a clean stop: no core dump, torchrun stops its
    workers)."""
    return signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


class ProcessTree:
    """A child started in its own session (pid = process group = session id) and every descendant seen so far.

    A descendant that calls setsid leaves the group, so a group signal misses it; `refresh` (at every poll and
    before each signal) remembers each descendant with its start time, so one that lost its parent is still
    found and a reused pid is never signalled.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.known: dict[int, float] = {}  # pid -> create_time
        try:
            self.created: float | None = psutil.Process(pid).create_time()
        except psutil.Error:
            self.created = None

    def refresh(self) -> None:
        try:
            leader = psutil.Process(self.pid)
            if leader.create_time() != self.created:
                return  # gone, and its pid taken by another process
            children = leader.children(recursive=True)
        except psutil.Error:
            return
        for proc in children:
            with contextlib.suppress(psutil.Error):
                self.known.setdefault(proc.pid, proc.create_time())

    def _alive(self, pid: int, created: float) -> psutil.Process | None:
        try:
            proc = psutil.Process(pid)
            if proc.create_time() != created or proc.status() == psutil.STATUS_ZOMBIE:
                return None
        except psutil.Error:
            return None
        return proc

    def outside_group(self) -> list[psutil.Process]:
        """Known descendants, still alive, that are not in the child's process group (they called setsid)."""
        procs = (self._alive(pid, created) for pid, created in list(self.known.items()))
        return [p for p in procs if p is not None and _pgid(p.pid) != self.pid]

    def signal(self, sig: int) -> None:
        """Send `sig` to the process group and to every known descendant outside it."""
        self.refresh()
        _killpg(self.pid, sig)
        for proc in self.outside_group():
            with contextlib.suppress(psutil.Error):
                proc.send_signal(sig)

    def remaining(self) -> list[psutil.Process]:
        """Processes of the tree still alive (zombies do not count): the group's members and known strays."""
        members: list[psutil.Process] = []
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if _pgid(proc.pid) == self.pid and proc.status() != psutil.STATUS_ZOMBIE:
                    members.append(proc)
        return members + self.outside_group()

    def kill(self, wait_s: float = 10.0) -> list[psutil.Process]:
        """SIGKILL whatever is left of the tree and wait (at most `wait_s`) until it is gone; returns what is
        still there then (nothing, unless a process is stuck in the kernel)."""
        self.signal(signal.SIGKILL)
        deadline = time.monotonic() + wait_s
        left = self.remaining()
        while left and time.monotonic() < deadline:
            for proc in left:
                with contextlib.suppress(psutil.Error):
                    proc.send_signal(signal.SIGKILL)
            time.sleep(0.02)
            left = self.remaining()
        return left


class StopSignals:
    """While active (in the main thread; elsewhere it does nothing), SIGINT, SIGTERM, SIGHUP and SIGQUIT do not
    end lf-tuner: the first one is kept in `received`, and each one is passed on (`forwarded_signal`) to the
    tree being watched. Enter it before the child starts and leave it after the run's record is written, so a
    signal at any moment in between stops the run and is recorded."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.tree: ProcessTree | None = None
        self._sent_to: ProcessTree | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
        tree = self.tree
        if tree is not None:
            self._sent_to = tree
            tree.signal(forwarded_signal(signum))

    def attach(self, tree: ProcessTree) -> None:
        """Watch `tree`; a signal that came before it started is passed on now."""
        self.tree = tree
        if self.received is not None and self._sent_to is not tree:
            self._sent_to = tree
            tree.signal(forwarded_signal(self.received))

    def detach(self) -> None:
        self.tree = None


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


@dataclass
class _Output:
    """What the child's output has said so far (its reader thread writes, the watch reads)."""

    tail: deque[str] = field(default_factory=lambda: deque(maxlen=40))  # its last lines
    oom: bool = False
    nan_line: str | None = None  # the first NaN/inf loss the trainer printed, e.g. "loss nan"

    def diverged(self) -> str | None:
        return self.nan_line and f"{self.nan_line} in the training output"


def _pump(stream: IO[str], log: IO[str], seen: _Output, echo: IO[str] | None) -> None:
    for line in iter(stream.readline, ""):
        log.write(line)
        log.flush()
        if echo is not None:
            echo.write(line)
            echo.flush()
        seen.tail.append(line.rstrip("\n"))
        if OOM_PATTERN.search(line):
            seen.oom = True
        if seen.nan_line is None and (m := NAN_LINE_PATTERN.search(line)):
            seen.nan_line = f"{m.group(1)} {m.group(2)}"
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
    signals: StopSignals | None = None,
) -> ChildResult:
    """Start the child in its own session, watch it until it ends, and leave no process of its tree behind.

    `on_start` gets the child's pid (its process group); `should_stop`, asked at every poll, returns a reason
    to stop the child (SIGTERM to the tree, SIGKILL after `grace_s`), kept in `ChildResult.stopped_for`.
    `signals`, entered by the caller, spans several children (`runner.run_with_retries`) and the record written
    after them; without it the watch handles the stop signals itself while the child runs. A child is not
    started once a stop signal has come.
    """
    with contextlib.ExitStack() as stack:
        if signals is None:
            signals = stack.enter_context(StopSignals())
        if signals.received is not None:
            return ChildResult(-signals.received, False, signals.received, None, [], 0.0, [])
        return _watch(
            command,
            signals,
            output_dir=output_dir,
            log_path=log_path,
            stop_on_nan=stop_on_nan,
            divergence_factor=divergence_factor,
            on_progress=on_progress,
            on_start=on_start,
            should_stop=should_stop,
            echo=echo,
            poll_s=poll_s,
            grace_s=grace_s,
            base_env=base_env,
        )


def _watch(
    command: Command,
    signals: StopSignals,
    *,
    output_dir: Path,
    log_path: Path,
    stop_on_nan: bool,
    divergence_factor: float | None,
    on_progress: Progress | None,
    on_start: Callable[[int], None] | None,
    should_stop: Callable[[], str | None] | None,
    echo: IO[str] | None,
    poll_s: float,
    grace_s: float,
    base_env: Mapping[str, str] | None,
) -> ChildResult:
    env = dict(os.environ if base_env is None else base_env)
    env.update(command.env)
    env.setdefault("PYTHONUNBUFFERED", "1")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    trainer_log = TrainerLog(output_dir / TRAINER_LOG)
    seen = _Output()
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
        tree = ProcessTree(proc.pid)
        reader = threading.Thread(target=_pump, args=(proc.stdout, log, seen, echo), daemon=True)
        reader.start()
        stop_sent_at: float | None = None
        received: int | None = None
        try:
            signals.attach(tree)
            if on_start is not None:
                on_start(proc.pid)
            with ProcessGroupPeak(proc.pid) as gpu_peak:
                while True:
                    try:
                        proc.wait(timeout=poll_s)
                        finished = True
                    except subprocess.TimeoutExpired:
                        finished = False
                    tree.refresh()
                    for entry in trainer_log.poll():
                        if on_progress is not None:
                            on_progress(entry)
                        if diverged is None and (found := watch.check(entry)):
                            diverged = found
                    if diverged is None and not finished:
                        diverged = seen.diverged()
                        if diverged is None and trainer_log.entries:
                            diverged = divergence_in_state(output_dir)
                    if finished:
                        received = signals.received  # a signal after the child ended stopped nothing
                        break
                    if stopped_for is None and should_stop is not None:
                        stopped_for = should_stop()
                    if ((diverged and stop_on_nan) or stopped_for) and stop_sent_at is None:
                        tree.signal(signal.SIGTERM)
                        stop_sent_at = time.monotonic()
                    if signals.received is not None and stop_sent_at is None:
                        stop_sent_at = time.monotonic()  # the handler has passed the signal on
                    if stop_sent_at is not None and time.monotonic() - stop_sent_at > grace_s:
                        tree.signal(signal.SIGKILL)
        finally:
            signals.detach()
            # the leader is gone (or the watch failed): the rest of its tree (torchrun workers, dataloaders,
            # anything that left the group) goes too, and lf-tuner waits until it has
            tree.kill()
            proc.wait()
            reader.join(timeout=5)
    if diverged is None:
        diverged = seen.diverged()
    if diverged is None:
        diverged = divergence_in_state(output_dir)
    return ChildResult(
        returncode=proc.returncode,
        oom=seen.oom,
        interrupted_by=received,
        diverged=diverged,
        tail=list(seen.tail),
        runtime_s=time.monotonic() - started,
        trainer_log=trainer_log.entries,
        nvml_peak_bytes=gpu_peak.peak_bytes,
        stopped_for=stopped_for,
    )
