"""Token-length statistics and the choice of `cutoff_len`, counted as LLaMA-Factory 0.9.5 counts.

The length of a sample is `len(input_ids)` of `SupervisedDatasetProcessor` with no truncation: every turn's
templated prompt (source) and response (target) pieces, plus the trailing EOS of `efficient_eos` templates.
Pieces are counted in batches by the injected `TokenCounter` (for a model's tokenizer: its pre-token
shortcut for ASCII text, `encode_batch_fast` in Rust threads for the rest; no Python loop per token), each
distinct piece once per batch; on big datasets in worker processes while the next batches are read.
"""

from __future__ import annotations

import math
import os
import sys
from array import array
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from lf_tuner.chat.template import ChatTemplate, get_template
from lf_tuner.data.datasets import DatasetAttr, Sample, convert, iter_rows, resolve_datasets
from lf_tuner.errors import LfTunerError
from lf_tuner.lengths.counters import TokenCounter, load_hf_tokenizer

PERCENTILES = (50, 90, 95, 99)
_PARALLEL_MIN_BYTES = 32 << 20  # smaller data is counted in this process: a pool costs more than it saves
_MAX_WORKERS = 8


# ---------------------------------------------------------------- statistics (pure)


def percentile(sorted_values: list[int] | Any, p: float) -> int:
    """Nearest rank: the smallest L such that at least p% of the values are <= L."""
    n = len(sorted_values)
    if n == 0:
        raise ValueError("no values")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} is outside 0..100")
    rank = math.ceil(Fraction(str(p)) * n / 100)
    return int(sorted_values[max(rank, 1) - 1])


@dataclass(frozen=True)
class Stats:
    count: int
    mean: float
    p50: int
    p90: int
    p95: int
    p99: int
    max: int
    sum: int

    @classmethod
    def of(cls, values: Iterable[int]) -> Stats:
        ordered = sorted(values)
        if not ordered:
            raise ValueError("no values")
        total = sum(ordered)
        p50, p90, p95, p99 = (percentile(ordered, p) for p in PERCENTILES)
        return cls(len(ordered), total / len(ordered), p50, p90, p95, p99, ordered[-1], total)


@dataclass(frozen=True)
class Recommendation:
    percentile: float
    percentile_length: int
    multiple: int
    cutoff: int
    capped_at: int | None  # the model's max positions, when the cap applied
    truncated: int  # samples longer than the cutoff
    truncated_tokens: int  # tokens beyond the cutoff, summed over samples
    truncated_token_share: float  # of all tokens


def recommend(
    totals: list[int], *, percentile_: float = 95.0, multiple: int = 128, max_positions: int | None = None
) -> Recommendation:
    """The chosen percentile rounded up to a multiple, capped at the model's max positions."""
    if multiple < 1:
        raise ValueError("multiple must be >= 1")
    ordered = sorted(totals)
    if not ordered:
        raise ValueError("no values")
    p_len = percentile(ordered, percentile_)
    cutoff = max(multiple, math.ceil(p_len / multiple) * multiple)
    capped = None
    if max_positions is not None and cutoff > max_positions:
        cutoff, capped = max_positions, max_positions
    over = [t - cutoff for t in ordered if t > cutoff]
    all_tokens = sum(ordered)
    return Recommendation(
        percentile=percentile_,
        percentile_length=p_len,
        multiple=multiple,
        cutoff=cutoff,
        capped_at=capped,
        truncated=len(over),
        truncated_tokens=sum(over),
        truncated_token_share=(sum(over) / all_tokens) if all_tokens else 0.0,
    )


# ---------------------------------------------------------------- measuring


