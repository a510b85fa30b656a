"""The lab-notebook view of a sweep: stages in order, a table sorted by the metric, the Pareto front, pruned
trials and the GPU time they saved, importance only where the trials back it, plots, and the best
configuration as a training YAML."""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from lf_tuner.errors import LfTunerError
from lf_tuner.sweep.importance import Importance, assess, kind_of
from lf_tuner.sweep.storage import (
    HIDDEN,
    JOURNAL_FILE,
    POINTER_FILE,
    Pointer,
    is_url,
    journal_storage,
    open_storage,
    read_pointer,
    stage_study_name,
)
from lf_tuner.sweep.trial import CONFIG_FILE, curve

if TYPE_CHECKING:
    import optuna

BEST_MARK = "★"


@dataclass
class TrialRow:
    number: int
    params: dict[str, Any]
    status: str
    values: list[float] | None
    runtime_s: float | None
    reason: str = ""
    retry_of: int | None = None
    stage: str = "main"
    steps: int | None = None
    total_steps: int | None = None
    trial_dir: str | None = None
    imported: bool = False
    stopped_early: bool = False

    @property
    def value(self) -> float | None:
        return self.values[0] if self.values else None

    @property
    def label(self) -> str:
        return str(self.number) if self.stage == "main" else f"{self.stage}/{self.number}"

    @property
    def done(self) -> bool:
        return self.status in ("completed", "imported") and bool(self.values)

    def saved_s(self, gpus: int) -> float:
        """GPU seconds a pruned or early-stopped trial did not spend: its time per step x the steps it skipped."""
        if self.status != "pruned" and not self.stopped_early:
            return 0.0
        if not self.steps or not self.total_steps or not self.runtime_s or self.steps >= self.total_steps:
            return 0.0
        return self.runtime_s / self.steps * (self.total_steps - self.steps) * gpus

    def as_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "stage": self.stage,
            "params": self.params,
            "status": self.status,
            "value": self.value,
            "values": self.values,
            "runtime_s": self.runtime_s,
            "steps": self.steps,
            "total_steps": self.total_steps,
            "reason": self.reason,
            "retry_of": self.retry_of,
        }


@dataclass
class StageResult:
    name: str
    method: str
    trials: list[TrialRow]
    study: Any = None  # the optuna study (for the plots)
    importance: list[Importance] = field(default_factory=list)
    importance_note: str = ""


@dataclass
class SweepResults:
    metrics: list[str]
    goals: list[str]
    parameters: list[str]
    stages: list[StageResult]
    gpus_per_trial: int = 1
    hidden: int = 0

    @property
    def metric(self) -> str:
        return self.metrics[0]

    @property
    def goal(self) -> str:
        return self.goals[0]

    @property
    def multi(self) -> bool:
        return len(self.metrics) > 1

    @property
    def staged(self) -> bool:
        return [s.name for s in self.stages] != ["main"]

    @property
    def trials(self) -> list[TrialRow]:
        return [t for s in self.stages for t in s.trials]

    @property
    def best(self) -> TrialRow | None:
        done = [t for t in self.trials if t.done]
        if not done:
            return None
        sign = 1.0 if self.goal == "minimize" else -1.0
        return min(done, key=lambda t: sign * (t.value if t.value is not None else math.inf))

    @property
    def pareto(self) -> list[TrialRow]:
        """Completed trials no other completed trial beats on every metric."""
        done = [t for t in self.trials if t.done and t.values and len(t.values) == len(self.metrics)]
        signs = [1.0 if g == "minimize" else -1.0 for g in self.goals]

        def key(t: TrialRow) -> list[float]:
            return [s * v for s, v in zip(signs, t.values or [], strict=True)]

        def dominates(a: TrialRow, b: TrialRow) -> bool:
            ka, kb = key(a), key(b)
            return all(x <= y for x, y in zip(ka, kb, strict=True)) and ka != kb

        front = [t for t in done if not any(dominates(o, t) for o in done)]
        return sorted(front, key=key)

    @property
    def pruned(self) -> list[TrialRow]:
        return [t for t in self.trials if t.status == "pruned" or t.stopped_early]

    def saved_gpu_s(self) -> float:
        return sum(t.saved_s(self.gpus_per_trial) for t in self.trials)


def sort_rows(rows: list[TrialRow], goal: str) -> list[TrialRow]:
    """Completed trials best first, then the rest by trial number."""
    sign = 1.0 if goal == "minimize" else -1.0
    done = sorted((r for r in rows if r.done), key=lambda r: (sign * (r.value or 0.0), r.number))
    rest = sorted((r for r in rows if not r.done), key=lambda r: r.number)
    return done + rest


