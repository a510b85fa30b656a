"""Filtered copies of a dataset file, in the input's own format (JSON array, JSONL, CSV, parquet)."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from pathlib import Path

from lf_tuner.data.dataset_info import DatasetAttr
from lf_tuner.data.readers import iter_json, pyarrow_parquet
from lf_tuner.errors import LfTunerError


def write_filtered(attr: DatasetAttr, keep: Iterator[bool] | list[bool], output: Path, *, force: bool) -> int:
    """Write the rows of `attr` whose `keep` flag is true to `output`, in the input's format; rows written.

    Never overwrites the input, nor an existing file without `force`; writes a temporary file and renames it.
    """
    if len(attr.files) != 1:
        raise LfTunerError(f"--output: dataset `{attr.name}` is a folder of files; filter one file at a time")
    source = attr.files[0]
    if output.exists() and output.resolve() == source.resolve():
        raise LfTunerError(f"--output: {output} is the input file; write to a new file")
    if output.exists() and not force:
        raise LfTunerError(f"--output: {output} exists; pass --force to overwrite it")
    if output.suffix.lower() != source.suffix.lower():
        raise LfTunerError(f"--output: {output} must have the input's extension `{source.suffix}`")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    flags = iter(keep)
    written = 0
    try:
        if attr.file_type == "parquet":
            written = _write_parquet(source, flags, tmp)
        elif attr.file_type == "csv":
            written = _write_csv(source, flags, tmp)
        else:
            written = _write_json(source, flags, tmp)
        os.replace(tmp, output)
    finally:
        if tmp.exists():
            tmp.unlink()
    return written


def _is_array(path: Path) -> bool:
    with path.open("rb") as fh:
        head = fh.read(4096).decode("utf-8", errors="ignore").lstrip("\ufeff \t\r\n")
    return head.startswith("[")


def _write_json(source: Path, flags: Iterator[bool], tmp: Path) -> int:
    array_mode = _is_array(source)
    written = 0
    with tmp.open("w", encoding="utf-8") as out:
        if array_mode:
            out.write("[")
        for (_, row), keep in zip(iter_json(source), flags, strict=False):
            if not keep:
                continue
            text = json.dumps(row, ensure_ascii=False)
            if array_mode:
                out.write(("\n" if written == 0 else ",\n") + text)
            else:
                out.write(text + "\n")
            written += 1
        if array_mode:
            out.write("\n]\n")
    return written


def _write_csv(source: Path, flags: Iterator[bool], tmp: Path) -> int:
    written = 0
    with source.open(encoding="utf-8", newline="") as fh, tmp.open("w", encoding="utf-8", newline="") as out:
        reader = csv.reader(fh)
        writer = csv.writer(out)
        header = next(reader, None)
        if header is not None:
            writer.writerow(header)
        rows = (row for row in reader if row)  # csv.DictReader skips blank rows too
        for row, keep in zip(rows, flags, strict=False):
            if keep:
                writer.writerow(row)
                written += 1
    return written


def _write_parquet(source: Path, flags: Iterator[bool], tmp: Path) -> int:
    pq = pyarrow_parquet()
    import pyarrow as pa

    pf = pq.ParquetFile(str(source))
    written = 0
    with pq.ParquetWriter(str(tmp), pf.schema_arrow) as writer:
        for batch in pf.iter_batches(batch_size=8192):
            mask = [next(flags, True) for _ in range(batch.num_rows)]
            table = pa.Table.from_batches([batch]).filter(pa.array(mask))
            writer.write_table(table)
            written += table.num_rows
    return written
