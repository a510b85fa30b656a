"""Where a sweep's study lives, and the checks that keep a sweep folder and its journal safe to use.

The default is optuna's journal file in the sweep folder, written under an `flock` lock (the kernel releases it
when a process dies, so no lock is ever left stale). `--storage` takes what optuna takes: `sqlite:///...`,
`postgresql://...`, `mysql://...` (a database shared by several machines), or a journal file path.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lf_tuner.errors import LfTunerError

if TYPE_CHECKING:
    import optuna

JOURNAL_FILE = "optuna.journal"
STUDY_NAME = "lf-tuner-sweep"
POINTER_FILE = "sweep.json"  # which storage and study a sweep folder belongs to
TRIAL_MARK = ".lf-tuner-trial"  # in every trial folder: the token of the study that made it
TRIAL_DIR = re.compile(r"^trial-.*\d{3}$")
HIDDEN = ("skipped", "surplus")  # bookkeeping trials: a grid point measured already, a draw beyond the budget
_RDB_SCHEMES = ("sqlite", "postgresql", "mysql", "oracle", "mssql")
# SQLAlchemy's default driver for each scheme, and how to install it
_DRIVERS = {
    "postgresql": ("psycopg", "pip install 'psycopg[binary]' (or `pip install 'lf-tuner[postgres]'`)"),
    "mysql": ("MySQLdb", "pip install mysqlclient, or pip install pymysql and write mysql+pymysql://"),
}

Emit = Callable[[str], None]


# --------------------------------------------------------------------------- locks


class FlockLock:
    """optuna's journal lock interface over `flock`: released by the kernel when the holder dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()

    def acquire(self) -> bool:
        fh = self.path.open("a")
        fcntl.flock(fh, fcntl.LOCK_EX)
        self._local.fh = fh
        return True

    def release(self) -> None:
        fh = getattr(self._local, "fh", None)
        if fh is not None:
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()
            self._local.fh = None


class DirLock:
    """Serialises study bookkeeping between threads and between processes that share a sweep folder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._fh: Any = None

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        with self._thread_lock:
            if self._depth == 0:
                self._fh = self.path.open("a")
                fcntl.flock(self._fh, fcntl.LOCK_EX)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    fcntl.flock(self._fh, fcntl.LOCK_UN)
                    self._fh.close()
                    self._fh = None


# --------------------------------------------------------------------------- the journal file


def check_journal(path: Path, emit: Emit, repair: bool = True) -> None:
    """Refuse a journal with lines optuna cannot read (one line saying where); cut off a torn last write.

    A process killed while appending can leave an unfinished last line (no newline): optuna skips it, but the
    next append would glue a good entry to it, so it is removed. Any other unreadable line is reported, not
    touched: the file is the sweep's only record.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise LfTunerError(f"{path}: cannot read the sweep journal ({exc.strerror})") from None
    lines = data.split(b"\n")
    tail = lines.pop()  # after the last newline: b"" for a whole file
    for number, line in enumerate(lines, start=1):
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if not isinstance(entry, dict) or "op_code" not in entry:
            shown = line[:40].decode("utf-8", errors="replace")
            raise LfTunerError(
                f"{path}: line {number} is not an optuna journal entry ({shown!r}); the file was changed by "
                "something other than lf-tuner. Keep a copy, delete that line and run again, or use a new --dir"
            )
    if tail and repair:
        with path.open("r+b") as fh:
            fh.truncate(len(data) - len(tail))
        emit(
            f"{path.name}: removed an unfinished last entry ({len(tail)} bytes) left by a process killed mid-write"
        )


def clear_stale_symlink_lock(path: Path, emit: Emit) -> None:
    """optuna's default journal lock (a symlink next to the file) outlives a killed process and makes every
    later writer wait 30 s; lf-tuner uses flock, so such a link is always a leftover: remove it and say so."""
    lock = Path(str(path) + ".lock")
    if lock.is_symlink() or lock.exists():
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
        emit(f"removed a stale optuna lock file {lock} (left by a process that was killed while writing)")