def _storage_for(sweep_dir: Path, pointer: Pointer, storage_url: str | None) -> optuna.storages.BaseStorage:
    if storage_url is not None:
        return open_storage(storage_url, sweep_dir)
    if pointer.storage is None:
        if not (sweep_dir / JOURNAL_FILE).is_file():
            raise LfTunerError(
                f"{sweep_dir}: no {JOURNAL_FILE} here; start the sweep with `lf-tuner sweep SPEC.yaml --dir {sweep_dir}`"
            )
        return journal_storage(sweep_dir / JOURNAL_FILE, write=False)
    if "***" in pointer.storage:
        raise LfTunerError(
            f"{sweep_dir}: its study is in {pointer.storage}; give the URL with its password: --storage URL"
        )
    if not is_url(pointer.storage):
        return journal_storage(Path(pointer.storage), write=False)
    return open_storage(pointer.storage, sweep_dir)


def _row(t: optuna.trial.FrozenTrial, stage: str) -> TrialRow:
    from optuna.trial import TrialState

    a = t.user_attrs
    default = {TrialState.RUNNING: "running", TrialState.WAITING: "queued"}.get(t.state, t.state.name.lower())
    status = str(a.get("status", default))
    values = list(t.values) if t.state == TrialState.COMPLETE and t.values else a.get("final_values")
    return TrialRow(
        number=t.number,
        params=dict(a.get("params") or t.params or t.system_attrs.get("fixed_params", {})),
        status="imported" if a.get("imported_from") else status,
        values=values,
        runtime_s=a.get("runtime_s"),
        reason=str(a.get("reason", "")),
        retry_of=a.get("retry_of"),
        stage=stage,
        steps=a.get("steps"),
        total_steps=a.get("total_steps"),
        trial_dir=a.get("trial_dir"),
        imported=bool(a.get("imported_from")),
        stopped_early=bool(a.get("stopped_early")),
    )


def load_results(sweep_dir: Path, importance: bool = True, storage_url: str | None = None) -> SweepResults:
    """Read a sweep's studies (every stage that has begun) from its storage."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pointer = read_pointer(sweep_dir) or Pointer()
    store = _storage_for(sweep_dir, pointer, storage_url)
    stages: list[StageResult] = []
    attrs: dict[str, Any] = {}
    hidden = 0
    for name in pointer.stages:
        try:
            study = optuna.load_study(study_name=stage_study_name(pointer.study, name), storage=store)
        except KeyError:
            if not stages and name == pointer.stages[0]:
                raise LfTunerError(
                    f"{sweep_dir}: its storage holds no lf-tuner sweep `{pointer.study}`; "
                    f"was it written by another tool? ({POINTER_FILE} names the study)"
                ) from None
            break
        attrs = attrs or study.user_attrs
        trials = study.get_trials(deepcopy=False)
        rows = [_row(t, name) for t in trials if not any(t.user_attrs.get(h) for h in HIDDEN)]
        hidden += len(trials) - len(rows)
        stage = StageResult(
            name=name,
            method=str(study.user_attrs.get("method", "")),
            trials=sort_rows(rows, str(attrs.get("goal", "minimize"))),
            study=study,
        )
        if importance:
            stage.importance, stage.importance_note = param_importance(study)
        stages.append(stage)
    metrics = list(attrs.get("metrics") or [attrs.get("metric", "value")])
    goals = list(attrs.get("goals") or [attrs.get("goal", "minimize")])
    names = list(attrs.get("parameters") or sorted({k for s in stages for r in s.trials for k in r.params}))
    return SweepResults(
        metrics=metrics,
        goals=goals,
        parameters=names,
        stages=stages,
        gpus_per_trial=int(attrs.get("gpus_per_trial", 1)),
        hidden=hidden,
    )


def param_importance(study: optuna.Study) -> tuple[list[Importance], str]:
    """Each varied parameter's share of the first metric's variance over the completed trials, with its
    spread and chance level; or a note saying why there is none."""
    from optuna.trial import TrialState

    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.values and math.isfinite(t.values[0])
    ]
    if len(complete) < 3:
        return [], f"{len(complete)} completed trial(s); it needs at least 3"
    names = [n for n in complete[0].params if all(n in t.params for t in complete)]
    found = []
    for name in names:
        result = assess(
            name,
            [t.params[name] for t in complete],
            [t.values[0] for t in complete],
            kind_of(complete[0].distributions[name]),
        )
        if result is not None:
            found.append(result)
    if not found:
        return [], "no swept parameter varies across the completed trials"
    return sorted(found, key=lambda i: -i.share), ""


# --------------------------------------------------------------------------- formats


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_runtime(seconds: float | None) -> str:
    """12.3s, 4m05s, 1h02m."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes}m{int(seconds % 60):02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def _with_steps(results: SweepResults) -> bool:
    return bool(results.pruned)


