"""Launching `llamafactory-cli train`: a pure argv/env builder, and the runner that watches the child.

`build_command` decides everything about the child process (argv and the environment variables lf-tuner sets);
`run_child` starts it in its own process group, tees its output to a log file, follows `trainer_log.jsonl`,
forwards SIGINT/SIGTERM to the whole group and stops it when the loss or grad_norm turns NaN/inf.
No torch, no click, no print here.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

from lf_tuner.errors import LfTunerError
from lf_tuner.gpus import ProcessGroupPeak

DEFAULT_MASTER_PORT = 29500
LOG_NAME = "lf-tuner.log"
TRAINER_LOG = "trainer_log.jsonl"
TRAINER_STATE = "trainer_state.json"

# PyTorch / CUDA allocator messages for a device out of memory
OOM_PATTERN = re.compile(
    r"CUDA out of memory|OutOfMemoryError|CUBLAS_STATUS_ALLOC_FAILED|HIP out of memory|NPU out of memory"
)
# HF Trainer prints its log dicts: {'loss': 'nan', 'grad_norm': 'inf', ...} (transformers 5 quotes the values)
NAN_LINE_PATTERN = re.compile(r"'(loss|grad_norm|eval_loss)': '?(nan|-?inf)'?", re.IGNORECASE)


@dataclass(frozen=True)
class Command:
    """What to start: the argv (never through a shell) and the variables set on top of the caller's env."""

    argv: list[str]
    env: dict[str, str]


def uses_torchrun(*, num_gpus: int, deepspeed: bool, nnodes: int, ray: bool) -> bool:
    """Whether LLaMA-Factory's launcher will re-launch itself through torchrun."""
    if ray:
        return False
    return num_gpus > 1 or deepspeed or nnodes > 1


def build_command(
    config_path: str,
    *,
    cli: str = "llamafactory-cli",
    gpus: Sequence[int] | None = None,
    cpu: bool = False,
    deepspeed: bool = False,
    nnodes: int = 1,
    node_rank: int = 0,
    master_addr: str | None = None,
    master_port: int | None = None,
    ray_workers: int | None = None,
    record_vram: bool = True,
) -> Command:
    """The argv and environment for one `llamafactory-cli train` process on this node.

    `gpus` are NVML indices (None: leave CUDA_VISIBLE_DEVICES alone); `cpu` hides every GPU. LLaMA-Factory's
    torchrun relaunch joins its arguments with spaces and splits them again, so a config path with whitespace is
    refused whenever torchrun is used (stage a copy elsewhere first).
    """
    if nnodes < 1:
        raise LfTunerError(f"nnodes: must be at least 1, got {nnodes}")
    if not 0 <= node_rank < nnodes:
        raise LfTunerError(f"node_rank: must be in 0..{nnodes - 1} for {nnodes} node(s), got {node_rank}")
    if ray_workers is not None and ray_workers < 1:
        raise LfTunerError(f"ray_num_workers: must be at least 1, got {ray_workers}")
    if ray_workers is not None and nnodes > 1:
        raise LfTunerError(
            "ray: --ray and --nnodes exclude each other; Ray places workers across its own cluster"
        )
    if nnodes > 1 and not master_addr:
        raise LfTunerError("master_addr: several nodes need --master-addr (the address of node rank 0)")
    if cpu and gpus:
        raise LfTunerError("use_cpu: a CPU run cannot also select GPUs; drop --gpus or --cpu")

    num_gpus = 0 if cpu else len(gpus or [])
    torchrun = uses_torchrun(
        num_gpus=num_gpus, deepspeed=deepspeed, nnodes=nnodes, ray=ray_workers is not None
    )
    if torchrun and re.search(r"\s", config_path):
        raise LfTunerError(
            f"config_path: {config_path!r} contains whitespace, and LLaMA-Factory's torchrun relaunch splits "
            "arguments on spaces; use a path without spaces"
        )

    argv = [cli, "train", config_path]
    env: dict[str, str] = {}
    if cpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    elif gpus is not None:
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # NVML numbers GPUs by PCI bus; CUDA by speed unless told
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in gpus)
    if torchrun:
        env["FORCE_TORCHRUN"] = "1"
        if num_gpus:
            env["NPROC_PER_NODE"] = str(num_gpus)
    if nnodes > 1:
        assert master_addr is not None
        env["NNODES"] = str(nnodes)
        env["NODE_RANK"] = str(node_rank)
        env["MASTER_ADDR"] = master_addr
        env["MASTER_PORT"] = str(master_port or DEFAULT_MASTER_PORT)
    elif master_port is not None and torchrun:
        env["MASTER_PORT"] = str(master_port)
    if ray_workers is not None:
        env["USE_RAY"] = "1"
        argv.append(f"ray_num_workers={ray_workers}")
    if record_vram:
        env["RECORD_VRAM"] = "1"
    return Command(argv=argv, env=env)