def journal_storage(
    path: Path, emit: Emit | None = None, *, write: bool = True
) -> optuna.storages.BaseStorage:
    """optuna's journal storage on `path` with a lock that cannot go stale. `write=False` (the report, imports,
    the checks before a sweep starts) reads the journal as it is and leaves no file behind."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    say = emit or (lambda _msg: None)
    lock = FlockLock(Path(str(path) + ".flock"))
    if not write:
        check_journal(path, say, repair=False)
        return JournalStorage(JournalFileBackend(str(path), lock_obj=lock))  # type: ignore[arg-type]
    try:
        lock.acquire()  # no other lf-tuner process is mid-append while the file is checked
    except OSError as exc:
        raise LfTunerError(
            f"{path}: cannot write the sweep journal ({exc.strerror}); use another --dir"
        ) from None
    try:
        check_journal(path, say)
        clear_stale_symlink_lock(path, say)
    finally:
        lock.release()
    try:
        backend = JournalFileBackend(str(path), lock_obj=lock)  # type: ignore[arg-type]
    except OSError as exc:
        raise LfTunerError(
            f"{path}: cannot write the sweep journal ({exc.strerror}); use another --dir"
        ) from None
    return JournalStorage(backend)


def storage(sweep_dir: Path) -> optuna.storages.BaseStorage:
    """The journal storage of a sweep folder."""
    return journal_storage(sweep_dir / JOURNAL_FILE)


def check_before_start(sweep_dir: Path, url: str | None, study: str) -> None:
    """Refuse a sweep folder before anything is written to it: a damaged journal, or trial folders that the
    study `study` (its first stage) did not make."""
    if not sweep_dir.is_dir():
        return
    journal = None if url is not None and is_url(url) else Path(url) if url else sweep_dir / JOURNAL_FILE
    if journal is not None and journal.is_file():
        check_journal(journal, lambda _msg: None, repair=False)
    if not foreign_trials(sweep_dir, None):
        return
    token = None
    if journal is None or journal.is_file():
        import optuna

        store = open_storage(url, sweep_dir) if journal is None else journal_storage(journal, write=False)
        try:
            token = optuna.load_study(study_name=study, storage=store).user_attrs.get("token")
        except KeyError:
            token = None
    refuse_foreign(sweep_dir, str(token) if token else None)


# --------------------------------------------------------------------------- storage URLs


def stage_study_name(base: str, stage: str) -> str:
    """The optuna study of one stage of the sweep `base` (the first stage's is `base` itself)."""
    return base if stage == "main" else f"{base}:{stage}"


def mask(url: str) -> str:
    """The URL with its password replaced by ***."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def is_url(value: str) -> bool:
    return re.match(r"^[a-z][a-z0-9+]*://", value) is not None


def open_storage(url: str | None, sweep_dir: Path, emit: Emit | None = None) -> optuna.storages.BaseStorage:
    """The study storage: the folder's journal (no URL), a journal file path, or a database URL."""
    if url is None:
        return journal_storage(sweep_dir / JOURNAL_FILE, emit)
    if not is_url(url):
        return journal_storage(Path(url), emit)
    scheme = url.split("://", 1)[0].split("+", 1)[0]
    if scheme not in _RDB_SCHEMES:
        raise LfTunerError(
            f"--storage: `{scheme}://` is not a storage optuna knows; use sqlite:///FILE, postgresql://..., "
            "mysql://... or a journal file path"
        )
    try:
        return _rdb_storage(url)
    except ImportError as exc:  # optuna hides which module; SQLAlchemy names the scheme's default driver
        plain = "+" not in url.split("://", 1)[0]
        module, how = _DRIVERS.get(scheme, ("its driver", "install the driver the URL names"))
        driver = f"the `{module}` driver" if plain else "the driver the URL names"
        raise LfTunerError(f"--storage {mask(url)}: needs {driver}: {how if plain else exc}") from None
    except Exception as exc:  # sqlalchemy's errors carry the server's message
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise LfTunerError(f"--storage {mask(url)}: cannot open the database ({first})") from None


def _rdb_storage(url: str) -> optuna.storages.BaseStorage:
    """optuna's RDBStorage. Two machines opening a fresh database at once both create optuna's tables and one
    loses the race (a duplicate-key error): it opens the database again and finds them made."""
    from optuna.storages import RDBStorage

    for attempt in range(5):
        try:
            return RDBStorage(url)
        except Exception as exc:
            text = str(getattr(exc, "orig", None) or exc)
            if attempt == 4 or ("duplicate key" not in text and "already exists" not in text):
                raise
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- the sweep folder


@dataclass(frozen=True)
class Pointer:
    """What `sweep.json` in a sweep folder says: the study's name and where it lives."""

    study: str = STUDY_NAME
    storage: str | None = None  # None: the folder's journal; else the URL with its password masked
    stages: tuple[str, ...] = ("main",)

    def as_json(self) -> dict[str, Any]:
        return {"study": self.study, "storage": self.storage, "stages": list(self.stages)}


def read_pointer(sweep_dir: Path) -> Pointer | None:
    try:
        data = json.loads((sweep_dir / POINTER_FILE).read_text())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as exc:
        raise LfTunerError(f"{sweep_dir / POINTER_FILE}: cannot read it ({exc}); was it edited?") from None
    return Pointer(
        study=str(data.get("study", STUDY_NAME)),
        storage=data.get("storage"),
        stages=tuple(data.get("stages") or ("main",)),
    )


def write_pointer(sweep_dir: Path, pointer: Pointer) -> None:
    check_pointer(sweep_dir, pointer)
    path = sweep_dir / POINTER_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(pointer.as_json(), indent=2) + "\n")
    os.replace(tmp, path)


