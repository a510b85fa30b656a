"""The lab-notebook view of a sweep: a table sorted by the metric, parameter importance and plots."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lf_tuner.errors import LfTunerError
from lf_tuner.sweep.engine import JOURNAL_FILE, STUDY_NAME, storage
from lf_tuner.sweep.trial import loss_curve, trial_dir_name

if TYPE_CHECKING:
    import optuna

BEST_MARK = "★"


@dataclass
class TrialRow:
    number: int
    params: dict[str, Any]
    status: str
    value: float | None
    runtime_s: float | None
    reason: str = ""
    retry_of: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "params": self.params,
            "status": self.status,
            "value": self.value,
            "runtime_s": self.runtime_s,
            "reason": self.reason,
            "retry_of": self.retry_of,
        }


@dataclass
class SweepResults:
    metric: str
    goal: str
    parameters: list[str]
    trials: list[TrialRow]
    importance: dict[str, float] = field(default_factory=dict)
    importance_note: str = ""

    @property
    def best(self) -> TrialRow | None:
        done = [t for t in self.trials if t.status == "completed" and t.value is not None]
        if not done:
            return None
        pick = min if self.goal == "minimize" else max
        return pick(done, key=lambda t: t.value if t.value is not None else math.inf)


def sort_rows(rows: list[TrialRow], goal: str) -> list[TrialRow]:
    """Completed trials best first, then the rest by trial number."""
    sign = 1.0 if goal == "minimize" else -1.0
    done = sorted(
        (r for r in rows if r.status == "completed" and r.value is not None),
        key=lambda r: (sign * (r.value or 0.0), r.number),
    )
    rest = sorted(
        (r for r in rows if not (r.status == "completed" and r.value is not None)), key=lambda r: r.number
    )
    return done + rest


def load_results(sweep_dir: Path, importance: bool = True) -> SweepResults:
    """Read a sweep's study from its journal."""
    if not (sweep_dir / JOURNAL_FILE).is_file():
        raise LfTunerError(
            f"{sweep_dir}: no {JOURNAL_FILE} here; start the sweep with `lf-tuner sweep SPEC.yaml --dir {sweep_dir}`"
        )
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=STUDY_NAME, storage=storage(sweep_dir))
    except KeyError:
        raise LfTunerError(
            f"{sweep_dir / JOURNAL_FILE}: holds no lf-tuner sweep; was it written by another tool?"
        ) from None
    attrs = study.user_attrs
    rows = []
    for t in study.get_trials(deepcopy=False):
        default = {TrialState.RUNNING: "running", TrialState.WAITING: "queued"}.get(
            t.state, t.state.name.lower()
        )
        rows.append(
            TrialRow(
                number=t.number,
                params=dict(t.user_attrs.get("params") or t.params or t.system_attrs.get("fixed_params", {})),
                status=str(t.user_attrs.get("status", default)),
                value=t.value if t.state == TrialState.COMPLETE else None,
                runtime_s=t.user_attrs.get("runtime_s"),
                reason=str(t.user_attrs.get("reason", "")),
                retry_of=t.user_attrs.get("retry_of"),
            )
        )
    results = SweepResults(
        metric=str(attrs.get("metric", "value")),
        goal=str(attrs.get("goal", "minimize")),
        parameters=list(attrs.get("parameters", sorted({k for r in rows for k in r.params}))),
        trials=sort_rows(rows, str(attrs.get("goal", "minimize"))),
    )
    if importance:
        results.importance, results.importance_note = param_importance(study)
    return results


def param_importance(study: optuna.Study) -> tuple[dict[str, float], str]:
    """optuna's parameter importance over completed trials, or a note saying why there is none."""
    import optuna
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return {}, "needs at least 2 completed trials"
    varied = [n for n in complete[0].params if len({repr(t.params.get(n)) for t in complete}) > 1]
    if not varied:
        return {}, "no swept parameter varies across the completed trials"
    try:
        scores = optuna.importance.get_param_importances(study, params=varied)
    except (RuntimeError, ValueError) as exc:
        return {}, f"optuna could not compute it ({exc})"
    return {k: float(v) for k, v in scores.items()}, ""


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


