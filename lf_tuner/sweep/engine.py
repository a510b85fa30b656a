"""The sweep loop: one optuna study per stage in one storage, one worker thread per GPU set, resumable at any
moment, shared by several processes or machines.

Every process that takes part opens the studies, reclaims trials whose process is gone (adopting the result
of any that finished meanwhile), and pulls trials until each stage's budget is spent; a later stage starts
only when every trial of the earlier ones has ended, from the best trial so far.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lf_tuner.config import load_mapping
from lf_tuner.errors import LfTunerError, Problem
from lf_tuner.sweep.space import (
    Space,
    check_sampler_available,
    make_pruner,
    make_sampler,
    preview,
    resolve,
    study_directions,
)
from lf_tuner.sweep.spec import SpecError, StageSpec, SweepSpec
from lf_tuner.sweep.storage import (
    HIDDEN,
    STUDY_NAME,
    DirLock,
    Pointer,
    check_before_start,
    check_pointer,
    is_url,
    mask,
    open_storage,
    prepare_dir,
    refuse_foreign,
    stage_study_name,
    write_pointer,
)
from lf_tuner.sweep.trial import (
    LAUNCHERS,
    Executor,
    Launcher,
    Outcome,
    TrialJob,
    TrialWatch,
    adoptable,
    execute,
    trial_config,
    trial_dir_name,
    write_trial_config,
)
from lf_tuner.train import kill_group, process_start, write_config

if TYPE_CHECKING:
    import optuna

    from lf_tuner.config import TrainConfig
    from lf_tuner.sweep.importing import ImportedRow

LOCK_FILE = "sweep.lock"
SPEC_COPY = "sweep.yaml"
BASE_COPY = "base.yaml"
HEARTBEAT_S = 30.0  # how often a running trial says it is alive (for machines that cannot see its pid)
STALE_S = 600.0  # a trial on another machine silent this long is taken to be dead
READY_WAIT_S = 120.0  # how long to wait for another process to finish setting up a stage's study
# trials that are not part of a stage's budget
NOT_COUNTED = ("requeued", "imported_from", *HIDDEN)

Emit = Callable[[str], None]


class SweepInterrupted(Exception):
    """The sweep was stopped (Ctrl-C or SIGTERM); running trials were marked failed and queued again."""


@dataclass
class Summary:
    """Where a sweep stands after this process is done with it."""

    counts: dict[str, int] = field(default_factory=dict)
    best_number: int | None = None
    best_stage: str = "main"
    best_value: float | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    pareto: int = 0  # multi-objective: trials on the Pareto front

    def as_json(self) -> dict[str, Any]:
        """`sweep --json`'s counts and best trial."""
        best = None
        if self.best_number is not None:
            best = {
                "number": self.best_number,
                "stage": self.best_stage,
                "params": self.best_params,
                "value": self.best_value,
            }
        return {"counts": self.counts, "best": best}


def load_base_config(spec: SweepSpec, spec_dir: Path, sweep_dir: Path) -> TrainConfig:
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
    from lf_tuner.train import smallest_gpu_gib

    assert spec.render is not None and spec.preset is not None
    request = RenderRequest(
        preset=spec.preset,
        output_dir=str(sweep_dir / "base-output"),
        overrides=tuple(spec.overrides),
        **spec.render.model_dump(),
    )
    rendered = render_train_config(request, detect_gpu_gib=smallest_gpu_gib)
    return dict(rendered.config)


