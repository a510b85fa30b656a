"""What `lf-tuner cutoff` needs around the counting: its inputs (the train config, the datasets, the model's
template and tokenizer), the typed report (`CutoffReport`, a dict only at the CLI edge), the text for people and
the filtered copy.

No click and no printing: functions return data or lines, and raise LfTunerError for bad config or data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lf_tuner.lengths.stats import Packing, Recommendation, Stats, histogram, pack

if TYPE_CHECKING:
    from lf_tuner.data import DatasetAttr
    from lf_tuner.lengths.counters import TokenCounter
    from lf_tuner.lengths.measure import Measurement


@dataclass(frozen=True)
class LengthSummary:
    """Mean, percentiles and max of one kind of length (prompt, response, chosen, rejected)."""

    mean: float
    p50: int
    p90: int
    p95: int
    p99: int
    max: int

    @classmethod
    def of(cls, values: Any) -> LengthSummary:
        return cls.from_stats(Stats.of(values))

    @classmethod
    def from_stats(cls, s: Stats) -> LengthSummary:
        return cls(round(s.mean, 2), s.p50, s.p90, s.p95, s.p99, s.max)


@dataclass
class CutoffReport:
    """The result of `lf-tuner cutoff`: total-length statistics (at the top level of the JSON), the
    recommendation and its costs, what was counted with, and what was skipped or approximated. `to_dict` is the
    `--json` object."""

    stage: str
    template: str
    tokenizer: str
    count: int
    total: LengthSummary  # its fields (mean, p50, ..., max) are the JSON's top-level keys
    tokens: int
    percentile: float
    percentile_length: int
    recommended_cutoff: int
    capped_at_max_positions: int | None
    truncated: int
    truncated_share: float
    truncated_tokens: int
    truncated_token_share: float
    prompt: LengthSummary
    response: LengthSummary
    rows: int
    skipped: int
    skipped_reasons: dict[str, int]
    approximate: bool
    approximate_rows: int
    approximate_reasons: dict[str, int]
    chosen: LengthSummary | None = None  # pairwise data: prompt + chosen
    rejected: LengthSummary | None = None  # pairwise data: prompt + rejected
    packing: Packing | None = None  # pretraining: blocks of the config's cutoff_len (LLaMA-Factory's default)
    config_cutoff_len: int | None = None
    config_truncated: int | None = None
    lora_vram_gib: float | None = None
    dropped: int | None = None
    written: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The `--json` object: `total` flattened in place, keys whose value does not apply (None) left out."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if key == "total":
                out.update(value)
            elif value is not None:
                out[key] = value
        return out


def resolve_data(
    data: Path | None,
    dataset: str | None,
    dataset_dir: Path | None,
    cfg: dict[str, Any],
    fmt: str | None,
    stage: str = "sft",
) -> list[DatasetAttr]:
    """The datasets to measure: one file (`data`, which must exist), or names (`dataset`, else the config's)
    looked up in dataset_info.json. `fmt` overrides the detected or registered format."""
    from lf_tuner.data import attr_for_file, resolve_datasets
    from lf_tuner.lengths.measure import config_datasets

    if data is not None:
        return [attr_for_file(data, fmt, stage=stage)]  # type: ignore[arg-type]
    names, cfg_dir = config_datasets({**cfg, **({"dataset": dataset} if dataset else {})})
    attrs = resolve_datasets(names, dataset_dir or Path(cfg_dir), stage=stage, media_dir=cfg.get("media_dir"))
    if fmt:
        for attr in attrs:
            attr.formatting = fmt  # type: ignore[assignment]
    return attrs


def model_template(model: str | None) -> str | None:
    """The chat template lf-tuner's catalog or the model's config names; None when the model is unknown."""
    if not model:
        return None
    try:
        from lf_tuner.models import resolve_model

        return resolve_model(str(model)).template
    except Exception:  # an unknown model just has no default template
        return None


def token_counter(
    tokenizer: Path | None, tiktoken_spec: str | None, model: str | None, *, trust_remote_code: bool = False
) -> TokenCounter | None:
    """The tokenizer to count with: a tiktoken encoding, `tokenizer`, or the model's own (its directory, the
    user's caches, or downloaded).

    None when neither a tokenizer nor a model was given.
    """
    from lf_tuner.lengths.counters import load_hf_tokenizer, load_tiktoken

    if tiktoken_spec:
        return load_tiktoken(tiktoken_spec)
    if tokenizer is None and model:
        from lf_tuner.models import find_tokenizer_dir

        tokenizer = find_tokenizer_dir(str(model))  # its folder, a cache or a download
    if tokenizer is None:
        return None
    return load_hf_tokenizer(tokenizer, trust_remote_code=trust_remote_code)


def model_folder(tokenizer: Path | None, model: str | None) -> Path | None:
    """The folder LLaMA-Factory loads the processor from: the model directory, else the tokenizer's."""
    if model and Path(str(model)).is_dir():
        return Path(str(model))
    if tokenizer is not None:
        return tokenizer.parent if tokenizer.is_file() else tokenizer
    return None


def pt_block(cfg: dict[str, Any]) -> int:
    """The pretraining block length: `cutoff_len` (LLaMA-Factory's default 2048), one less where the config sets
    `packing: true` itself (DataArguments subtracts one then; the pt default turns packing on after that)."""
    cutoff = int(cfg.get("cutoff_len", 2048))
    return cutoff - 1 if cfg.get("packing") is True or cfg.get("neat_packing") is True else cutoff


def build_report(
    m: Measurement,
    rec: Recommendation,
    *,
    template: str,
    counter: TokenCounter,
    cfg: dict[str, Any],
    vram_gib: float | None,
) -> CutoffReport:
    """The report: lengths, the recommendation, what was counted with, what the config's cutoff_len truncates,
    packing for pretraining, and the LoRA VRAM at the recommended cutoff (`vram_gib`) when the model is known."""
    total = Stats.of(m.total)
    pairwise = len(m.chosen) > 0
    reasons = dict(m.approximate_reasons.most_common())
    approximate_rows = m.approximate_rows
    if counter.approximate and counter.approximate_reason:
        reasons = {counter.approximate_reason: m.count}
        approximate_rows = m.count
    report = CutoffReport(
        stage=m.stage,
        template=template,
        tokenizer=counter.label,
        count=total.count,
        total=LengthSummary.from_stats(total),
        tokens=total.sum,
        percentile=rec.percentile,
        percentile_length=rec.percentile_length,
        recommended_cutoff=rec.cutoff,
        capped_at_max_positions=rec.capped_at,
        truncated=rec.truncated,
        truncated_share=round(rec.truncated / total.count, 6),
        truncated_tokens=rec.truncated_tokens,
        truncated_token_share=round(rec.truncated_token_share, 6),
        prompt=LengthSummary.of(m.prompt),
        response=LengthSummary.of(m.response),
        rows=m.rows,
        skipped=sum(m.skipped.values()),
        skipped_reasons=dict(m.skipped.most_common()),
        approximate=bool(counter.approximate or approximate_rows),
        approximate_rows=approximate_rows,
        approximate_reasons=reasons,
        chosen=LengthSummary.of(m.chosen) if pairwise else None,
        rejected=LengthSummary.of(m.rejected) if pairwise else None,
    )
    if m.stage == "pt":
        report.packing = pack(m.packed, pt_block(cfg), batch_size=int(cfg.get("preprocessing_batch_size", 1000)),
                              num_proc=cfg.get("preprocessing_num_workers"))  # fmt: skip
    if cfg.get("cutoff_len"):
        report.config_cutoff_len = int(cfg["cutoff_len"])
        report.config_truncated = sum(1 for t in m.total if t > int(cfg["cutoff_len"]))
    if vram_gib is not None:
        report.lora_vram_gib = round(vram_gib, 2)
    return report


def drop_longer(attr: DatasetAttr, m: Measurement, limit: int, output: Path, force: bool) -> tuple[int, int]:
    """Write the rows of `attr` within `limit` tokens to `output`: (samples dropped, rows written).

    `m` must come from `measure(..., keep_rows=True)`.
    """
    from lf_tuner.data import write_filtered

    rows = m.row_lengths[attr.name]
    dropped = sum(1 for n in rows if n > limit)
    written = write_filtered(attr, [n <= limit for n in rows], output, force=force)
    return dropped, written


def stats_table(m: Measurement) -> list[str]:
    """Fixed-width rows: count, mean, percentiles and max of each kind of length the stage has."""
    head = f"{'':<9}{'count':>8}{'mean':>9}{'p50':>8}{'p90':>8}{'p95':>8}{'p99':>8}{'max':>8}"
    lines = [head]
    kinds: list[tuple[str, Any]] = [("total", m.total)]
    if m.stage != "pt":
        kinds.append(("prompt", m.prompt))
        kinds += (
            [("chosen", m.chosen), ("rejected", m.rejected)] if len(m.chosen) else [("response", m.response)]
        )
    for name, values in kinds:
        s = Stats.of(values)
        lines.append(f"{name:<9}{s.count:>8}{s.mean:>9.1f}{s.p50:>8}{s.p90:>8}{s.p95:>8}{s.p99:>8}{s.max:>8}")
    return lines


def human_lines(
    m: Measurement, rec: Recommendation, report: CutoffReport, attrs: list[DatasetAttr]
) -> list[str]:
    """The text report: datasets, tokenizer, statistics table, histogram, the recommendation and its costs."""
    lines = [f"dataset   {attr.describe()}" for attr in attrs]
    approx = "  (APPROXIMATE)" if report.approximate else ""
    stage = f"   stage {report.stage}" if report.stage != "sft" else ""
    lines += [
        f"template  {report.template}   tokenizer {report.tokenizer}{approx}{stage}",
        f"rows      {m.rows} read, {m.count} samples, {report.skipped} skipped",
        "",
        "\n".join(stats_table(m)),
        "",
        "\n".join(histogram(m.total, mark=rec.cutoff)),
        "",
    ]
    cap = f", capped at max positions {rec.capped_at}" if rec.capped_at else ""
    what = "the longer of chosen and rejected, " if len(m.chosen) else ""
    lines.append(
        f"recommended cutoff_len: {rec.cutoff}  ({what}P{rec.percentile:g} = {rec.percentile_length}, "
        f"rounded up to a multiple of {rec.multiple}{cap})"
    )
    lines.append(
        f"  truncates {rec.truncated} of {m.count} samples ({rec.truncated / m.count:.2%}), "
        f"{rec.truncated_token_share:.2%} of all tokens"
    )
    if report.config_cutoff_len is not None:
        lines.append(
            f"  config cutoff_len {report.config_cutoff_len} truncates {report.config_truncated} samples"
        )
    if report.packing is not None:
        p = report.packing
        lines.append(
            f"  packed (LLaMA-Factory's pretraining default): {p.blocks} blocks of {p.block} tokens, "
            f"{p.dropped} tokens dropped at batch ends"
        )
    if report.lora_vram_gib is not None:
        lines.append(f"  LoRA VRAM at cutoff_len {rec.cutoff}, batch 1: {report.lora_vram_gib:.2f} GiB")
    for reason, n in report.approximate_reasons.items():
        lines.append(f"  APPROXIMATE: {n} samples: {reason}")
    if report.dropped is not None:
        lines.append(f"dropped {report.dropped} samples; wrote {report.written} rows")
    return lines
