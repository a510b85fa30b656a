"""Token-length statistics and the choice of `cutoff_len`, counted as LLaMA-Factory 0.9.5 counts.

The length of a sample is `len(input_ids)` of `SupervisedDatasetProcessor` with no truncation: every turn's
templated prompt (source) and response (target) pieces, plus the trailing EOS of `efficient_eos` templates.
Pieces are tokenized in batches by the injected `TokenCounter` (Rust threads); no Python loop per token.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from lf_tuner.chat.template import ChatTemplate, Piece, get_template
from lf_tuner.datasets import DatasetAttr, Sample, convert, iter_rows, resolve_datasets
from lf_tuner.errors import LfTunerError
from lf_tuner.tokenize import TokenCounter, load_hf_tokenizer

PERCENTILES = (50, 90, 95, 99)
_CACHE_MAX_CHARS = 256
_CACHE_MAX_ITEMS = 200_000


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
    """Counts templated sample lengths with one tokenizer and one template."""

    def __init__(self, template: ChatTemplate, counter: TokenCounter, batch_size: int = 4096) -> None:
        self.template = template
        self.counter = counter
        self.batch_size = batch_size
        counter.prepare(template.stop_words, template.replace_eos)
        self._special = {
            "bos_token": 1 if counter.has_special("bos_token") else 0,
            "eos_token": 1 if counter.has_special("eos_token") else 0,
        }
        self._cache: dict[str, int] = {}

    def lengths(self, samples: list[Sample]) -> list[tuple[int, int]]:
        """(prompt, response) token counts per sample."""
        fixed = [[0, 0] for _ in samples]
        texts: list[str] = []
        owners: list[int] = []
        eos_tail = 1 if self.template.efficient_eos else 0
        for i, sample in enumerate(samples):
            messages = sample.prompt + sample.response
            fixed[i][1] += eos_tail
            for source, target in self.template.encode(messages, sample.system, sample.tools):
                for part, pieces in ((0, source), (1, target)):
                    for piece in pieces:
                        self._add(piece, i * 2 + part, fixed, texts, owners)
        counts = self.counter.count(texts)
        for owner, text, n in zip(owners, texts, counts, strict=True):
            fixed[owner // 2][owner % 2] += n
            if len(text) <= _CACHE_MAX_CHARS and len(self._cache) < _CACHE_MAX_ITEMS:
                self._cache[text] = n
        return [(a, b) for a, b in fixed]

    def _add(
        self, piece: Piece, owner: int, fixed: list[list[int]], texts: list[str], owners: list[int]
    ) -> None:
        if isinstance(piece, str):
            if not piece:
                return
            cached = self._cache.get(piece)
            if cached is not None:
                fixed[owner // 2][owner % 2] += cached
            else:
                texts.append(piece)
                owners.append(owner)
        elif piece[0] == "token":
            fixed[owner // 2][owner % 2] += 1
        else:
            fixed[owner // 2][owner % 2] += self._special[piece[0]]

    def measure(
        self,
        attrs: list[DatasetAttr],
        *,
        max_samples: int | None = None,
        strict: bool = False,
        keep_rows: bool = False,
        examples: int = 3,
    ) -> Measurement:
        """Stream every dataset, convert rows as LLaMA-Factory does, count them in batches."""
        m = Measurement()
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
                for slot, (p, r) in zip(slots, self.lengths(samples), strict=True):
                    m.prompt.append(p)
                    m.response.append(r)
                    m.total.append(p + r)
                    if rows is not None:
                        rows[slot] = p + r
        if m.rows == 0:
            raise LfTunerError("dataset: the dataset is empty; it holds no rows")
        if m.count == 0:
            reason, n = m.skipped.most_common(1)[0]
            raise LfTunerError(
                f"dataset: no valid samples ({n} rows skipped: {reason}); check the format "
                "(--format) and the columns in dataset_info.json"
            )
        return m


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
