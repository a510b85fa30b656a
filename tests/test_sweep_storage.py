"""Where studies live: the journal and its damage, sweep folders that are not ours, SQLite, a real PostgreSQL
server shared by two workers, and the Slurm array job."""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from lf_tuner.cli import cli
from tests.sweep_helpers import (
    report_json,
    starts,
    subprocess_env,
    sweep,
    sweep_args,
    write_spec,
)

ONE = {"learning_rate": {"values": [1.0e-4]}, "lora_rank": {"values": [8]}}


# --- the journal and the folder ---


def test_garbage_in_the_journal_is_one_line_not_a_traceback(tmp_path: Path, fake_lf: Path) -> None:
    spec = write_spec(tmp_path, parameters=ONE)
    assert sweep(spec, tmp_path / "d", "--gpus", "cpu").exit_code == 0
    journal = tmp_path / "d" / "optuna.journal"
    lines = len(journal.read_bytes().splitlines())
    with journal.open("ab") as fh:
        fh.write(b"garbage from an editor\n")
    before = journal.read_bytes()
    for argv in (["sweep", *sweep_args(spec, tmp_path / "d")[1:]], ["report", str(tmp_path / "d")]):
        result = CliRunner().invoke(cli, argv)
        assert result.exit_code == 1, result.output
        assert result.stderr == (
            f"Error: {journal}: line {lines + 1} is not an optuna journal entry ('garbage from an editor'); the "
            "file was changed by something other than lf-tuner. Keep a copy, delete that line and run again, "
            "or use a new --dir\n"
        )
    assert journal.read_bytes() == before  # reported, not touched


def test_a_torn_last_write_is_cut_off_and_the_sweep_goes_on(tmp_path: Path, fake_lf: Path) -> None:
    spec = write_spec(tmp_path, parameters={"learning_rate": {"values": [1.0e-4, 2.0e-4]}})
    assert sweep(spec, tmp_path / "d", "--gpus", "cpu").exit_code == 0
    journal = tmp_path / "d" / "optuna.journal"
    whole = journal.read_bytes()
    journal.write_bytes(whole + b'{"op_code": 4, "worker_id": "x", "study_id"')  # killed mid-append
    result = sweep(spec, tmp_path / "d", "--gpus", "cpu")
    assert result.exit_code == 0, result.output
    assert (
        "optuna.journal: removed an unfinished last entry (43 bytes) left by a process killed mid-write"
        in result.stderr
    )
    after = journal.read_bytes()
    assert after.startswith(whole) and all(json.loads(line) for line in after.splitlines())
    assert len(report_json(tmp_path / "d")["trials"]) == 2


def test_a_stale_optuna_lock_is_cleared_and_said(tmp_path: Path, fake_lf: Path) -> None:
    # optuna's own journal lock is a symlink that outlives a killed writer; it made every restart wait 30 s
    (tmp_path / "d").mkdir()
    lock = tmp_path / "d" / "optuna.journal.lock"
    lock.symlink_to(tmp_path / "d" / "optuna.journal")
    result = sweep(write_spec(tmp_path, parameters=ONE), tmp_path / "d", "--gpus", "cpu")
    assert result.exit_code == 0, result.output
    assert (
        f"removed a stale optuna lock file {lock} (left by a process that was killed while writing)"
        in result.stderr
    )
    assert not lock.is_symlink()


def test_a_folder_of_older_runs_is_refused_and_left_as_it_was(tmp_path: Path, fake_lf: Path) -> None:
    old = tmp_path / "d" / "trial-000"
    old.mkdir(parents=True)
    (old / "train.yaml").write_text("learning_rate: 1.0e-3\n")
    (tmp_path / "d" / "trial-001").mkdir()
    result = sweep(write_spec(tmp_path, parameters=ONE), tmp_path / "d", "--gpus", "cpu")
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: --dir {tmp_path / 'd'}: holds trial-000/ and 1 more from another or an older sweep, not this "
        "sweep's journal; lf-tuner never overwrites runs: use a new --dir\n"
    )
    assert (old / "train.yaml").read_text() == "learning_rate: 1.0e-3\n"
    assert starts(fake_lf) == []


