"""`sweep --import`: finished runs added to a study as completed trials, so TPE starts informed and a grid
skips what is measured.

Sources: a CSV or Markdown table with a column per swept parameter and per metric (the `report` table
itself qualifies), an earlier sweep's folder, or a folder of `lf-tuner run` outputs (their run records,
configs and all_results.json).
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lf_tuner.errors import LfTunerError
from lf_tuner.sweep.spec import SweepSpec
from lf_tuner.train import RECORD_NAME, read_json

if TYPE_CHECKING:
    import optuna

    from lf_tuner.sweep.space import Space

_DONE = ("", "completed", "complete", "done", "ok", "finished")


@dataclass(frozen=True)
class ImportedRow:
    """One finished run: its parameters, one value per metric, and where it came from (`file:line`)."""

    params: dict[str, Any]
    values: list[float]
    origin: str


def _cell(text: str) -> Any:
    """A table cell as a number when it is one (`1e-4` too, which YAML 1.1 reads as a string)."""
    text = text.replace("★", "").strip()
    if text in ("", "-"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    return text


def _markdown_tables(text: str) -> list[list[tuple[int, list[str]]]]:
    """Each pipe table of a Markdown file as (line number, cells) rows, header first, separator dropped."""
    tables: list[list[tuple[int, list[str]]]] = []
    current: list[tuple[int, list[str]]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("|"):
            cells = [c.strip() for c in stripped.strip("|").split("|")]
            if all(re.fullmatch(r":?-{3,}:?", c) for c in cells if c):
                continue
            current.append((number, cells))
        elif current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    return tables


def _from_table(
    header: list[str], rows: list[tuple[int, list[str]]], spec: SweepSpec, source: str
) -> tuple[list[ImportedRow], list[str]]:
    names = spec.sampled
    metrics = [m.name for m in spec.objectives]
    missing = [n for n in names + metrics if n not in header]
    if missing:
        raise LfTunerError(
            f"{source}: no column {', '.join(f'`{m}`' for m in missing)} (columns: {', '.join(header)}); "
            "name the columns after the sweep's parameters and metric"
        )
    status_col = header.index("status") if "status" in header else None
    out: list[ImportedRow] = []
    notes: dict[str, int] = {}
    for number, cells in rows:
        cells = cells + [""] * (len(header) - len(cells))
        if status_col is not None and cells[status_col].strip().lower() not in _DONE:
            notes["not completed"] = notes.get("not completed", 0) + 1
            continue
        values = [_cell(cells[header.index(m)]) for m in metrics]
        if not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values
        ):
            notes["without a finite metric"] = notes.get("without a finite metric", 0) + 1
            continue
        params = {n: _cell(cells[header.index(n)]) for n in names}
        out.append(ImportedRow(params, [float(v) for v in values], f"{source}:{number}"))
    return out, [f"{n} row(s) {why} left out" for why, n in notes.items()]


def _from_sweep_dir(path: Path, spec: SweepSpec) -> list[ImportedRow]:
    from lf_tuner.sweep.report import load_results

    results = load_results(path, importance=False)
    metrics = [m.name for m in spec.objectives]
    if results.metrics != metrics:
        raise LfTunerError(
            f"{path}: that sweep measured {', '.join(results.metrics)}, this one {', '.join(metrics)}; "
            "import only results of the same metric"
        )
    return [
        ImportedRow(dict(r.params), list(r.values), f"{path}/{r.label}")
        for r in results.trials
        if r.status == "completed" and r.values
    ]


def _from_run_records(path: Path, spec: SweepSpec) -> list[ImportedRow]:
    from lf_tuner.config import load_mapping
    from lf_tuner.sweep.trial import read_metric

    rows = []
    for record_path in sorted(path.rglob(RECORD_NAME)):
        record = read_json(record_path)
        if not isinstance(record, dict) or record.get("status") != "completed":
            continue
        try:
            cfg = load_mapping(Path(str(record.get("config_path", ""))))
        except LfTunerError:
            continue
        values = [read_metric(record_path.parent, m.name)[0] for m in spec.objectives]
        if any(v is None for v in values):
            continue
        rows.append(
            ImportedRow(
                {n: cfg.get(n) for n in spec.parameters}, [float(v or 0.0) for v in values], str(record_path)
            )
        )
    return rows


def read_rows(path: Path, spec: SweepSpec) -> tuple[list[ImportedRow], list[str]]:
    """The finished runs in `path` (a table, an earlier sweep's folder or `lf-tuner run` outputs), and notes
    on rows that were left out."""
    if path.is_dir():
        from lf_tuner.sweep.storage import JOURNAL_FILE, POINTER_FILE

        if (path / JOURNAL_FILE).exists() or (path / POINTER_FILE).exists():
            return _from_sweep_dir(path, spec), []
        rows = _from_run_records(path, spec)
        if not rows:
            raise LfTunerError(
                f"{path}: no earlier sweep (optuna.journal) and no completed `lf-tuner run` record ({RECORD_NAME}) "
                "with the metric under it"
            )
        return rows, []
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LfTunerError(f"--import {path}: cannot read it ({exc.strerror})") from None
    if path.suffix.lower() == ".csv":
        table = list(csv.reader(io.StringIO(text)))
        if not table:
            raise LfTunerError(f"{path}: the CSV file is empty")
        return _from_table(
            [h.strip() for h in table[0]],
            [(i, row) for i, row in enumerate(table[1:], start=2) if row],
            spec,
            str(path),
        )
    if path.suffix.lower() in (".md", ".markdown"):
        tables = _markdown_tables(text)
        metrics = [m.name for m in spec.objectives]
        for found in tables:
            header = found[0][1]
            if all(m in header for m in metrics):
                return _from_table(header, found[1:], spec, str(path))
        raise LfTunerError(
            f"{path}: no Markdown table with a `{'`, `'.join(metrics)}` column"
            + (f" ({len(tables)} table(s) found)" if tables else " (no `| ... |` table found)")
        )
    raise LfTunerError(
        f"--import {path}: give a .csv or .md table, an earlier sweep's folder or a folder of runs"
    )


def _fits(dist: Any, value: Any) -> Any:
    """The value as the distribution holds it, or raise ValueError when it is outside."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        for choice in dist.choices:
            if isinstance(choice, bool) or isinstance(value, bool):
                if choice is value:
                    return choice
            elif choice == value:
                return choice
        raise ValueError
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError
    if isinstance(dist, IntDistribution):
        if value != int(value) or not dist.low <= value <= dist.high:
            raise ValueError
        return int(value)
    assert isinstance(dist, FloatDistribution)
    if not dist.low <= value <= dist.high:
        raise ValueError
    return float(value)


def add_imported(
    study: optuna.Study, space: Space, spec: SweepSpec, rows: list[ImportedRow], source: str
) -> tuple[int, list[str]]:
    """Add the rows that fit the stage's space as completed trials (once: a second import adds nothing)."""
    import optuna

    dists = space.distributions()
    have = {
        (repr(sorted(t.params.items())), repr(t.values))
        for t in study.get_trials(deepcopy=False)
        if t.user_attrs.get("imported_from")
    }
    added, outside, seen = 0, [], 0
    for row in rows:
        try:
            params = {n: _fits(dists[n], row.params.get(n)) for n in space.sampled}
        except ValueError:
            shown = ", ".join(f"{n}={row.params.get(n)}" for n in space.sampled)
            outside.append(f"{row.origin} ({shown})")
            continue
        key = (repr(sorted(params.items())), repr(row.values))
        if key in have:
            seen += 1
            continue
        have.add(key)
        trial = optuna.trial.create_trial(
            params=params,
            distributions={n: dists[n] for n in space.sampled},
            values=row.values,
            user_attrs={
                "imported_from": row.origin,
                "status": "completed",
                "params": space.with_tied(params),
                "reason": f"imported from {row.origin}",
            },
        )
        study.add_trial(trial)
        added += 1
    notes = []
    if outside:
        notes.append(f"{len(outside)} row(s) outside the search space left out: {'; '.join(outside[:3])}")
    if seen:
        notes.append(f"{seen} row(s) imported before")
    del source
    return added, notes


def best_row(rows: list[ImportedRow], spec: SweepSpec) -> dict[str, Any] | None:
    """The parameters of the best row by the first metric (for a first stage set around the best)."""
    if not rows:
        return None
    goal = spec.objectives[0].goal
    pick = min if goal == "minimize" else max
    return dict(pick(rows, key=lambda r: r.values[0]).params)
