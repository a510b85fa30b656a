"""Processes in tests: whether one is gone, /proc's view of the others, and `lf-tuner run` on the stand-in
signalled once its whole tree is up (tests/test_run_cli.py asserts on it, scripts/bad_inputs.py counts it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def gone(pid: int) -> bool:
    """The process has ended (a zombie waiting for its parent counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except (OSError, IndexError):
        return True


def proc_stats() -> Iterator[tuple[int, list[str]]]:
    """(pid, the fields of /proc/PID/stat after the command name: state, ppid, pgrp, ...) of every process."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        yield int(stat.parent.name), fields


@dataclass
class Signalled:
    """How `lf-tuner run` ended after a stop signal."""

    returncode: int
    stderr: str
    pids: list[int]  # the stand-in's tree once up: itself, a grandchild in its group, one that called setsid
    left_group: bool  # the third had left the group (setsid) when the signal was sent
    left: list[int]  # processes of that tree still there after lf-tuner exited (killed since)
    record: dict[str, Any]  # the run record ({} when none was written)


def signal_stub_run(project: Path, env: Mapping[str, str], sig: int, timeout: float = 120) -> Signalled:
    """`lf-tuner run train.yaml` in `project` with the stand-in (first on env's PATH) sleeping, `sig` sent once
    the stand-in has written out/stub.pids (its tree is up: lf-tuner handles the signals from before the child
    starts, so this waits on that file, not on time). Whatever the outcome, nothing of the tree is left running.
    `timeout` only guards against a hang."""
    env = {**env, "LF_STUB_MODE": "sleep", "LF_STUB_SETSID": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lf_tuner", "run", "train.yaml"],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    pids_file = project / "out" / "stub.pids"
    deadline = time.monotonic() + timeout
    while not pids_file.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = [int(p) for p in pids_file.read_text().split()] if pids_file.exists() else []
    left_group = len(pids) == 3 and os.getsid(pids[2]) == pids[2]
    proc.send_signal(sig)
    try:
        _, stderr = proc.communicate(timeout=timeout)
    finally:
        left = [p for p in pids if not gone(p)]
        for pid in left:
            os.kill(pid, signal.SIGKILL)
    record_path = project / "out" / "lf-tuner-run.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    return Signalled(proc.returncode, stderr, pids, left_group, left, record)