def check_trial_configs(spec: SweepSpec, base: TrainConfig, points: list[dict[str, Any]]) -> None:
    """Every swept key of the trials the sweep can already see (grid points, range ends, tied values) against
    LLaMA-Factory's schema, on top of the base: refused before any trial starts."""
    from lf_tuner.config import validate_config

    swept = set(spec.parameters) | (set(spec.budget.model_dump(exclude_none=True)) if spec.budget else set())
    problems: dict[str, Problem] = {}  # the first trial that shows each key's problem
    for point in points:
        cfg = {**base, **point}
        if spec.budget is not None:
            cfg.update(spec.budget.model_dump(exclude_none=True))
        for p in validate_config(cfg):
            if p.key in swept and p.key in point and p.key not in problems:
                problems[p.key] = Problem(
                    f"parameters.{p.key}", f"{p.message} (in the trial {describe(point)})"
                )
    if problems:
        raise SpecError(list(problems.values()), "sweep")


def describe(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def counted(t: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial is part of its stage's budget (not an interrupted attempt, an import or a skip)."""
    return not any(t.user_attrs.get(k) for k in NOT_COUNTED)


def params_key(params: dict[str, Any], names: list[str]) -> tuple[str, ...]:
    return tuple(repr(params.get(n)) for n in names)


_WAIT = "wait"


class Sweep:
    """One process taking part in a sweep: it owns some GPU sets and pulls trials from the shared studies."""

    def __init__(
        self,
        spec: SweepSpec,
        sweep_dir: Path,
        base: TrainConfig,
        launcher: Launcher,
        *,
        storage_url: str | None = None,
        study_name: str = STUDY_NAME,
        worker: bool = False,
        poll_s: float = 1.0,
        emit: Emit | None = None,
        executor: Executor | None = None,
        imports: list[tuple[str, list[ImportedRow]]] | None = None,
    ) -> None:
        self.spec = spec
        self.dir = sweep_dir
        self.base = base
        self.launcher = launcher
        self.worker = worker
        self.poll_s = poll_s
        self.emit: Emit = emit or (lambda _msg: None)
        self.executor = executor
        self.imports = list(imports or [])
        self.study_name = study_name
        self.stop = threading.Event()
        # all processes on one journal share one lock (flock, next to the journal); processes on a database
        # share only what the database serialises
        on_db = storage_url is not None and is_url(storage_url)
        self.lock_shared = not on_db
        lock_path = (
            sweep_dir / LOCK_FILE if storage_url is None or on_db else Path(f"{storage_url}.sweep.lock")
        )
        self.lock = DirLock(lock_path)
        self.host = socket.gethostname()
        # who runs a trial: written as one attribute, so another process never reads half of it
        self.me = {"host": self.host, "pid": os.getpid(), "start": process_start(os.getpid())}
        self.errors: list[BaseException] = []
        self.stages = spec.stage_list()
        self.studies: dict[str, optuna.Study] = {}
        self.spaces: dict[str, Space] = {}
        self.token: str | None = None
        for stage in self.stages:
            check_sampler_available(spec.stage_method(stage))
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.storage = open_storage(storage_url, sweep_dir, self.emit)
        with self.lock.hold():
            self.token = self._existing_token()
            refuse_foreign(sweep_dir, self.token)
            self.study = self._study(self.stages[0])
            if self.imports:
                self._import(self.current_stage())

    # --- studies, one per stage ---

    def _existing_token(self) -> str | None:
        import optuna

        try:
            first = optuna.load_study(
                study_name=stage_study_name(self.study_name, self.stages[0].name), storage=self.storage
            )
        except KeyError:
            return None
        token = first.user_attrs.get("token")
        return str(token) if token else None

    def _study(self, stage: StageSpec) -> optuna.Study:
        """The stage's study, created (and set up) by the first process that gets here."""
        if stage.name in self.studies:
            return self.studies[stage.name]
        import optuna
        from optuna.exceptions import DuplicatedStudyError

        name = stage_study_name(self.study_name, stage.name)
        directions = study_directions(self.spec)
        try:
            study = optuna.create_study(study_name=name, storage=self.storage, directions=directions)
            self._set_up(study, stage)
        except DuplicatedStudyError:
            study = optuna.load_study(study_name=name, storage=self.storage)
            self._check_same(study)
            self._wait_ready(study, stage)
        self.spaces[stage.name] = Space.from_json(study.user_attrs["space"])
        self.token = str(study.user_attrs.get("token") or self.token)
        study.pruner = make_pruner(self.spec)
        method = self.spec.stage_method(stage)
        existing = len(study.get_trials(deepcopy=False))
        # reseeded by what is already done, so a resumed sweep does not replay its first draws
        seed = (
            int.from_bytes(os.urandom(4), "little")
            if self.worker
            else self.spec.seed + 1000 * self.stages.index(stage) + existing
        )
        study.sampler = make_sampler(method, self.spec.stage_sampler_args(stage), seed)
        self.studies[stage.name] = study
        self._reclaim(study, stage)
        return study

    def _check_same(self, study: optuna.Study) -> None:
        fingerprint = self.spec.fingerprint()
        got = study.user_attrs.get("fingerprint")
        if got is not None and got != fingerprint:
            raise LfTunerError(
                f"{self.dir}: holds a sweep started from a different spec (parameters, base, method or metric "
                f"changed); use a new --dir, or go on with the spec saved in {self.dir / SPEC_COPY}"
            )
        if [d.name.lower() for d in study.directions] != self.spec.directions:
            raise LfTunerError(f"study `{study.study_name}`: its directions differ from the spec's metrics")

    def _wait_ready(self, study: optuna.Study, stage: StageSpec) -> None:
        """A study another process created: wait until it is set up. Under the shared folder lock its creator
        would have finished, so an unfinished set-up means the creator was killed: finish it here. A database
        shared with other machines gets READY_WAIT_S before this process takes over."""
        deadline = time.monotonic() + (0.0 if self.lock_shared else READY_WAIT_S)
        while not study.user_attrs.get("ready"):
            if time.monotonic() >= deadline:
                self.emit(f"study `{study.study_name}`: its set-up was left unfinished; finishing it")
                self._set_up(study, stage)
                return
            time.sleep(min(self.poll_s, 1.0))

    def _set_up(self, study: optuna.Study, stage: StageSpec) -> None:
        """The creator's part: attributes, the stage's resolved space, grid points to run. Safe to run again
        on a set-up that was cut short: what is there already is kept, nothing is queued twice."""
        params = self.spec.stage_parameters(stage)
        attrs = study.user_attrs
        if "space" in attrs:
            space = Space.from_json(attrs["space"])
        else:
            best: dict[str, Any] | None = None
            if any(p.is_relative for p in params.values()):
                found = self.best_so_far()
                best = found[1] if found else self._best_imported()
            space = resolve(params, best, stage.name)
            if best is not None:
                self.emit(
                    f"stage {stage.name}: around the best so far ({describe(best)}): {_space_text(space)}"
                )
        self.token = str(attrs.get("token") or self.token or uuid.uuid4().hex)
        metrics = self.spec.objectives
        for key, value in {
            "fingerprint": self.spec.fingerprint(),
            "metric": metrics[0].name,
            "goal": metrics[0].goal,
            "metrics": [m.name for m in metrics],
            "goals": [m.goal for m in metrics],
            "method": self.spec.stage_method(stage),
            "stage": stage.name,
            "stage_index": self.stages.index(stage),
            "parameters": list(params),
            "space": space.as_json(),
            "token": self.token,
            "gpus_per_trial": self.spec.gpus_per_trial,
        }.items():
            study.set_user_attr(key, value)
        self.spaces[stage.name] = space
        if self.imports and stage is self.stages[0]:
            self._add_imports(study, stage, space)
        if self.spec.stage_method(stage) == "grid":
            points = space.grid_points()
            points = points[: stage.max_trials] if stage.max_trials else points
            taken = {  # measured, or queued by a set-up that was cut short
                params_key(dict(t.system_attrs.get("fixed_params") or t.params), space.sampled)
                for t in study.get_trials(deepcopy=False)
            }
            for point in points:
                if params_key(point, space.sampled) not in taken:
                    study.enqueue_trial({k: point[k] for k in space.sampled})
        study.set_user_attr("ready", True)

    def current_stage(self) -> StageSpec:
        """The first stage that is not done (the last one when all are)."""
        for stage in self.stages:
            if stage.name not in self.studies:
                return stage
            if self._state(stage) != "done":
                return stage
        return self.stages[-1]

    def best_so_far(self) -> tuple[optuna.trial.FrozenTrial, dict[str, Any]] | None:
        """The best completed trial of every stage opened so far (imports included), with its full params."""
        from optuna.trial import TrialState

        goal = self.spec.objectives[0].goal
        best: optuna.trial.FrozenTrial | None = None
        for study in self.studies.values():
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
                if t.values is None:
                    continue
                if _improves(t, best, goal):
                    best = t
        if best is None:
            return None
        return best, dict(best.user_attrs.get("params") or best.params)

    # --- imports ---

    def _best_imported(self) -> dict[str, Any] | None:
        from lf_tuner.sweep.importing import best_row

        return best_row([row for _, rows in self.imports for row in rows], self.spec)

    def _import(self, stage: StageSpec) -> None:
        study = self._study(stage)
        self._add_imports(study, stage, self.spaces[stage.name])

    def _add_imports(self, study: optuna.Study, stage: StageSpec, space: Space) -> None:
        from lf_tuner.sweep.importing import add_imported

        for source, rows in self.imports:
            added, notes = add_imported(study, space, self.spec, rows, source)
            self.emit(
                f"imported {added} trial(s) from {source} into stage {stage.name}"
                + "".join(f"; {n}" for n in notes)
            )
        self.imports = []

    def _measured(self, study: optuna.Study, space: Space) -> dict[tuple[str, ...], int]:
        """Points of the space that a completed trial of the study has measured, with that trial's number."""
        from optuna.trial import TrialState

        return {
            params_key(dict(t.user_attrs.get("params") or t.params), space.sampled): t.number
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        }

    # --- reclaiming trials whose process is gone ---

    def _owner_gone(self, t: optuna.trial.FrozenTrial) -> bool:
        a = t.user_attrs
        owner = a.get("owner")
        now = time.time()
        if isinstance(owner, dict) and owner.get("host") == self.host:
            return process_start(int(owner["pid"])) != owner.get("start")
        if isinstance(owner, dict):
            return not self.worker and now - float(a.get("heartbeat", a.get("started_at", 0))) > STALE_S
        if self.lock_shared:  # asking and naming happen under the lock we hold: its asker was killed between
            return True
        started = t.datetime_start.timestamp() if t.datetime_start else 0.0
        return now - started > STALE_S  # asked by a process that never got to say who it is

    def _reclaim(self, study: optuna.Study, stage: StageSpec) -> None:
        """Running trials whose process is gone: stop what they left running, adopt a result that came in
        meanwhile, or mark them interrupted and queue them again."""
        from optuna.trial import TrialState

        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if not self._owner_gone(t):
                continue
            a = t.user_attrs
            owner, child = a.get("owner") or {}, a.get("child") or {}
            here = owner.get("host") == self.host
            if here and child and process_start(int(child["pid"])) == child.get("start"):
                kill_group(int(child["pid"]))
                self.emit(f"trial {t.number}: stopped its training, left running by a sweep that was killed")
            outcome = None
            if a.get("trial_dir"):
                job = TrialJob(t.number, self.dir / str(a["trial_dir"]), "cpu")
                outcome = adoptable(job, self.spec, a.get("started_at"))
            trial = self._trial(study, t)
            if outcome is not None:
                trial.set_user_attr("adopted", True)
                self._record(study, trial, outcome, stage)
                self.emit(f"trial {t.number}: ended while its sweep was stopped; its result is adopted")
            else:
                self._requeue(study, trial, t.params, "the sweep process that ran it is gone")
                self.emit(
                    f"trial {t.number}: was running when its sweep stopped; marked interrupted and queued again"
                )

    @staticmethod
    def _trial(study: optuna.Study, t: optuna.trial.FrozenTrial) -> optuna.trial.Trial:
        import optuna

        return optuna.trial.Trial(study, t._trial_id)

    def _requeue(
        self, study: optuna.Study, trial: optuna.trial.Trial, params: dict[str, Any], reason: str
    ) -> None:
        """Mark an interrupted trial and queue its parameters again, once: the retry is queued before the
        trial is closed, and a retry already queued (by a process killed in between) is not queued twice."""
        from optuna.trial import TrialState

        trial.set_user_attr("status", "interrupted")
        trial.set_user_attr("reason", reason)
        trial.set_user_attr("requeued", True)
        if not any(t.user_attrs.get("retry_of") == trial.number for t in study.get_trials(deepcopy=False)):
            study.enqueue_trial(params, user_attrs={"retry_of": trial.number})
        study.tell(trial, state=TrialState.FAIL)

    # --- the loop ---

    def _state(self, stage: StageSpec) -> str:
        """`open` (trials to hand out), `busy` (budget spent, trials still running) or `done`."""
        from optuna.trial import TrialState

        trials = self.studies[stage.name].get_trials(deepcopy=False)
        if any(t.state == TrialState.WAITING for t in trials):
            return "open"
        if self.spec.stage_method(stage) != "grid" and sum(map(counted, trials)) < (stage.max_trials or 0):
            return "open"
        return "busy" if any(t.state == TrialState.RUNNING for t in trials) else "done"

    def _next(self) -> tuple[StageSpec, optuna.trial.Trial, dict[str, Any]] | str | None:
        """The next trial to run, `_WAIT` while a stage's last trials finish elsewhere, or None when done."""
        while True:
            got = self._next_or_skip()
            if got != "skip":
                return got

    def _next_or_skip(self) -> tuple[StageSpec, optuna.trial.Trial, dict[str, Any]] | str | None:
        for stage in self.stages:
            study = self._study(stage)
            state = self._state(stage)
            if state == "done":
                continue
            if state == "busy":
                self._reclaim(study, stage)
                return _WAIT
            space = self.spaces[stage.name]
            trial = study.ask(space.distributions())
            params = space.with_tied(trial.params)
            skip = self._skip_reason(study, stage, space, trial)
            if skip is not None:
                from optuna.trial import TrialState

                trial.set_user_attr(skip[0], True)
                trial.set_user_attr("status", skip[0])
                trial.set_user_attr("reason", skip[1])
                trial.set_user_attr("params", params)
                study.tell(trial, state=TrialState.FAIL)
                return "skip"
            for key, value in {
                "started_at": time.time(),
                "owner": self.me,
                "params": params,
                "stage": stage.name,
            }.items():
                trial.set_user_attr(key, value)
            return stage, trial, params
        return None

    def _skip_reason(
        self, study: optuna.Study, stage: StageSpec, space: Space, trial: optuna.trial.Trial
    ) -> tuple[str, str] | None:
        """A grid point already measured, or a sampled trial beyond the budget (another machine got there)."""
        from optuna.trial import TrialState

        trials = study.get_trials(deepcopy=False)
        if self.spec.stage_method(stage) == "grid":
            key = params_key(trial.params, space.sampled)
            done = self._measured(study, space).get(key)
            if done is not None:
                return "skipped", f"measured already by trial {done}"
            running = [
                t.number
                for t in trials
                if t.state == TrialState.RUNNING
                and t.number != trial.number
                and params_key(t.params, space.sampled) == key
            ]
            if running:
                return "skipped", f"running already as trial {running[0]}"
            return None
        if "retry_of" in trial.user_attrs or stage.max_trials is None:
            return None
        budget = [t.number for t in trials if counted(t) and t.state != TrialState.WAITING]
        if trial.number in budget and budget.index(trial.number) >= stage.max_trials:
            return "surplus", "the stage's budget was spent by other workers"
        return None

    def _record(
        self, study: optuna.Study, trial: optuna.trial.Trial, outcome: Outcome, stage: StageSpec
    ) -> None:
        from optuna.trial import TrialState

        for key, value in {
            "status": outcome.status,
            "runtime_s": round(outcome.runtime_s, 2),
            "reason": outcome.reason,
            "exit_code": outcome.exit_code,
            "steps": outcome.steps,
            "total_steps": outcome.total_steps,
            "stopped_early": outcome.stopped_early or None,
            "final_values": outcome.values if outcome.status == "pruned" else None,
        }.items():
            if value is not None or key in ("reason",):
                trial.set_user_attr(key, value)
        if outcome.status == "interrupted":
            self._requeue(study, trial, trial.params, outcome.reason)
        elif outcome.status == "completed" and outcome.values is not None:
            study.tell(trial, outcome.values)
        elif outcome.status == "pruned":
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, state=TrialState.FAIL)
        names = [m.name for m in self.spec.objectives]
        shown = " ".join(f"{n}={v:.6g}" for n, v in zip(names, outcome.values or [], strict=False))
        why = (
            f" ({outcome.reason})"
            if outcome.reason and (outcome.status != "completed" or outcome.stopped_early)
            else ""
        )
        where = "" if stage.name == "main" else f"{stage.name} "
        self.emit(
            f"{where}trial {trial.number} {outcome.status}{' ' + shown if shown else ''} in {outcome.runtime_s:.0f}s{why}"
        )

    def _watch(self, trial: optuna.trial.Trial) -> TrialWatch:
        return TrialWatch.for_spec(self.spec, report=trial.report, should_prune=trial.should_prune)

    def _run_one(
        self, stage: StageSpec, trial: optuna.trial.Trial, params: dict[str, Any], devices: str
    ) -> Outcome:
        job = TrialJob(trial.number, self.dir / trial_dir_name(trial.number, stage.name), devices)
        write_trial_config(job, trial_config(self.base, params, self.spec, job.output_dir), self.token or "")
        trial.set_user_attr("trial_dir", job.trial_dir.name)
        where = "CPU" if devices == "cpu" else "GPU " + devices
        prefix = "" if stage.name == "main" else f"{stage.name} "
        self.emit(f"{prefix}trial {trial.number} started on {where}: {describe(params)}")
        watch = self._watch(trial)
        beat = [time.monotonic()]

        def should_stop() -> str | None:
            if self.stop.is_set():
                return "the sweep stopped"
            if time.monotonic() - beat[0] > HEARTBEAT_S:
                beat[0] = time.monotonic()
                trial.set_user_attr("heartbeat", time.time())
            return None

        def on_start(pid: int) -> None:
            trial.set_user_attr("child", {"pid": pid, "start": process_start(pid)})

        if self.executor is not None:
            return self.executor(job, watch, should_stop)
        return execute(
            job, self.spec, self.launcher, watch, should_stop, poll_s=self.poll_s, on_start=on_start
        )

    def _slot(self, devices: str) -> None:
        try:
            while not self.stop.is_set():
                with self.lock.hold():
                    got = self._next()
                if got is None:
                    return
                if got == _WAIT:
                    self.stop.wait(self.poll_s)
                    continue
                assert not isinstance(got, str)
                stage, trial, params = got
                outcome = self._run_one(stage, trial, params, devices)
                with self.lock.hold():
                    self._record(self.studies[stage.name], trial, outcome, stage)
        except BaseException as exc:  # reported by run() after every slot has stopped
            self.errors.append(exc)
            self.stop.set()

    def run(self, slots: list[str]) -> Summary:
        """Run trials on every slot until every stage's budget is spent; Ctrl-C stops cleanly (SweepInterrupted)."""
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
        return summarize(self.studies, self.spec)


def _space_text(space: Space) -> str:
    parts = []
    for name, p in space.parameters.items():
        if p.values is not None:
            parts.append(f"{name} in {p.values}")
        elif p.min is not None and p.max is not None:
            parts.append(f"{name} {p.distribution} [{p.min:.4g}, {p.max:.4g}]")
    return ", ".join(parts)


def _improves(t: optuna.trial.FrozenTrial, best: optuna.trial.FrozenTrial | None, goal: str) -> bool:
    """Whether a completed trial takes the place of the best so far on the first metric."""
    return best is None or (t.values[0] < best.values[0]) == (goal == "minimize")


def summarize(studies: dict[str, optuna.Study], spec: SweepSpec) -> Summary:
    from optuna.trial import TrialState

    summary = Summary()
    goal = spec.objectives[0].goal
    best: tuple[str, optuna.trial.FrozenTrial] | None = None
    for stage, study in studies.items():
        for t in study.get_trials(deepcopy=False):
            if any(t.user_attrs.get(h) for h in HIDDEN):
                continue
            status = str(t.user_attrs.get("status", "running" if t.state == TrialState.RUNNING else "queued"))
            if t.user_attrs.get("imported_from"):
                status = "imported"
            summary.counts[status] = summary.counts.get(status, 0) + 1
            if t.state == TrialState.COMPLETE and t.values and _improves(t, best and best[1], goal):
                best = (stage, t)
        if spec.multi:
            summary.pareto += len(study.best_trials)
    if best is not None:
        summary.best_stage, trial = best
        summary.best_number, summary.best_value = trial.number, trial.values[0]
        summary.best_params = dict(trial.user_attrs.get("params", trial.params))
    return summary


def open_sweep(
    spec: SweepSpec,
    spec_path: Path,
    sweep_dir: Path,
    launcher: str,
    *,
    storage_url: str | None = None,
    study_name: str = STUDY_NAME,
    worker: bool = False,
    imports: Sequence[Path] = (),
    poll_s: float = 1.0,
    emit: Emit | None = None,
) -> Sweep:
    """A sweep ready to run: the base config, the trials it can already see and the imported runs checked, the
    folder's storage and pointer checked, and only then the folder set up (a refused folder gets nothing)."""
    from lf_tuner.sweep.importing import read_rows

    say: Emit = emit or (lambda _msg: None)
    base = load_base_config(spec, spec_path.parent, sweep_dir.absolute())
    check_trial_configs(spec, base, preview(spec))
    imported = []
    for path in imports:
        rows, notes = read_rows(path, spec)
        for note in notes:
            say(f"{path}: {note}")
        imported.append((str(path), rows))
    stages = spec.stage_list()
    pointer = Pointer(study_name, mask(storage_url) if storage_url else None, tuple(s.name for s in stages))
    check_pointer(sweep_dir, pointer)  # nothing is written into a folder that is refused
    check_before_start(sweep_dir, storage_url, stage_study_name(study_name, stages[0].name))
    prepare_dir(sweep_dir)
    write_pointer(sweep_dir, pointer)
    save_copies(spec_path, sweep_dir, base)
    return Sweep(
        spec,
        sweep_dir.absolute(),
        base,
        LAUNCHERS[launcher],
        storage_url=storage_url,
        study_name=study_name,
        worker=worker,
        poll_s=poll_s,
        emit=say,
        imports=imported,
    )


def save_copies(spec_path: Path, sweep_dir: Path, base: TrainConfig) -> None:
    """Keep the spec and the base config next to the study, the first time only."""
    copy = sweep_dir / SPEC_COPY
    if not copy.exists():
        copy.write_text(spec_path.read_text())
    base_copy = sweep_dir / BASE_COPY
    if not base_copy.exists():
        write_config(base, base_copy)
