"""Run records (`<output_dir>/lf-tuner-run.json`) and the runs index (SQLite under LF_TUNER_HOME).

The record is the contract with `lf-tuner sweep`: it always holds `status` (completed, failed, oom,
interrupted, diverged), `exit_code`, the measured figures and what each OOM retry changed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypedDict, cast

from pydantic import BaseModel, ConfigDict, ValidationError

from lf_tuner.config import pydantic_problems
from lf_tuner.errors import LfTunerError, ProblemsError
from lf_tuner.train import Status

RECORD_NAME = "lf-tuner-run.json"
CONFIG_NAME = "lf-tuner-config.yaml"
SCHEMA_VERSION = 1


def home() -> Path:
    """lf-tuner's state directory: $LF_TUNER_HOME, default ~/.lf-tuner."""
    value = os.environ.get("LF_TUNER_HOME")
    return Path(value).expanduser() if value else Path.home() / ".lf-tuner"


def config_hash(cfg: Mapping[str, Any]) -> str:
    """A stable hash of a training config (key order and YAML formatting do not matter)."""
    text = json.dumps(cfg, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def now_iso() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def config_path(output_dir: Path, node_rank: int = 0) -> Path:
    """Where a run keeps the config it trained with; every node but rank 0 gets its own name."""
    return output_dir / (CONFIG_NAME if node_rank == 0 else f"lf-tuner-config.node{node_rank}.yaml")


def record_path(output_dir: Path, node_rank: int = 0) -> Path:
    """Where a run's record goes; every node but rank 0 gets its own name."""
    return output_dir / (RECORD_NAME if node_rank == 0 else f"lf-tuner-run.node{node_rank}.json")


class Retry(BaseModel):
    """One OOM retry: what was changed before the next attempt."""

    model_config = ConfigDict(extra="forbid")

    attempt: int
    description: str
    overrides: dict[str, Any]


class GpuRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int
    name: str
    total_gib: float
    free_gib: float


class RunRecord(BaseModel):
    """Everything known about one `lf-tuner run`, written to `<output_dir>/lf-tuner-run.json`."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    status: Status
    exit_code: int
    reason: str | None = None
    config_hash: str
    config_path: str
    output_dir: str
    model: str | None = None
    argv: list[str]
    env: dict[str, str]
    gpus: list[GpuRecord]
    nnodes: int = 1
    node_rank: int = 0
    estimated_peak_gib: float | None = None
    measured_peak_gib: float | None = None
    measured_source: str | None = None  # "nvml" (the process group) or "torch reserved + CUDA context"
    final_train_loss: float | None = None
    mean_train_loss: float | None = None
    final_eval_loss: float | None = None
    steps: int | None = None
    total_steps: int | None = None
    runtime_s: float
    throughput_tokens_per_s: float | None = None
    started_at: str
    ended_at: str
    retries: list[Retry] = []
    log_path: str


class IndexUnavailable(LfTunerError):
    """The runs index under LF_TUNER_HOME cannot be read or written; the message names the file and the fix."""


def save_record(record: RunRecord, path: Path) -> None:
    """Write the record to `path`, then add it to the runs index (`IndexUnavailable` if that fails: the record
    in output_dir is kept)."""
    write_record(record, path)
    add_to_index(record, path.absolute())


def write_record(record: RunRecord, path: Path) -> None:
    """Write atomically, so a reader never sees half a record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_record(path: Path) -> RunRecord:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise LfTunerError(f"{path}: no run record here; was it started with `lf-tuner run`?") from exc
    except ValueError as exc:
        raise LfTunerError(f"{path}: not valid JSON ({exc})") from exc
    try:
        return RunRecord.model_validate(data)
    except ValidationError as exc:
        raise ProblemsError(pydantic_problems(exc, RunRecord), str(path)) from None


# ------------------------------------------------------------------------------------------- metrics


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def read_json(path: Path) -> Any:
    """A JSON file a run leaves behind (trainer_state.json, all_results.json, a record), or None when it is
    missing or half-written."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class RunMetrics:
    """What a run's files say about it (RunRecord's fields of the same names); None where they say nothing."""

    final_train_loss: float | None
    final_eval_loss: float | None
    mean_train_loss: float | None
    throughput_tokens_per_s: float | None
    steps: int | None
    total_steps: int | None
    measured_peak_gib: float | None
    measured_source: str | None  # "nvml" (the process group) or "torch reserved + CUDA context"


def collect_metrics(
    output_dir: Path, trainer_log: list[dict[str, Any]], *, on_gpu: bool, nvml_peak_bytes: int | None = None
) -> RunMetrics:
    """Final losses, steps, throughput and measured peak memory from the files a run leaves behind."""
    state = read_json(output_dir / "trainer_state.json")
    history: list[dict[str, Any]] = []
    if isinstance(state, dict) and isinstance(state.get("log_history"), list):
        history = [e for e in state["log_history"] if isinstance(e, dict)]
    else:  # interrupted before the end: take the newest checkpoint's state
        checkpoints = sorted(
            output_dir.glob("checkpoint-*/trainer_state.json"),
            key=lambda p: int(p.parent.name.split("-")[-1]) if p.parent.name.split("-")[-1].isdigit() else -1,
        )
        if checkpoints and isinstance(ck := read_json(checkpoints[-1]), dict):
            history = [e for e in ck.get("log_history", []) if isinstance(e, dict)]

    def last(entries: list[dict[str, Any]], key: str) -> float | None:
        for entry in reversed(entries):
            if (value := _number(entry.get(key))) is not None:
                return value
        return None

    final_train = last(history, "loss")
    if final_train is None:
        final_train = last(trainer_log, "loss")
    final_eval = last(history, "eval_loss")
    if final_eval is None:
        final_eval = last(trainer_log, "eval_loss")
    mean_train = last(history, "train_loss")
    if mean_train is None and isinstance(results := read_json(output_dir / "train_results.json"), dict):
        mean_train = _number(results.get("train_loss"))

    throughput = last(trainer_log, "throughput")
    if throughput is None:
        throughput = last(history, "train_tokens_per_second")
    steps = last(trainer_log, "current_steps")
    total = last(trainer_log, "total_steps")
    if steps is None:
        steps = last(history, "step")
    # The peak as nvidia-smi shows it, which is what `estimate` predicts: NVML's view of the process group,
    # else RECORD_VRAM's torch reserved memory (rank 0) plus the CUDA context torch does not count.
    peak, source = None, None
    if nvml_peak_bytes:
        peak, source = round(nvml_peak_bytes / 2**30, 3), "nvml"
    elif on_gpu:
        from lf_tuner.memory import CUDA_CONTEXT_BYTES

        reserved = [v for e in trainer_log if (v := _number(e.get("vram_reserved"))) is not None]
        if reserved and max(reserved) > 0:
            peak = round(max(reserved) + CUDA_CONTEXT_BYTES / 2**30, 3)
            source = "torch reserved + CUDA context"

    def clean(value: float | None) -> float | None:
        return value if value is None or math.isfinite(value) else None

    return RunMetrics(
        final_train_loss=clean(final_train),
        final_eval_loss=clean(final_eval),
        mean_train_loss=clean(mean_train),
        throughput_tokens_per_s=clean(throughput),
        steps=int(steps) if steps is not None else None,
        total_steps=int(total) if total is not None else None,
        measured_peak_gib=peak,
        measured_source=source,
    )


# --------------------------------------------------------------------------------------------- index

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at TEXT NOT NULL,
    ended_at TEXT NOT NULL,
    status TEXT NOT NULL,
    exit_code INTEGER NOT NULL,
    model TEXT,
    config_hash TEXT NOT NULL,
    config_path TEXT NOT NULL,
    output_dir TEXT NOT NULL,
    record_path TEXT NOT NULL,
    gpus TEXT NOT NULL,
    estimated_peak_gib REAL,
    measured_peak_gib REAL,
    final_train_loss REAL,
    final_eval_loss REAL,
    runtime_s REAL NOT NULL,
    throughput_tokens_per_s REAL
)
"""