@dataclass
class Measurement:
    """Lengths of the valid samples (in order) and what was skipped."""

    total: array[int] = field(default_factory=lambda: array("q"))
    prompt: array[int] = field(default_factory=lambda: array("q"))
    response: array[int] = field(default_factory=lambda: array("q"))
    rows: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    skipped_examples: list[tuple[str, str]] = field(default_factory=list)
    approximate_rows: int = 0  # rows with tools / function calls (tool prompts not reproduced)
    row_lengths: dict[str, array[int]] = field(default_factory=dict)  # per dataset: -1 for skipped rows

    @property
    def count(self) -> int:
        return len(self.total)


class LengthCounter:
    """Counts templated sample lengths with one tokenizer and one template.

    Each distinct piece string of a batch (a template-only piece, a system prompt shared by many rows) is
    counted once. On big datasets, a counter that says so (`process_parallel`) counts in worker processes
    while this one reads the next batches.
    """

    def __init__(
        self,
        template: ChatTemplate,
        counter: TokenCounter,
        batch_size: int = 4096,
        workers: int | None = None,
    ) -> None:
        self.template = template
        self.counter = counter
        self.batch_size = batch_size
        self.workers = workers  # counting processes; None: one per CPU for big data (LF_TUNER_WORKERS)
        counter.prepare(template.stop_words, template.replace_eos)
        self._special = {
            "bos_token": 1 if counter.has_special("bos_token") else 0,
            "eos_token": 1 if counter.has_special("eos_token") else 0,
        }

    def lengths(self, samples: list[Sample]) -> list[tuple[int, int]]:
        """(prompt, response) token counts per sample."""
        batch = self._pieces(samples)
        return self._finish(batch, self.counter.count(batch.texts))

    def _pieces(self, samples: list[Sample]) -> _Pieces:
        """The batch's templated pieces: counts known without the tokenizer, and the texts left to count."""
        fixed = [0] * (2 * len(samples))  # prompt and response of sample i at 2i and 2i + 1
        texts: list[str] = []
        index: dict[str, int] = {}
        slots: list[int] = []
        which: list[int] = []
        special = self._special
        eos_tail = 1 if self.template.efficient_eos else 0
        for i, sample in enumerate(samples):
            fixed[2 * i + 1] += eos_tail
            turns = self.template.encode(sample.prompt + sample.response, sample.system, sample.tools)
            for source, target in turns:
                for slot, pieces in ((2 * i, source), (2 * i + 1, target)):
                    for piece in pieces:
                        if isinstance(piece, str):
                            if not piece:
                                continue
                            k = index.setdefault(piece, len(texts))
                            if k == len(texts):
                                texts.append(piece)
                            slots.append(slot)
                            which.append(k)
                        elif piece[0] == "token":
                            fixed[slot] += 1
                        else:
                            fixed[slot] += special[piece[0]]
        return _Pieces(fixed, texts, slots, which)

    def _finish(self, batch: _Pieces, counts: list[int]) -> list[tuple[int, int]]:
        fixed = batch.fixed
        for slot, k in zip(batch.slots, batch.which, strict=True):
            fixed[slot] += counts[k]
        return list(zip(fixed[0::2], fixed[1::2], strict=True))

    def measure(
        self,
        attrs: list[DatasetAttr],
        *,
        max_samples: int | None = None,
        strict: bool = False,
        keep_rows: bool = False,
        examples: int = 3,
    ) -> Measurement:
        """Stream every dataset, convert rows as LLaMA-Factory does, count them in batches.

        Batches are counted in order; with workers, a few are in flight while the next ones are read.
        """
        m = Measurement()
        with _Counting(self.counter, self._worker_count(attrs, max_samples)) as counting:
            pending: deque[tuple[Callable[[], list[int]], _Pieces, list[int], array[int] | None]] = deque()
            for attr in attrs:
                rows = m.row_lengths.setdefault(attr.name, array("q")) if keep_rows else None
                for batch in _batches(_converted(attr, max_samples), self.batch_size):
                    samples: list[Sample] = []
                    slots: list[int] = []
                    for location, sample in batch:
                        m.rows += 1
                        if isinstance(sample, str):
                            if strict:
                                raise LfTunerError(
                                    f"{location}: {sample}; fix the row or drop --strict to skip it"
                                )
                            m.skipped[sample] += 1
                            if len(m.skipped_examples) < examples:
                                m.skipped_examples.append((location, sample))
                            if rows is not None:
                                rows.append(-1)
                            continue
                        if sample.uses_tools:
                            m.approximate_rows += 1
                        slots.append(len(rows) if rows is not None else 0)
                        if rows is not None:
                            rows.append(0)
                        samples.append(sample)
                    pieces = self._pieces(samples)
                    pending.append((counting.submit(pieces.texts), pieces, slots, rows))
                    while len(pending) > counting.in_flight:
                        self._record(m, *pending.popleft())
            while pending:
                self._record(m, *pending.popleft())
        if m.rows == 0:
            raise LfTunerError("dataset: the dataset is empty; it holds no rows")
        if m.count == 0:
            reason, n = m.skipped.most_common(1)[0]
            raise LfTunerError(
                f"dataset: no valid samples ({n} rows skipped: {reason}); check the format "
                "(--format) and the columns in dataset_info.json"
            )
        return m

    def _record(
        self,
        m: Measurement,
        result: Callable[[], list[int]],
        pieces: _Pieces,
        slots: list[int],
        rows: array[int] | None,
    ) -> None:
        lengths = self._finish(pieces, result())
        for p, r in lengths:
            m.prompt.append(p)
            m.response.append(r)
            m.total.append(p + r)
        if rows is not None:
            for slot, (p, r) in zip(slots, lengths, strict=True):
                rows[slot] = p + r

    def _worker_count(self, attrs: list[DatasetAttr], max_samples: int | None) -> int:
        """Processes to count with: `workers`, else LF_TUNER_WORKERS, else one per CPU for big data."""
        if self.workers is not None:
            return max(1, self.workers)
        env = os.environ.get("LF_TUNER_WORKERS", "").strip()
        if env:
            try:
                return max(1, int(env))
            except ValueError:
                raise LfTunerError(f"LF_TUNER_WORKERS: `{env}` is not a number of processes") from None
        if not getattr(self.counter, "process_parallel", False) or sys.platform != "linux":
            return 1
        if max_samples is not None and max_samples * len(attrs) <= 2 * self.batch_size:
            return 1
        size = sum(f.stat().st_size for attr in attrs for f in attr.files if f.is_file())
        if size < _PARALLEL_MIN_BYTES:
            return 1
        return max(1, min(_cpu_count(), _MAX_WORKERS))