def staged_path(kept: Path, *, torchrun: bool) -> Path:
    """The config path the child is given: `kept`, or a path in a new temporary directory when torchrun would
    split `kept` on its whitespace (`write_config` puts a copy there)."""
    if torchrun and any(c.isspace() for c in str(kept.absolute())):
        return Path(tempfile.mkdtemp(prefix="lf-tuner-")) / "config.yaml"
    return kept


def write_config(cfg: Mapping[str, Any], kept: Path, staged: Path | None = None) -> None:
    """Write the training config as YAML to `kept` (creating its directory) and copy it to `staged`."""
    import yaml

    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_text(yaml.safe_dump(dict(cfg), sort_keys=False, allow_unicode=True), encoding="utf-8")
    if staged is not None and staged != kept:
        shutil.copyfile(kept, staged)


# ---------------------------------------------------------------------------------------------- watching


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


def divergence_in_entry(entry: Mapping[str, Any]) -> str | None:
    """'loss nan at step 5' when a trainer log or log_history entry holds a NaN/inf loss or grad_norm."""
    for key in ("loss", "grad_norm", "eval_loss"):
        if _is_bad(entry.get(key)):
            step = entry.get("current_steps", entry.get("step", "?"))
            return f"{key} {entry[key]} at step {step}"
    return None


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
    on_progress: Progress | None = None,
    echo: IO[str] | None = None,
    poll_s: float = 0.5,
    grace_s: float = 30.0,
    base_env: Mapping[str, str] | None = None,
) -> ChildResult:
    """Start the child in its own session, watch it until it ends, and leave no process of its group behind."""
    env = dict(os.environ if base_env is None else base_env)
    env.update(command.env)
    env.setdefault("PYTHONUNBUFFERED", "1")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    trainer_log = TrainerLog(output_dir / TRAINER_LOG)
    tail: deque[str] = deque(maxlen=40)
    flags: dict[str, Any] = {"oom": False, "nan_line": None}
    diverged: str | None = None
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
                    if diverged is None and (found := divergence_in_entry(entry)):
                        diverged = found
                if diverged is None and not finished:
                    diverged = flags["nan_line"] and f"{flags['nan_line']} in the training output"
                    if diverged is None and trainer_log.entries:
                        diverged = divergence_in_state(output_dir)
                if finished:
                    break
                if diverged and stop_on_nan and stop_sent_at is None:
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
    )


# --------------------------------------------------------------------------------------------- preflight


def local_problems(cfg: Mapping[str, Any], *, cwd: Path | None = None) -> list[str]:
    """`key: message` lines for what the config points at but is not there (model, datasets, DeepSpeed file).

    LLaMA-Factory resolves relative paths against the working directory, so these checks do too.
    """
    base = cwd or Path.cwd()
    problems: list[str] = []
    model = cfg.get("model_name_or_path")
    if not model:
        problems.append("model_name_or_path: missing; set it to a model directory or a Hugging Face id")
    else:
        text = str(model)
        path = Path(text).expanduser()
        path = path if path.is_absolute() else base / path
        looks_local = text.startswith((".", "/", "~")) or text.count("/") != 1
        if looks_local and not path.exists():
            problems.append(
                f"model_name_or_path: {text} does not exist; point it at a model directory or a hub id"
            )
        elif path.is_dir() and not (path / "config.json").is_file():
            problems.append(
                f"model_name_or_path: {text} has no config.json; is it a Hugging Face model directory?"
            )
    problems.extend(_dataset_problems(cfg, base))
    deepspeed = cfg.get("deepspeed")
    if isinstance(deepspeed, str) and deepspeed:
        ds_path = Path(deepspeed).expanduser()
        ds_path = ds_path if ds_path.is_absolute() else base / ds_path
        if not ds_path.is_file():
            problems.append(
                f"deepspeed: {deepspeed} does not exist; `lf-tuner render` writes the DeepSpeed JSON"
            )
    if cfg.get("use_cpu") and (cfg.get("bf16") or cfg.get("fp16") or cfg.get("pure_bf16")):
        problems.append(
            "bf16: mixed precision needs a GPU; set bf16: false (and fp16: false) with use_cpu: true"
        )
    return problems


