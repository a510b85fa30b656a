"""Token-length statistics: percentiles, the choice of `cutoff_len`, packing into blocks, a histogram and a plot.

Pure functions over lists of lengths (the plot imports matplotlib when called).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

PERCENTILES = (50, 90, 95, 99)


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
    """Count, mean, percentiles, max and sum of lengths."""

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
    """The chosen cutoff_len and what it truncates."""

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
    over_tokens, all_tokens = sum(over), sum(ordered)
    return Recommendation(
        percentile=percentile_,
        percentile_length=p_len,
        multiple=multiple,
        cutoff=cutoff,
        capped_at=capped,
        truncated=len(over),
        truncated_tokens=over_tokens,
        truncated_token_share=(over_tokens / all_tokens) if all_tokens else 0.0,
    )


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


def plot(totals: Iterable[int], rec: Recommendation, path: str) -> None:
    """Distribution and CDF of total lengths with the cutoff marked, saved with matplotlib (Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = sorted(totals)
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


@dataclass(frozen=True)
class Packing:
    """LLaMA-Factory's pretraining packing: each preprocessing batch's texts concatenated and cut into blocks of
    `block` tokens; what is left at the end of a batch is dropped."""

    block: int
    blocks: int
    tokens: int  # in blocks
    dropped: int  # left over at the ends of batches


def pack(
    lengths: Sequence[int], block: int, *, batch_size: int = 1000, num_proc: int | None = None
) -> Packing:
    """`PretrainDatasetProcessor` with packing over `datasets.map(batched=True, batch_size, num_proc)`: the data
    is cut into `num_proc` contiguous shards, each mapped in batches of `batch_size` rows."""
    if block < 1:
        raise ValueError("block must be >= 1")
    n = len(lengths)
    shards = max(1, min(num_proc or 1, n)) if n else 1
    div, mod = divmod(n, shards)
    blocks = dropped = 0
    for index in range(shards):
        start = div * index + min(index, mod)
        end = start + div + (1 if index < mod else 0)
        for b in range(start, end, batch_size):
            total = sum(lengths[b : min(b + batch_size, end)])
            blocks += total // block
            dropped += total % block
    return Packing(block, blocks, blocks * block, dropped)
