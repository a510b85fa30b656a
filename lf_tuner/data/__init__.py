"""Datasets as LLaMA-Factory reads them: dataset_info.json, streaming readers, row converters, filtered copies.

The one reader of datasets in lf-tuner.
"""

from lf_tuner.data.datasets import (
    DatasetAttr,
    Sample,
    attr_for_file,
    convert,
    iter_rows,
    read_dataset_info,
    resolve_datasets,
    write_filtered,
)

__all__ = [
    "DatasetAttr",
    "Sample",
    "attr_for_file",
    "convert",
    "iter_rows",
    "read_dataset_info",
    "resolve_datasets",
    "write_filtered",
]