class IndexedRun(TypedDict):
    """A run as the index holds it (one row of `runs`; `lf-tuner runs --json` prints these)."""

    id: int
    started_at: str
    ended_at: str
    status: str
    exit_code: int
    model: str | None
    config_hash: str
    config_path: str
    output_dir: str
    record_path: str
    gpus: str  # names, comma-separated; "cpu" for a CPU run
    estimated_peak_gib: float | None
    measured_peak_gib: float | None
    final_train_loss: float | None
    final_eval_loss: float | None
    runtime_s: float
    throughput_tokens_per_s: float | None


INDEX_COLUMNS = tuple(IndexedRun.__annotations__)


def index_path() -> Path:
    return home() / "runs.sqlite"


MOVE_ASIDE = "move it aside and lf-tuner starts a new index on the next run"


def _check_folder(db: Path) -> None:
    """Refuse an index whose folder is a file (LF_TUNER_HOME pointing at one), or that is itself a folder."""
    if db.is_dir():
        raise IndexUnavailable(f"runs index: {db} is a folder, not the index file; {MOVE_ASIDE}")
    for parent in (db.parent, *db.parent.parents):
        if parent.exists():
            if not parent.is_dir():
                raise IndexUnavailable(
                    f"runs index: {parent} is a file, not a folder; point LF_TUNER_HOME at a folder "
                    "(the default is ~/.lf-tuner)"
                )
            return


