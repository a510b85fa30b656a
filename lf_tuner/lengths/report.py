"""What `lf-tuner cutoff` needs around lengths.py's counting: its inputs (the train config, the datasets, the
model's template and tokenizer), the report (the `--json` object and the text for people) and the filtered copy.

No click and no printing: functions return data or lines, and raise LfTunerError for bad config or data.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lf_tuner.data.datasets import DatasetAttr
    from lf_tuner.lengths.counters import TokenCounter
    from lf_tuner.lengths.measure import Measurement, Recommendation


def resolve_data(
    data: Path | None, dataset: str | None, dataset_dir: Path | None, cfg: dict[str, Any], fmt: str | None
) -> list[DatasetAttr]:
    """The datasets to measure: one file (`data`, which must exist), or names (`dataset`, else the config's)
    looked up in dataset_info.json. `fmt` overrides the detected or registered format."""
    from lf_tuner.data.datasets import attr_for_file, resolve_datasets
    from lf_tuner.lengths.measure import config_datasets

    if data is not None:
        return [attr_for_file(data, fmt)]  # type: ignore[arg-type]
    names, cfg_dir = config_datasets({**cfg, **({"dataset": dataset} if dataset else {})})
    attrs = resolve_datasets(names, dataset_dir or Path(cfg_dir))
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
    tokenizer: Path | None, tiktoken_spec: str | None, model: str | None
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
    return load_hf_tokenizer(tokenizer)


def build_report(
    m: Measurement,
    rec: Recommendation,
    *,
    template: str,
    counter: Any,
    cfg: dict[str, Any],
    vram_gib: float | None,
) -> dict[str, Any]:
    """The `--json` object: lengths.report, what was counted with, what the config's cutoff_len truncates, and
    the LoRA VRAM at the recommended cutoff (`vram_gib`) when the model is known."""
    from lf_tuner.lengths.measure import report

    result = report(m, rec)
    result.update(template=template, tokenizer=counter.label, approximate=counter.approximate)
    if cfg.get("cutoff_len"):
        result["config_cutoff_len"] = int(cfg["cutoff_len"])
        result["config_truncated"] = sum(1 for t in m.total if t > int(cfg["cutoff_len"]))
    if vram_gib is not None:
        result["lora_vram_gib"] = round(vram_gib, 2)
    return result


def drop_longer(attr: DatasetAttr, m: Measurement, limit: int, output: Path, force: bool) -> tuple[int, int]:
    """Write the rows of `attr` within `limit` tokens to `output`: (samples dropped, rows written).

    `m` must come from `measure(..., keep_rows=True)`.
    """
    from lf_tuner.data.datasets import write_filtered

    rows = m.row_lengths[attr.name]
    dropped = sum(1 for n in rows if n > limit)
    written = write_filtered(attr, [n <= limit for n in rows], output, force=force)
    return dropped, written


def human_lines(
    m: Measurement, rec: Recommendation, result: dict[str, Any], attrs: list[DatasetAttr]
) -> list[str]:
    """The text report: datasets, tokenizer, statistics table, histogram, the recommendation and its costs."""
    from lf_tuner.lengths.measure import histogram, stats_table

    lines = [f"dataset   {attr.describe()}" for attr in attrs]
    approx = "  (APPROXIMATE: not the model's tokenizer)" if result["approximate"] else ""
    lines += [
        f"template  {result['template']}   tokenizer {result['tokenizer']}{approx}",
        f"rows      {m.rows} read, {m.count} samples, {result['skipped']} skipped",
        "",
        "\n".join(stats_table(m)),
        "",
        "\n".join(histogram(m.total, mark=rec.cutoff)),
        "",
    ]
    cap = f", capped at max positions {rec.capped_at}" if rec.capped_at else ""
    lines.append(
        f"recommended cutoff_len: {rec.cutoff}  (P{rec.percentile:g} = {rec.percentile_length}, "
        f"rounded up to a multiple of {rec.multiple}{cap})"
    )
    lines.append(
        f"  truncates {rec.truncated} of {m.count} samples ({rec.truncated / m.count:.2%}), "
        f"{rec.truncated_token_share:.2%} of all tokens"
    )
    if "config_cutoff_len" in result:
        lines.append(
            f"  config cutoff_len {result['config_cutoff_len']} truncates {result['config_truncated']} samples"
        )
    if "lora_vram_gib" in result:
        lines.append(f"  LoRA VRAM at cutoff_len {rec.cutoff}, batch 1: {result['lora_vram_gib']:.2f} GiB")
    if m.approximate_rows:
        lines.append(
            f"  {m.approximate_rows} samples use tools/function calls: tool prompts counted as raw JSON"
        )
    if "dropped" in result:
        lines.append(f"dropped {result['dropped']} samples; wrote {result['written']} rows")
    return lines