def test_its_own_folder_is_not_foreign_when_resumed(tmp_path: Path, fake_lf: Path) -> None:
    spec = write_spec(tmp_path, parameters={"learning_rate": {"values": [1.0e-4, 2.0e-4]}})
    assert sweep(spec, tmp_path / "d", "--gpus", "cpu").exit_code == 0
    spec = write_spec(tmp_path, parameters={"learning_rate": {"values": [1.0e-4, 2.0e-4]}}, max_trials=None)
    assert sweep(spec, tmp_path / "d", "--gpus", "cpu").exit_code == 0


def test_an_unusable_dir_is_one_line(tmp_path: Path, fake_lf: Path) -> None:
    spec = write_spec(tmp_path, parameters=ONE)
    (tmp_path / "afile").write_text("x")
    result = sweep(spec, tmp_path / "afile" / "sub")
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: --dir {tmp_path / 'afile' / 'sub'}: cannot create it (Not a directory); choose another --dir\n"
    )
    result = sweep(spec, tmp_path / "afile")
    assert result.exit_code in (1, 2)  # click refuses a file where a folder is expected
    assert "Traceback" not in result.output
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        result = sweep(spec, locked)
        assert result.stderr == f"Error: --dir {locked}: not writable by this user; choose another --dir\n"


def test_sqlite_storage_and_the_report_that_finds_it(tmp_path: Path, fake_lf: Path) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    spec = write_spec(tmp_path, parameters={"learning_rate": {"values": [1.0e-4, 2.0e-4]}})
    result = sweep(spec, tmp_path / "d", "--gpus", "cpu", "--storage", url, "--study", "lr-scan")
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "d" / "optuna.journal").exists()
    assert json.loads((tmp_path / "d" / "sweep.json").read_text()) == {
        "study": "lr-scan",
        "storage": url,
        "stages": ["main"],
    }
    assert [t["status"] for t in report_json(tmp_path / "d")["trials"]] == ["completed"] * 2
    other = sweep(spec, tmp_path / "d", "--gpus", "cpu")  # the same folder with another storage
    assert other.exit_code == 1
    assert f"belongs to study `lr-scan` in {url}" in other.stderr


def test_bad_storage_urls_are_one_line(tmp_path: Path, fake_lf: Path) -> None:
    spec = write_spec(tmp_path, parameters=ONE)
    result = sweep(spec, tmp_path / "a", "--storage", "redis://localhost/0")
    assert result.exit_code == 1
    assert "`redis://` is not a storage optuna knows" in result.stderr
    port = _free_port()
    result = sweep(spec, tmp_path / "b", "--storage", f"postgresql://me:secret@127.0.0.1:{port}/db")
    assert result.exit_code == 1
    assert result.stderr.startswith(
        f"Error: --storage postgresql://me:***@127.0.0.1:{port}/db: cannot open the database ("
    )
    assert "secret" not in result.stderr and len(result.stderr.splitlines()) == 1


def test_the_report_asks_for_a_password_it_was_not_given(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    pointer = {"study": "s", "storage": "postgresql://me:***@db/x", "stages": ["main"]}
    (tmp_path / "d" / "sweep.json").write_text(json.dumps(pointer))
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "d")], env={"LF_TUNER_STORAGE": None})
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {tmp_path / 'd'}: its study is in postgresql://me:***@db/x; give the URL with its password: "
        "--storage URL\n"
    )


# --- Slurm ---


def test_slurm_array_script_joins_the_study_as_workers(tmp_path: Path, fake_lf: Path) -> None:
    spec = write_spec(tmp_path, parameters=ONE, gpus_per_trial=2)
    url = "postgresql://me:secret@db.example/sweeps"
    args = ["--storage", url, "--slurm-script", "job.sh", "--slurm-tasks", "8"]
    result = sweep(spec, tmp_path / "d", *args)
    assert result.exit_code == 0, result.output
    text = (tmp_path / "job.sh").read_text()
    assert "secret" not in text
    assert "#SBATCH --array=0-7\n" in text and "#SBATCH --gpus=2\n" in text
    assert ': "${LF_TUNER_STORAGE:?export LF_TUNER_STORAGE with the database URL before sbatch}"' in text
    assert f'sweep {spec} --dir {tmp_path / "d"} --storage "$LF_TUNER_STORAGE" --study lf-tuner-sweep' in text
    assert "--worker --launcher llamafactory" in text
    assert "# Watch it live: optuna-dashboard postgresql://me:***@db.example/sweeps" in text
    assert subprocess.run(["bash", "-n", str(tmp_path / "job.sh")]).returncode == 0
    assert starts(fake_lf) == [] and not (tmp_path / "d").exists()  # wrote the script, started nothing
    again = sweep(spec, tmp_path / "d", *args)
    assert again.exit_code == 1 and "job.sh exists; pass --force to replace it" in again.stderr
    journal = sweep(spec, tmp_path / "d", "--slurm-script", "j2.sh")
    assert journal.exit_code == 0
    assert f"export LF_TUNER_STORAGE={tmp_path / 'd' / 'optuna.journal'}" in (tmp_path / "j2.sh").read_text()


