"""Datasets as LLaMA-Factory reads them: dataset_info.json, streaming readers, row converters, filtered copies.

The one reader of datasets in lf-tuner.
"""

from lf_tuner.data.converters import Sample, check, convert
from lf_tuner.data.dataset_info import (
    STAGES,
    DatasetAttr,
    Formatting,
    Stage,
    attr_for_file,
    check_stage,
    pairwise,
    read_dataset_info,
    resolve_datasets,
)
from lf_tuner.data.filters import write_filtered
from lf_tuner.data.readers import iter_file, iter_rows

__all__ = [
    "STAGES",
    "DatasetAttr",
    "Formatting",
    "Sample",
    "Stage",
    "attr_for_file",
    "check",
    "check_stage",
    "convert",
    "iter_file",
    "iter_rows",
    "pairwise",
    "read_dataset_info",
    "resolve_datasets",
    "write_filtered",
]
