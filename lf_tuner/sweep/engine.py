"""The sweep loop: an optuna study in a journal file, one worker thread per GPU set, resumable at any moment."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lf_tuner.config import load_mapping
from lf_tuner.errors import LfTunerError
from lf_tuner.sweep.space import distributions, make_sampler, preview, with_tied
from lf_tuner.sweep.spec import SweepSpec
from lf_tuner.sweep.trial import (
    Launcher,
    Outcome,
    TrialJob,
    execute,
    trial_config,
    trial_dir_name,
    write_trial_config,
)
from lf_tuner.train.watch import kill_group, process_start

if TYPE_CHECKING:
    import optuna

STUDY_NAME = "lf-tuner-sweep"
JOURNAL_FILE = "optuna.journal"
LOCK_FILE = "sweep.lock"
SPEC_COPY = "sweep.yaml"

Emit = Callable[[str], None]


class SweepInterrupted(Exception):
    """The sweep was stopped (Ctrl-C or SIGTERM); running trials were marked failed and queued again."""


@dataclass
class Summary:
    """Where a sweep stands after this process is done with it."""

    counts: dict[str, int] = field(default_factory=dict)
    best_number: int | None = None
    best_value: float | None = None
    best_params: dict[str, Any] = field(default_factory=dict)


def load_base_config(spec: SweepSpec, spec_dir: Path, sweep_dir: Path) -> dict[str, Any]:
    """The training config every trial starts from: the base file or the rendered preset, plus overrides."""
    if spec.base is not None:
        path = (spec_dir / spec.base).resolve()
        try:
            cfg = load_mapping(path)
        except LfTunerError as exc:
            raise LfTunerError(f"base: {exc.message} (the path is relative to the spec file)") from None
        if spec.overrides:
            from lf_tuner.config import apply_overrides

            return apply_overrides(cfg, spec.overrides)
        return dict(cfg)
    from lf_tuner.config import RenderRequest, render_train_config
    from lf_tuner.train.gpus import smallest_gpu_gib

    assert spec.render is not None and spec.preset is not None
    request = RenderRequest(
        preset=spec.preset,
        output_dir=str(sweep_dir / "base-output"),
        overrides=tuple(spec.overrides),
        **spec.render.model_dump(),
    )
    rendered = render_train_config(request, detect_gpu_gib=smallest_gpu_gib)
    return dict(rendered.config)


def storage(sweep_dir: Path) -> optuna.storages.BaseStorage:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(sweep_dir / JOURNAL_FILE)))


class DirLock:
    """Serialises study bookkeeping between threads and between processes (flock, released if a process dies)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread_lock = threading.Lock()

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        with self._thread_lock, self.path.open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def describe(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


class Sweep:
    """One process taking part in a sweep: it owns some GPU sets and pulls trials from the shared study."""

    def __init__(
        self,
        spec: SweepSpec,
        sweep_dir: Path,
        base: dict[str, Any],
        launcher: Launcher,
        *,
        worker: bool = False,
        poll_s: float = 1.0,
        emit: Emit | None = None,
    ) -> None:
        self.spec = spec
        self.dir = sweep_dir
        self.base = base
        self.launcher = launcher
        self.worker = worker
        self.poll_s = poll_s
        self.emit: Emit = emit or (lambda _msg: None)
        self.stop = threading.Event()
        self.lock = DirLock(sweep_dir / LOCK_FILE)
        self.host = socket.gethostname()
        self.me = {"host": self.host, "pid": os.getpid(), "pid_start": process_start(os.getpid())}
        self.dists = distributions(spec)
        self.errors: list[BaseException] = []
        self.study = self._open()

    # --- setup ---

    def _open(self) -> optuna.Study:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with self.lock.hold():
            study = optuna.create_study(
                study_name=STUDY_NAME,
                storage=storage(self.dir),
                direction=self.spec.metric.goal,
                load_if_exists=True,
            )
            attrs = study.user_attrs
            fingerprint = self.spec.fingerprint()
            if attrs.get("fingerprint", fingerprint) != fingerprint:
                raise LfTunerError(
                    f"{self.dir}: holds a sweep started from a different spec (parameters, base, method or metric "
                    f"changed); use a new --dir, or go on with the spec saved in {self.dir / SPEC_COPY}"
                )
            if "fingerprint" not in attrs:
                for key, value in {
                    "fingerprint": fingerprint,
                    "metric": self.spec.metric.name,
                    "goal": self.spec.metric.goal,
                    "method": self.spec.method,
                    "parameters": list(self.spec.parameters),
                }.items():
                    study.set_user_attr(key, value)
            self._reclaim(study)
            if self.spec.method == "grid":
                points = preview(self.spec)
                queued = int(attrs.get("queued", 0))
                for point in points[queued:]:
                    study.enqueue_trial({k: point[k] for k in self.spec.sampled})
                study.set_user_attr("queued", max(queued, len(points)))
            existing = len(study.get_trials(deepcopy=False))
        # reseeded by what is already done, so a resumed random/tpe sweep does not replay its first draws
        study.sampler = (
            make_sampler(self.spec, self.spec.seed + existing)
            if not self.worker
            else make_sampler(self.spec, int.from_bytes(os.urandom(4), "little"))
        )
        return study

    def _reclaim(self, study: optuna.Study) -> None:
        """Running trials whose sweep process is gone: stop their leftover processes, mark them, queue them again."""
        from optuna.trial import TrialState

        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            a = t.user_attrs
            same_host = a.get("host") == self.host
            if same_host and process_start(int(a["pid"])) == a.get("pid_start"):
                continue  # another sweep process on this machine is running it
            if "host" in a and not same_host and self.worker:
                continue  # a worker on another machine may still be running it
            child = a.get("child_pid")
            if same_host and child and process_start(int(child)) == a.get("child_start"):
                kill_group(int(child))
            self._requeue(study, t.number, t.params, "the sweep process that ran it is gone")
            self.emit(f"trial {t.number}: was running when its sweep stopped; marked failed and queued again")

    def _requeue(self, study: optuna.Study, number: int, params: dict[str, Any], reason: str) -> None:
        import optuna
        from optuna.trial import TrialState

        trial = optuna.trial.Trial(study, study.get_trials(deepcopy=False)[number]._trial_id)
        trial.set_user_attr("status", "interrupted")
        trial.set_user_attr("reason", reason)
        trial.set_user_attr("requeued", True)
        study.tell(number, state=TrialState.FAIL)
        study.enqueue_trial(params, user_attrs={"retry_of": number})

    # --- the loop ---

    def _next(self) -> tuple[optuna.trial.Trial, dict[str, Any]] | None:
        from optuna.trial import TrialState

        trials = self.study.get_trials(deepcopy=False)
        waiting = any(t.state == TrialState.WAITING for t in trials)
        counted = sum(1 for t in trials if not t.user_attrs.get("requeued"))
        if not waiting and (self.spec.method == "grid" or counted >= (self.spec.max_trials or 0)):
            return None
        trial = self.study.ask(self.dists)
        params = with_tied(self.spec, trial.params)
        for key, value in {**self.me, "params": params, "started_at": time.time()}.items():
            trial.set_user_attr(key, value)
        return trial, params

    def _record(self, trial: optuna.trial.Trial, params: dict[str, Any], outcome: Outcome) -> None:
        from optuna.trial import TrialState

        for key, value in {
            "status": outcome.status,
            "runtime_s": round(outcome.runtime_s, 2),
            "reason": outcome.reason,
            "exit_code": outcome.exit_code,
        }.items():
            trial.set_user_attr(key, value)
        if outcome.status == "interrupted":
            self._requeue(self.study, trial.number, trial.params, outcome.reason)
        elif outcome.status == "completed":
            self.study.tell(trial, outcome.value)
        else:
            self.study.tell(trial, state=TrialState.FAIL)
        value = f" {self.spec.metric.name}={outcome.value:.6g}" if outcome.value is not None else ""
        why = f" ({outcome.reason})" if outcome.reason and outcome.status != "completed" else ""
        self.emit(f"trial {trial.number} {outcome.status}{value} in {outcome.runtime_s:.0f}s{why}")

    def _slot(self, devices: str) -> None:
        try:
            while not self.stop.is_set():
                with self.lock.hold():
                    got = self._next()
                if got is None:
                    return
                trial, params = got
                job = TrialJob(trial.number, self.dir / trial_dir_name(trial.number), devices)
                write_trial_config(job, trial_config(self.base, params, self.spec, job.output_dir))
                trial.set_user_attr("trial_dir", job.trial_dir.name)
                self.emit(
                    f"trial {trial.number} started on {'CPU' if devices == 'cpu' else 'GPU ' + devices}: {describe(params)}"
                )

                def on_start(pid: int, trial: optuna.trial.Trial = trial) -> None:
                    trial.set_user_attr("child_pid", pid)
                    trial.set_user_attr("child_start", process_start(pid))

                outcome = execute(
                    job, self.spec, self.launcher, self.stop, poll_s=self.poll_s, on_start=on_start
                )
                with self.lock.hold():
                    self._record(trial, params, outcome)
        except BaseException as exc:  # reported by run() after every slot has stopped
            self.errors.append(exc)
            self.stop.set()

    def run(self, slots: list[str]) -> Summary:
        """Run trials on every slot until the budget is spent; Ctrl-C stops cleanly (SweepInterrupted)."""
        done = [threading.Event() for _ in slots]

        def target(devices: str, finished: threading.Event) -> None:
            try:
                self._slot(devices)
            finally:
                finished.set()

        threads = [
            threading.Thread(target=target, args=(s, e), name=f"slot-{s}")
            for s, e in zip(slots, done, strict=True)
        ]
        for t in threads:
            t.start()
        # wait with sleep, not Thread.join: a join interrupted by Ctrl-C can leave a live thread marked stopped
        try:
            while not all(e.is_set() for e in done):
                time.sleep(0.1)
        except KeyboardInterrupt:
            self.stop.set()
            while not all(e.is_set() for e in done):
                with contextlib.suppress(
                    KeyboardInterrupt
                ):  # a second Ctrl-C still lets running trials be recorded
                    time.sleep(0.1)
            for t in threads:
                t.join()
            if self.errors:
                raise self.errors[0] from None
            raise SweepInterrupted() from None
        for t in threads:
            t.join()
        if self.errors:
            raise self.errors[0]
        return summarize(self.study)


def summarize(study: optuna.Study) -> Summary:
    from optuna.trial import TrialState

    summary = Summary()
    for t in study.get_trials(deepcopy=False):
        status = str(t.user_attrs.get("status", "running" if t.state == TrialState.RUNNING else "queued"))
        summary.counts[status] = summary.counts.get(status, 0) + 1
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if complete:
        best = study.best_trial
        summary.best_number, summary.best_value = best.number, best.value
        summary.best_params = dict(best.user_attrs.get("params", best.params))
    return summary


def save_spec_copy(spec_path: Path, sweep_dir: Path) -> None:
    """Keep the spec next to the study, the first time only."""
    copy = sweep_dir / SPEC_COPY
    if not copy.exists():
        copy.write_text(spec_path.read_text())