def _dataset_problems(cfg: Mapping[str, Any], base: Path) -> list[str]:
    names: list[tuple[str, str]] = []
    for key in ("dataset", "eval_dataset"):
        value = cfg.get(key)
        items = value if isinstance(value, list) else str(value).split(",") if value else []
        names.extend((key, str(item).strip()) for item in items if str(item).strip())
    if not cfg.get("dataset") and cfg.get("do_train", True):
        return ["dataset: missing; name the dataset(s) registered in dataset_info.json"]
    dataset_dir = str(cfg.get("dataset_dir", "data"))
    if dataset_dir == "ONLINE" or dataset_dir.startswith("REMOTE:"):
        return []
    directory = Path(dataset_dir).expanduser()
    directory = directory if directory.is_absolute() else base / directory
    info_path = directory / "dataset_info.json"
    if not info_path.is_file():
        return [f"dataset_dir: {info_path} does not exist; register your data there (see `lf-tuner render`)"]
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return [f"dataset_dir: {info_path} is not valid JSON ({exc})"]
    if not isinstance(info, dict):
        return [f"dataset_dir: {info_path} must map dataset names to their description"]
    problems: list[str] = []
    from lf_tuner.errors import did_you_mean

    for key, name in names:
        entry = info.get(name)
        if entry is None:
            problems.append(
                f"{key}: `{name}` is not in {info_path};{did_you_mean(name, info) or ' add it there'}"
            )
            continue
        if not isinstance(entry, dict):
            problems.append(f"{key}: `{name}` in {info_path} must be a mapping with file_name or hf_hub_url")
            continue
        remote = any(
            entry.get(k) for k in ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")
        )
        file_name = entry.get("file_name")
        if not remote and file_name and not (directory / str(file_name)).exists():
            problems.append(f"{key}: `{name}` points at {directory / str(file_name)}, which does not exist")
    return problems


OutputState = str  # "empty" | "checkpoint" | "nonempty"


def output_dir_state(output_dir: Path, *, ignore: Sequence[Path] = ()) -> OutputState:
    """'empty' (or missing), 'checkpoint' (holds checkpoint-*), or 'nonempty'."""
    if not output_dir.is_dir():
        return "empty"
    ignored = {p.resolve() for p in ignore}
    entries = [p for p in output_dir.iterdir() if p.resolve() not in ignored]
    if not entries:
        return "empty"
    if any(p.is_dir() and p.name.startswith("checkpoint-") for p in entries):
        return "checkpoint"
    return "nonempty"


def next_oom_change(cfg: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """What to change after an out-of-memory failure: halve the micro-batch (same effective batch), then Liger."""
    batch = int(cfg.get("per_device_train_batch_size", 8))  # the Hugging Face default
    accum = int(cfg.get("gradient_accumulation_steps", 1))
    if batch > 1:
        new_batch = batch // 2
        new_accum = -(-batch * accum // new_batch)
        return (
            f"per_device_train_batch_size {batch} -> {new_batch}, gradient_accumulation_steps {accum} -> "
            f"{new_accum} (effective batch {batch * accum} -> {new_batch * new_accum})",
            {"per_device_train_batch_size": new_batch, "gradient_accumulation_steps": new_accum},
        )
    if not cfg.get("enable_liger_kernel"):
        return (
            "enable_liger_kernel false -> true (fused cross-entropy, no full logits; needs liger-kernel)",
            {"enable_liger_kernel": True},
        )
    return None


def child_status(result: ChildResult) -> tuple[str, int]:
    """(status, exit code) for the run record and for lf-tuner's own exit."""
    code = result.returncode if result.returncode >= 0 else 128 - result.returncode
    if result.interrupted_by is not None:
        return "interrupted", 128 + result.interrupted_by
    if result.diverged:
        return "diverged", code or 1
    if result.returncode == 0:
        return "completed", 0
    if result.oom:
        return "oom", code
    return "failed", code


@dataclass
class Attempt:
    """One start of the child: the config it ran with and how it ended."""

    cfg: dict[str, Any]
    result: ChildResult
    status: str
    exit_code: int


def run_with_retries(
    cfg: dict[str, Any],
    command: Command,
    *,
    write_config: Callable[[dict[str, Any]], None],
    output_dir: Path,
    log_path: Path,
    retry_oom: int = 0,
    stop_on_nan: bool = True,
    on_progress: Progress | None = None,
    on_retry: Callable[[int, str], None] | None = None,
    echo: IO[str] | None = None,
) -> tuple[list[Attempt], list[tuple[str, dict[str, Any]]]]:
    """Run the child; after an out-of-memory failure rewrite the config with the next change and run again.

    Returns every attempt and, per retry, (description, overrides).
    """
    attempts: list[Attempt] = []
    changes: list[tuple[str, dict[str, Any]]] = []
    current = dict(cfg)
    while True:
        if current.get("overwrite_output_dir"):
            (output_dir / TRAINER_LOG).unlink(missing_ok=True)  # LLaMA-Factory deletes it too, but later
        result = run_child(
            command,
            output_dir=output_dir,
            log_path=log_path,
            stop_on_nan=stop_on_nan,
            on_progress=on_progress,
            echo=echo,
        )
        status, code = child_status(result)
        attempts.append(Attempt(cfg=current, result=result, status=status, exit_code=code))
        if status != "oom" or len(changes) >= retry_oom:
            return attempts, changes
        change = next_oom_change(current)
        if change is None:
            return attempts, changes
        description, overrides = change
        changes.append(change)
        if on_retry is not None:
            on_retry(len(changes), description)
        current = {**current, **overrides}  # overwrite_output_dir stays: fresh runs restart, --resume resumes
        write_config(current)