@contextmanager
def _connect(path: Path | None = None) -> Iterator[sqlite3.Connection]:
    """The index, created if missing; every way it cannot be opened is an `IndexUnavailable` naming the file."""
    db = path or index_path()
    _check_folder(db)
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise IndexUnavailable(
            f"runs index: cannot create {db.parent} ({exc.strerror}); point LF_TUNER_HOME at a folder you can write"
        ) from exc
    try:
        with closing(sqlite3.connect(db, timeout=30)) as conn:
            conn.row_factory = sqlite3.Row
            conn.execute(_SCHEMA)
            have = {row["name"] for row in conn.execute("PRAGMA table_info(runs)")}
            if missing := [c for c in INDEX_COLUMNS if c not in have]:
                raise IndexUnavailable(
                    f"runs index: {db} has a `runs` table without {', '.join(missing)} (not lf-tuner's, or "
                    f"another version's); {MOVE_ASIDE}"
                )
            with conn:
                yield conn
    except sqlite3.DatabaseError as exc:
        raise IndexUnavailable(_index_problem(db, exc)) from exc


def _index_problem(db: Path, exc: sqlite3.DatabaseError) -> str:
    text = str(exc)
    if "readonly" in text or "unable to open" in text:
        return f"runs index: cannot write {db} ({text}); point LF_TUNER_HOME at a folder you can write"
    if "full" in text:
        return f"runs index: cannot write {db} ({text}); free some space"
    if "locked" in text:
        return f"runs index: {db} is locked by another process ({text}); try again when it has finished"
    return f"runs index: {db} is not a usable runs index ({text}); {MOVE_ASIDE}"


def add_to_index(record: RunRecord, record_path: Path, db: Path | None = None) -> int:
    """Append a run to the index; returns its id."""
    gpus = ",".join(g.name for g in record.gpus) or "cpu"
    row = {
        "started_at": record.started_at,
        "ended_at": record.ended_at,
        "status": record.status,
        "exit_code": record.exit_code,
        "model": record.model,
        "config_hash": record.config_hash,
        "config_path": record.config_path,
        "output_dir": record.output_dir,
        "record_path": str(record_path),
        "gpus": gpus,
        "estimated_peak_gib": record.estimated_peak_gib,
        "measured_peak_gib": record.measured_peak_gib,
        "final_train_loss": record.final_train_loss,
        "final_eval_loss": record.final_eval_loss,
        "runtime_s": record.runtime_s,
        "throughput_tokens_per_s": record.throughput_tokens_per_s,
    }
    keys = ", ".join(row)
    marks = ", ".join(f":{k}" for k in row)
    with _connect(db) as conn:
        cursor = conn.execute(f"INSERT INTO runs ({keys}) VALUES ({marks})", row)
        return int(cursor.lastrowid or 0)


def peak_error(run: IndexedRun) -> float:
    """(estimated - measured) / measured peak of a run that has both (those `list_runs(calibration=True)` lists)."""
    estimated, measured = run["estimated_peak_gib"], run["measured_peak_gib"]
    if estimated is None or measured is None:
        raise ValueError(f"run {run['id']} lacks an estimated or a measured peak")
    return (estimated - measured) / measured


def list_runs(
    *, limit: int | None = None, status: str | None = None, calibration: bool = False, db: Path | None = None
) -> list[IndexedRun]:
    """Runs, newest first. `calibration` keeps only runs with both an estimated and a measured peak."""
    where: list[str] = []
    params: list[Any] = []
    if status:
        where.append("status = ?")
        params.append(status)
    if calibration:
        where.append("estimated_peak_gib IS NOT NULL AND measured_peak_gib IS NOT NULL")
    sql = "SELECT * FROM runs"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    path = db or index_path()
    _check_folder(path)
    if not path.exists():
        return []
    with _connect(path) as conn:
        return [cast(IndexedRun, dict(row)) for row in conn.execute(sql, params)]
