"""Token lengths as LLaMA-Factory counts them: tokenizer counters, media tokens, measuring, statistics and the
cutoff report."""

from lf_tuner.lengths.counters import HFTokenCounter, TokenCounter, load_hf_tokenizer, load_tiktoken
from lf_tuner.lengths.measure import (
    LengthCounter,
    Measurement,
    config_counter,
    config_datasets,
    config_stage,
    config_template,
    measure_config_cutoff,
    model_max_positions,
)
from lf_tuner.lengths.media import MediaArgs, MediaCounter
from lf_tuner.lengths.report import (
    CutoffReport,
    LengthSummary,
    build_report,
    drop_longer,
    human_lines,
    model_folder,
    model_template,
    resolve_data,
    stats_table,
    token_counter,
)
from lf_tuner.lengths.stats import (
    Packing,
    Recommendation,
    Stats,
    histogram,
    pack,
    percentile,
    plot,
    recommend,
)

__all__ = [
    "CutoffReport",
    "HFTokenCounter",
    "LengthCounter",
    "LengthSummary",
    "MediaArgs",
    "MediaCounter",
    "Measurement",
    "Packing",
    "Recommendation",
    "Stats",
    "TokenCounter",
    "build_report",
    "config_counter",
    "config_datasets",
    "config_stage",
    "config_template",
    "drop_longer",
    "histogram",
    "human_lines",
    "load_hf_tokenizer",
    "load_tiktoken",
    "measure_config_cutoff",
    "model_folder",
    "model_max_positions",
    "model_template",
    "pack",
    "percentile",
    "plot",
    "recommend",
    "resolve_data",
    "stats_table",
    "token_counter",
]