# --- a real PostgreSQL server, started by the test as an unprivileged user ---


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bindir() -> Path | None:
    found = shutil.which("initdb")
    candidates = [found] if found else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries are not installed (scripts/test.sh installs them in CI)")
    pytest.importorskip("psycopg")
    base = Path(tempfile.mkdtemp(prefix="lf-tuner-pg-"))
    kwargs: dict[str, object] = {}
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: run it as nobody
        nobody = pwd.getpwnam("nobody")
        os.chown(base, nobody.pw_uid, nobody.pw_gid)
        kwargs = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
    data, port = base / "data", _free_port()
    env = dict(os.environ, LC_ALL="C", HOME=str(base))
    run = {"env": env, "capture_output": True, "text": True, "check": True, "cwd": base, **kwargs}
    subprocess.run(
        [
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "lftuner",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
        ],
        **run,
    )  # type: ignore[call-overload]
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg_ctl = [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-o", options]
    subprocess.run([*pg_ctl, "-w", "start"], **run)  # type: ignore[call-overload]
    try:
        yield f"postgresql://lftuner@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], **{**run, "check": False})  # type: ignore[call-overload]
        shutil.rmtree(base, ignore_errors=True)


def _two_workers(tmp_path: Path, spec: Path, url: str, study: str) -> list[subprocess.CompletedProcess[str]]:
    """Two workers (as on two machines: each its own folder) on one study. Every run waits at its gate until
    both workers have a trial running, so they work side by side whatever the machine's speed."""
    gate = tmp_path / f"gate-{study}"
    gate.mkdir()
    env = subprocess_env(LF_STUB_GATE=str(gate), LF_STUB_GATE_STEP="1")
    procs = []
    for name in ("a", "b"):
        argv = [sys.executable, "-m", "lf_tuner", *sweep_args(spec, tmp_path / f"{study}-{name}")]
        argv += ["--gpus", "0,1", "--storage", url, "--study", study, "--worker"]
        procs.append(
            subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    for name, proc in zip("ab", procs, strict=True):
        while not glob.glob(str(tmp_path / f"{study}-{name}" / "trial-*" / "output" / "trainer_log.jsonl")):
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.01)
    for n in range(20):
        (gate / f"trial-{n:03d}").touch()
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=300), *p.communicate()) for p in procs]


def test_two_workers_on_postgresql_share_one_study_and_never_repeat_a_trial(
    tmp_path: Path, fake_lf: Path, postgres: str
) -> None:
    grid = write_spec(
        tmp_path,
        "grid.yaml",
        parameters={"learning_rate": {"values": [1e-4, 2e-4, 3e-4]}, "lora_rank": {"values": [8, 16]}},
    )
    for done in _two_workers(tmp_path, grid, postgres, "grid"):
        assert done.returncode == 0, done.stderr
    configs = [(c["config"]["learning_rate"], c["config"]["lora_rank"]) for c in starts(fake_lf)]
    assert sorted(configs) == sorted((lr, r) for lr in (1e-4, 2e-4, 3e-4) for r in (8, 16))  # each point once
    data = report_json(tmp_path / "grid-a", "--storage", postgres)
    assert [t["status"] for t in data["trials"]] == ["completed"] * 6

    params = {"learning_rate": {"distribution": "log_uniform", "min": 1e-5, "max": 1e-3}}
    rand = write_spec(tmp_path, "random.yaml", method="random", max_trials=5, parameters=params)
    for done in _two_workers(tmp_path, rand, postgres, "random"):
        assert done.returncode == 0, done.stderr
    data = report_json(tmp_path / "random-b", "--storage", postgres)
    assert len(data["trials"]) == 5  # the budget holds across machines
    assert len(starts(fake_lf)) == 6 + 5