@dataclass
class _Pieces:
    """One batch: the counts known so far (prompt, response interleaved), the texts left to count, and for
    each occurrence of those texts the slot it adds to (`slots`) and which text it is (`which`)."""

    fixed: list[int]
    texts: list[str]
    slots: list[int]
    which: list[int]


_WORKER_COUNTER: TokenCounter | None = None


def _worker_init(counter: TokenCounter) -> None:
    global _WORKER_COUNTER
    _WORKER_COUNTER = counter


def _worker_counts(texts: list[str]) -> list[int]:
    assert _WORKER_COUNTER is not None
    return _WORKER_COUNTER.count(texts)


class _Counting:
    """Counts texts here, or in forked worker processes (a few batches in flight, results in order)."""

    def __init__(self, counter: TokenCounter, workers: int) -> None:
        self.counter = counter
        self.pool: Any = None
        self.in_flight = 0
        import multiprocessing

        if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
            # Forked workers inherit the tokenizer; Rust threads are not carried over a fork, so each worker
            # counts on one thread (TOKENIZERS_PARALLELISM=false also silences tokenizers' fork warning).
            saved = os.environ.get("TOKENIZERS_PARALLELISM")
            os.environ["TOKENIZERS_PARALLELISM"] = "false"
            try:
                ctx = multiprocessing.get_context("fork")
                self.pool = ctx.Pool(workers, _worker_init, (counter,))
            finally:
                if saved is None:
                    os.environ.pop("TOKENIZERS_PARALLELISM", None)
                else:
                    os.environ["TOKENIZERS_PARALLELISM"] = saved
            self.in_flight = 2 * workers

    def submit(self, texts: list[str]) -> Callable[[], list[int]]:
        if self.pool is None:
            counts = self.counter.count(texts)
            return lambda: counts
        return self.pool.apply_async(_worker_counts, (texts,)).get  # type: ignore[no-any-return]

    def __enter__(self) -> _Counting:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _converted(attr: DatasetAttr, max_samples: int | None) -> Iterator[tuple[str, Sample | str]]:
    for n, (location, row) in enumerate(iter_rows(attr)):
        if max_samples is not None and n >= max_samples:
            return
        yield location, convert(row, attr)