def table_rows(results: SweepResults, rows: list[TrialRow]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the notebook table (shared by Markdown and CSV)."""
    steps = _with_steps(results)
    header = [
        "trial",
        *results.parameters,
        "status",
        *results.metrics,
        *(["steps"] if steps else []),
        "runtime",
    ]
    best = results.best
    front = {id(t) for t in results.pareto} if results.multi else set()
    cells = []
    for r in rows:
        mark = f" {BEST_MARK}" if (r is best and not results.multi) or id(r) in front else ""
        values = list(r.values or []) + [None] * (len(results.metrics) - len(r.values or []))
        shown = values if r.done or r.status == "pruned" else [None] * len(results.metrics)
        step = (
            [f"{r.steps}/{r.total_steps}" if r.steps and r.total_steps else _cell(r.steps)] if steps else []
        )
        cells.append(
            [
                f"{r.number}{mark}",
                *(_cell(r.params.get(p)) for p in results.parameters),
                r.status,
                *(_cell(v) for v in shown),
                *step,
                format_runtime(r.runtime_s),
            ]
        )
    return header, cells


def _md_table(header: list[str], cells: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in cells]


def _importance_lines(stage: StageResult, metric: str) -> list[str]:
    if not stage.importance:
        return [f"Not available: {stage.importance_note}."]
    n = stage.importance[0].trials
    out = [
        f"Share of the variance of {metric} each parameter explains alone, over {n} completed trials; "
        "spread: 10th-90th percentile over resampled trials; chance: what a parameter explains with the "
        "metric shuffled (95th percentile).",
        "",
        "| parameter | explains | spread | chance | p | backed by the trials |",
        "|---|---|---|---|---|---|",
    ]
    for i in stage.importance:
        verdict = "yes" if i.backed else f"no: chance reaches it with {n} trials"
        out.append(
            f"| {i.param} | {i.share:.0%} | {i.low:.0%}-{i.high:.0%} | {i.chance:.0%} | {i.p_value:.3f} | {verdict} |"
        )
    return out


def to_markdown(results: SweepResults, plots: list[Path] | None = None, base: Path | None = None) -> str:
    goals = ", ".join(f"{m} ({g})" for m, g in zip(results.metrics, results.goals, strict=True))
    out = [f"# Sweep: {goals}", ""]
    for index, stage in enumerate(results.stages, start=1):
        if results.staged:
            out += [f"## Stage {index}: {stage.name} ({stage.method}, {len(stage.trials)} trials)", ""]
        out += [*_md_table(*table_rows(results, stage.trials)), ""]
    best = results.best
    if results.multi:
        front = results.pareto
        out.append(f"Pareto front: {len(front)} trial(s) marked {BEST_MARK}, none beaten on every metric")
    elif best is not None:
        where = f"{best.stage} " if results.staged else ""
        out.append(
            f"Best: {where}trial {best.number} {BEST_MARK}, {results.metric} = {best.value:.6g}: "
            + ", ".join(f"{k}={_cell(v)}" for k, v in best.params.items())
        )
    else:
        out.append("Best: none yet (no trial has completed)")
    if results.multi and results.pareto:
        out += ["", "## Pareto front", ""]
        header = ["trial", *results.parameters, *results.metrics]
        cells = [
            [
                r.label,
                *(_cell(r.params.get(p)) for p in results.parameters),
                *(_cell(v) for v in r.values or []),
            ]
            for r in results.pareto
        ]
        out += _md_table(header, cells)
    if results.pruned:
        pruned = [t for t in results.pruned if t.status == "pruned"]
        early = [t for t in results.pruned if t.stopped_early]
        ran = sum(t.steps or 0 for t in results.pruned)
        planned = sum(t.total_steps or 0 for t in results.pruned)
        out += [
            "",
            "## Stopped early",
            "",
            f"{len(pruned)} trial(s) pruned, {len(early)} stopped by early stopping: they ran {ran} of their {planned} "
            f"steps. GPU time saved: {format_runtime(results.saved_gpu_s())} (each trial's time per step x the steps "
            f"it did not run x {results.gpus_per_trial} GPU(s) per trial).",
            "",
        ]
        out += [
            f"- trial {t.label}: {t.reason or t.status}"
            for t in sorted(results.pruned, key=lambda t: t.number)
        ]
    for stage in results.stages:
        title = "## Parameter importance" + (f" ({stage.name})" if results.staged else "")
        out += ["", title, "", *_importance_lines(stage, results.metric)]
    failed = [
        r
        for r in sorted(results.trials, key=lambda r: (r.stage, r.number))
        if r.status not in ("completed", "running", "queued", "imported", "pruned")
    ]
    if failed:
        out += ["", "## Trials that did not complete", ""]
        out += [f"- trial {r.label} ({r.status}): {r.reason or 'no reason recorded'}" for r in failed]
    if plots:
        out += ["", "## Plots", ""]
        for p in plots:
            rel = p.relative_to(base) if base is not None and p.is_relative_to(base) else p
            out.append(f"![{p.stem}]({rel.as_posix()})")
    return "\n".join(out) + "\n"


def to_csv(results: SweepResults) -> str:
    staged = results.staged
    header = [
        *(["stage"] if staged else []),
        "trial",
        *results.parameters,
        "status",
        *results.metrics,
        "steps",
        "total_steps",
        "runtime_s",
    ]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for r in results.trials:
        values = (r.values or []) if r.done else []
        writer.writerow(
            [
                *([r.stage] if staged else []),
                r.number,
                *(r.params.get(p, "") for p in results.parameters),
                r.status,
                *(values[i] if i < len(values) else "" for i in range(len(results.metrics))),
                "" if r.steps is None else r.steps,
                "" if r.total_steps is None else r.total_steps,
                "" if r.runtime_s is None else r.runtime_s,
            ]
        )
    return buf.getvalue()


def to_json(results: SweepResults) -> str:
    best = results.best
    importance = {
        s.name: {i.param: i.as_json() for i in s.importance} for s in results.stages if s.importance
    }
    data: dict[str, Any] = {
        "metric": {"name": results.metric, "goal": results.goal},
        "metrics": [{"name": m, "goal": g} for m, g in zip(results.metrics, results.goals, strict=True)],
        "stages": [s.name for s in results.stages],
        "trials": [r.as_json() for r in results.trials],
        "best": None
        if best is None
        else {"number": best.number, "stage": best.stage, "params": best.params, "value": best.value},
        "pareto": [{"number": r.number, "stage": r.stage, "values": r.values} for r in results.pareto]
        if results.multi
        else [],
        "pruned": {
            "trials": len(results.pruned),
            "gpu_seconds_saved": round(results.saved_gpu_s(), 1),
        },
        "importance": importance if results.staged else importance.get("main", {}),
    }
    return json.dumps(data, indent=2) + "\n"


# --------------------------------------------------------------------------- plots


def _trial_output(sweep_dir: Path, r: TrialRow) -> Path | None:
    return sweep_dir / r.trial_dir / "output" if r.trial_dir else None


def _loss_curves(results: SweepResults, sweep_dir: Path, path: Path) -> bool:
    import matplotlib.pyplot as plt

    fig, (train_ax, eval_ax) = plt.subplots(1, 2, figsize=(12, 5))
    best = results.best
    drawn = 0
    for r in sorted(results.trials, key=lambda r: (r.stage, r.number)):
        out = _trial_output(sweep_dir, r)
        if out is None:
            continue
        style = {
            "linewidth": 2.5 if r is best else 1.0,
            "linestyle": "--" if r.status == "pruned" or r.stopped_early else "-",
        }
        for ax, key in ((train_ax, "loss"), (eval_ax, "eval_loss")):
            points = curve(out, key)
            if points:
                steps, losses = zip(*points, strict=True)
                ax.plot(steps, losses, label=f"trial {r.label} ({r.status})", **style)  # type: ignore[arg-type]
                drawn += 1
    if drawn:
        for ax, title in ((train_ax, "train loss"), (eval_ax, "eval loss (dashed: stopped early)")):
            ax.set_xlabel("step")
            ax.set_title(title)
            if ax.lines:
                ax.legend(fontsize="x-small")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    plt.close(fig)
    return bool(drawn)


def _save(axes: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    first = axes.flat[0] if hasattr(axes, "flat") else axes
    fig = first.figure
    fig.set_size_inches(max(fig.get_size_inches()[0], 8), max(fig.get_size_inches()[1], 5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # colour-bar axes that tight_layout cannot place
        fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _stage_plots(study: optuna.Study | None, results: SweepResults) -> list[tuple[str, Callable[[], Any]]]:
    """optuna's plots that a stage's completed trials can fill."""
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as om

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if study is not None else []
    if study is None or not complete:
        return []
    target: Callable[[optuna.trial.FrozenTrial], float] | None = None
    if results.multi:

        def target(t: optuna.trial.FrozenTrial) -> float:
            return float(t.values[0])

    name = results.metric
    plots: list[tuple[str, Callable[[], Any]]] = []
    if results.multi:
        plots.append(("pareto_front", lambda: om.plot_pareto_front(study, target_names=results.metrics)))
    plots.append(("history", lambda: om.plot_optimization_history(study, target=target, target_name=name)))
    varied = [n for n in complete[0].params if len({repr(t.params.get(n)) for t in complete}) > 1]
    if varied:
        plots.append(
            (
                "parallel_coordinates",
                lambda: om.plot_parallel_coordinate(study, target=target, target_name=name),
            )
        )
        plots.append(("slice", lambda: om.plot_slice(study, target=target, target_name=name)))
    if len(varied) >= 2 and len(complete) >= 3:
        pair = varied[:2]
        plots.append(
            ("contour", lambda: om.plot_contour(study, params=pair, target=target, target_name=name))
        )
    return plots


def write_plots(results: SweepResults, sweep_dir: Path, out_dir: Path) -> list[Path]:
    """loss_curves.png, and optuna's history, parallel coordinates, slice and contour plots per stage
    (the Pareto front instead of the history for several metrics)."""
    import matplotlib

    matplotlib.use("Agg")
    from optuna.exceptions import ExperimentalWarning

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    path = out_dir / "loss_curves.png"
    if _loss_curves(results, sweep_dir, path):
        written.append(path)
    for stage in results.stages:
        suffix = "" if not results.staged else f"-{stage.name}"
        for name, draw in _stage_plots(stage.study, results):
            path = out_dir / f"{name}{suffix}.png"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                warnings.simplefilter("ignore", UserWarning)
                try:
                    axes = draw()
                except (ImportError, ValueError):
                    continue  # e.g. contour without scipy, or too few distinct values
            _save(axes, path)
            written.append(path)
    return written


# --------------------------------------------------------------------------- the best configuration


def best_config(results: SweepResults, sweep_dir: Path, file_name: str = "best.yaml") -> str:
    """The best trial's configuration as a training YAML: the sweep's base (without the sweep's budget caps)
    with the trial's parameters, and an output_dir of its own."""
    from lf_tuner.config import dump_yaml
    from lf_tuner.sweep.engine import BASE_COPY

    best = results.best if not results.multi else (results.pareto[0] if results.pareto else None)
    if best is None:
        raise LfTunerError(f"{sweep_dir}: no trial has completed yet, so there is no best configuration")
    base_path = sweep_dir / BASE_COPY
    notes: list[str] = []
    if base_path.is_file():
        cfg = yaml.safe_load(base_path.read_text()) or {}
    elif best.trial_dir and (sweep_dir / best.trial_dir / CONFIG_FILE).is_file():
        cfg = yaml.safe_load((sweep_dir / best.trial_dir / CONFIG_FILE).read_text()) or {}
        notes.append(
            "from the trial's own config: budget caps the sweep set (max_steps, max_samples) are kept"
        )
    else:
        raise LfTunerError(f"{sweep_dir}: neither {BASE_COPY} nor the best trial's {CONFIG_FILE} is here")
    cfg.update(best.params)
    out = cfg.get("output_dir")
    if not isinstance(out, str) or Path(out).resolve().is_relative_to(sweep_dir.resolve()):
        cfg["output_dir"] = f"saves/{sweep_dir.resolve().name}-best"
    value = ", ".join(f"{m} = {v:.6g}" for m, v in zip(results.metrics, best.values or [], strict=False))
    where = f"{best.stage} " if results.staged else ""
    header = [
        f"The best trial of the sweep in {sweep_dir}: {where}trial {best.number}, {value}.",
        f"Train it: lf-tuner run {file_name}",
        *notes,
    ]
    if best.stopped_early and best.steps:
        header.append(f"It was stopped early at step {best.steps} of {best.total_steps} (early_stopping).")
    if best.imported:
        header.append(f"It was imported ({best.reason}).")
    return dump_yaml(cfg, header="\n".join(header))