def check_pointer(sweep_dir: Path, pointer: Pointer) -> None:
    """A sweep folder belongs to one study in one storage."""
    old = read_pointer(sweep_dir)
    if old is not None and (old.study, old.storage) != (pointer.study, pointer.storage):
        where = old.storage or f"{sweep_dir / JOURNAL_FILE}"
        raise LfTunerError(
            f"{sweep_dir}: belongs to study `{old.study}` in {where}; run it with the same --storage/--study, "
            "or use a new --dir"
        )


def prepare_dir(sweep_dir: Path) -> None:
    """Create the sweep folder, or say in one line why it cannot be used."""
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise LfTunerError(f"--dir {sweep_dir}: a file is in the way; choose a folder") from None
    except OSError as exc:
        raise LfTunerError(
            f"--dir {sweep_dir}: cannot create it ({exc.strerror}); choose another --dir"
        ) from None
    if not os.access(sweep_dir, os.W_OK | os.X_OK):
        raise LfTunerError(f"--dir {sweep_dir}: not writable by this user; choose another --dir")


def foreign_trials(sweep_dir: Path, token: str | None) -> list[str]:
    """trial folders that this study did not make (another sweep's, or one whose journal is gone)."""
    found = []
    for entry in sorted(sweep_dir.iterdir()) if sweep_dir.is_dir() else []:
        if not (entry.is_dir() and TRIAL_DIR.match(entry.name)):
            continue
        try:
            mark = (entry / TRIAL_MARK).read_text().strip()
        except OSError:
            mark = ""
        if token is None or mark != token:
            found.append(entry.name)
    return found


def refuse_foreign(sweep_dir: Path, token: str | None) -> None:
    found = foreign_trials(sweep_dir, token)
    if found:
        more = f" and {len(found) - 1} more" if len(found) > 1 else ""
        raise LfTunerError(
            f"--dir {sweep_dir}: holds {found[0]}/{more} from another or an older sweep, not this sweep's journal; "
            "lf-tuner never overwrites runs: use a new --dir"
        )