def _batches(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# ---------------------------------------------------------------- from a LLaMA-Factory config


def config_datasets(cfg: dict[str, Any]) -> tuple[list[str], str]:
    """The `dataset` names (comma string or list) and `dataset_dir` (default `data`) of a train config."""
    raw = cfg.get("dataset")
    if raw is None:
        raise LfTunerError("config: no `dataset` key; add `dataset: NAME` (registered in dataset_info.json)")
    names = [n.strip() for n in raw.split(",")] if isinstance(raw, str) else [str(n).strip() for n in raw]
    names = [n for n in names if n]
    if not names:
        raise LfTunerError("config: `dataset` is empty; add `dataset: NAME`")
    return names, str(cfg.get("dataset_dir", "data"))


def config_template(cfg: dict[str, Any], model_template: str | None = None) -> ChatTemplate:
    name = cfg.get("template") or model_template
    if not name:
        raise LfTunerError("config: no `template` key; add `template: NAME` (e.g. qwen3, llama3)")
    enable_thinking = cfg.get("enable_thinking", True)
    template = get_template(str(name), enable_thinking=enable_thinking)
    if cfg.get("default_system") is not None:
        spec = dict(template.spec, default_system=str(cfg["default_system"]))
        template = ChatTemplate(template.name, spec, template.enable_thinking)
    return template


def model_max_positions(spec: str | None) -> int | None:
    """The model's max positions when lf-tuner can resolve it (catalog name or local config.json)."""
    if not spec:
        return None
    try:
        from lf_tuner.models import resolve_model

        return int(resolve_model(spec).max_positions) or None
    except Exception:  # an unknown model only loses the cap
        return None


def measure_config_cutoff(cfg: dict[str, Any], *, percentile: float = 95.0, multiple: int = 128) -> int:
    """The recommended cutoff_len for a LLaMA-Factory train config (for `render --cutoff auto`).

    Reads `dataset`, `dataset_dir`, `template`, `model_name_or_path` (its tokenizer), `max_samples`,
    `enable_thinking` and `default_system`. Raises LfTunerError when something is missing.
    """
    model = cfg.get("model_name_or_path")
    if not model or not Path(str(model)).is_dir():
        raise LfTunerError(
            f"model_name_or_path: `{model}` is not a local model directory; the tokenizer is read from it "
            "(run `lf-tuner cutoff --tokenizer DIR` to measure with another one)"
        )
    names, dataset_dir = config_datasets(cfg)
    template = config_template(cfg)
    counter = LengthCounter(template, load_hf_tokenizer(str(model)))
    m = counter.measure(resolve_datasets(names, dataset_dir), max_samples=cfg.get("max_samples"))
    rec = recommend(
        list(m.total), percentile_=percentile, multiple=multiple, max_positions=model_max_positions(model)
    )
    return rec.cutoff


# ---------------------------------------------------------------- reporting (pure text)


def report(m: Measurement, rec: Recommendation) -> dict[str, Any]:
    """The `--json` object: total-length statistics at the top level, prompt/response apart."""
    total, prompt, response = Stats.of(m.total), Stats.of(m.prompt), Stats.of(m.response)
    out: dict[str, Any] = {
        "count": total.count,
        "mean": round(total.mean, 2),
        "p50": total.p50,
        "p90": total.p90,
        "p95": total.p95,
        "p99": total.p99,
        "max": total.max,
        "tokens": total.sum,
        "percentile": rec.percentile,
        "percentile_length": rec.percentile_length,
        "recommended_cutoff": rec.cutoff,
        "capped_at_max_positions": rec.capped_at,
        "truncated": rec.truncated,
        "truncated_share": round(rec.truncated / total.count, 6),
        "truncated_tokens": rec.truncated_tokens,
        "truncated_token_share": round(rec.truncated_token_share, 6),
        "prompt": _stats_dict(prompt),
        "response": _stats_dict(response),
        "rows": m.rows,
        "skipped": sum(m.skipped.values()),
        "skipped_reasons": dict(m.skipped.most_common()),
        "approximate_rows": m.approximate_rows,
    }
    return out


def _stats_dict(s: Stats) -> dict[str, Any]:
    return {"mean": round(s.mean, 2), "p50": s.p50, "p90": s.p90, "p95": s.p95, "p99": s.p99, "max": s.max}


def stats_table(m: Measurement) -> list[str]:
    """Fixed-width rows: count, mean, percentiles and max for total, prompt and response."""
    head = f"{'':<9}{'count':>8}{'mean':>9}{'p50':>8}{'p90':>8}{'p95':>8}{'p99':>8}{'max':>8}"
    lines = [head]
    for name, values in (("total", m.total), ("prompt", m.prompt), ("response", m.response)):
        s = Stats.of(values)
        lines.append(f"{name:<9}{s.count:>8}{s.mean:>9.1f}{s.p50:>8}{s.p90:>8}{s.p95:>8}{s.p99:>8}{s.max:>8}")
    return lines


def histogram(
    values: Iterable[int], *, bins: int = 12, width: int = 40, mark: int | None = None
) -> list[str]:
    """A terminal histogram of lengths in equal-width bins; `mark` flags the bin holding the cutoff."""
    ordered = sorted(values)
    if not ordered:
        return []
    lo, hi = ordered[0], ordered[-1]
    step = max(1, math.ceil((hi - lo + 1) / bins))
    counts = Counter((v - lo) // step for v in ordered)
    n_bins = (hi - lo) // step + 1
    peak = max(counts.values())
    label_w = len(f"{lo + (n_bins - 1) * step}-{lo + n_bins * step - 1}")
    lines = []
    for b in range(n_bins):
        start, end = lo + b * step, lo + (b + 1) * step - 1
        n = counts.get(b, 0)
        bar = "#" * (round(n / peak * width) if n else 0)
        flag = "  <- cutoff" if mark is not None and start <= mark <= end else ""
        lines.append(f"{f'{start}-{end}':>{label_w}} | {bar:<{width}} {n}{flag}")
    return lines


def plot(m: Measurement, rec: Recommendation, path: str) -> None:
    """Distribution and CDF of total lengths with the cutoff marked, saved with matplotlib (Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = sorted(m.total)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.hist(ordered, bins=min(60, max(5, len(set(ordered)))), color="#4477aa")
    ax1.set_xlabel("tokens per sample (template included)")
    ax1.set_ylabel("samples")
    n = len(ordered)
    ax2.plot(ordered, [(i + 1) / n for i in range(n)], color="#4477aa")
    ax2.set_xlabel("tokens per sample")
    ax2.set_ylabel("share of samples <= length")
    for ax in (ax1, ax2):
        ax.axvline(rec.cutoff, color="#cc3311", linestyle="--", label=f"cutoff_len {rec.cutoff}")
        ax.legend()
    fig.suptitle(
        f"{n} samples, P{rec.percentile:g} = {rec.percentile_length}, {rec.truncated} over the cutoff"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