def table_rows(results: SweepResults) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the notebook table (shared by Markdown and CSV)."""
    header = ["trial", *results.parameters, "status", results.metric, "runtime"]
    best = results.best
    cells = []
    for r in results.trials:
        mark = f" {BEST_MARK}" if best is not None and r.number == best.number else ""
        runtime = format_runtime(r.runtime_s)
        cells.append(
            [
                f"{r.number}{mark}",
                *(_cell(r.params.get(p)) for p in results.parameters),
                r.status,
                _cell(r.value),
                runtime,
            ]
        )
    return header, cells


def to_markdown(results: SweepResults, plots: list[Path] | None = None, base: Path | None = None) -> str:
    header, cells = table_rows(results)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    best = results.best
    out = [f"# Sweep: {results.metric} ({results.goal})", "", *lines, ""]
    if best is not None:
        out.append(
            f"Best: trial {best.number} {BEST_MARK}, {results.metric} = {best.value:.6g}: "
            + ", ".join(f"{k}={_cell(v)}" for k, v in best.params.items())
        )
    else:
        out.append("Best: none yet (no trial has completed)")
    out += ["", "## Parameter importance", ""]
    if results.importance:
        out += ["| parameter | importance |", "|---|---|"]
        out += [f"| {k} | {v:.3f} |" for k, v in results.importance.items()]
    else:
        out.append(f"Not available: {results.importance_note}.")
    failed = [
        r
        for r in sorted(results.trials, key=lambda r: r.number)
        if r.status not in ("completed", "running", "queued")
    ]
    if failed:
        out += ["", "## Trials that did not complete", ""]
        out += [f"- trial {r.number} ({r.status}): {r.reason or 'no reason recorded'}" for r in failed]
    if plots:
        out += ["", "## Plots", ""]
        for p in plots:
            rel = p.relative_to(base) if base is not None and p.is_relative_to(base) else p
            out.append(f"![{p.stem}]({rel.as_posix()})")
    return "\n".join(out) + "\n"


def to_csv(results: SweepResults) -> str:
    header = ["trial", *results.parameters, "status", results.metric, "runtime_s"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for r in results.trials:
        writer.writerow(
            [
                r.number,
                *(r.params.get(p, "") for p in results.parameters),
                r.status,
                "" if r.value is None else r.value,
                "" if r.runtime_s is None else r.runtime_s,
            ]
        )
    return buf.getvalue()


def to_json(results: SweepResults) -> str:
    best = results.best
    data = {
        "metric": {"name": results.metric, "goal": results.goal},
        "trials": [r.as_json() for r in results.trials],
        "best": None if best is None else {"number": best.number, "params": best.params, "value": best.value},
        "importance": results.importance,
    }
    return json.dumps(data, indent=2) + "\n"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def write_plots(results: SweepResults, sweep_dir: Path, out_dir: Path) -> list[Path]:
    """loss_curves.png (train loss of every trial) and metric_vs_<param>.png per swept parameter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    best = results.best
    fig, ax = plt.subplots(figsize=(8, 5))
    drawn = 0
    for r in sorted(results.trials, key=lambda r: r.number):
        points = loss_curve(sweep_dir / trial_dir_name(r.number) / "output")
        if not points:
            continue
        steps, losses = zip(*points, strict=True)
        is_best = best is not None and r.number == best.number
        ax.plot(steps, losses, label=f"trial {r.number} ({r.status})", linewidth=2.5 if is_best else 1.0)
        drawn += 1
    if drawn:
        ax.set_xlabel("step")
        ax.set_ylabel("train loss")
        ax.set_title("Loss curves")
        ax.legend(fontsize="small")
        path = out_dir / "loss_curves.png"
        fig.savefig(path, dpi=100)
        written.append(path)
    plt.close(fig)
    done = [r for r in results.trials if r.status == "completed" and r.value is not None]
    for param in results.parameters:
        raw = [r.params.get(param) for r in done]
        if not done or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in raw):
            continue
        xs = [float(x) for x in raw if x is not None]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.scatter(xs, [float(r.value or 0.0) for r in done])
        if best is not None and best.value is not None:
            ax.scatter(
                [float(best.params[param])],
                [best.value],
                marker="*",
                s=200,
                label=f"best (trial {best.number})",
            )
            ax.legend(fontsize="small")
        if min(xs) > 0 and max(xs) / min(xs) >= 100:
            ax.set_xscale("log")
        ax.set_xlabel(param)
        ax.set_ylabel(results.metric)
        ax.set_title(f"{results.metric} vs {param}")
        path = out_dir / f"metric_vs_{_safe(param)}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        written.append(path)
        plt.close(fig)
    return written
