"""Streaming readers of dataset files, one row at a time, as the `datasets` loaders LLaMA-Factory uses read them.

JSON arrays are decoded object by object, JSONL line by line, CSV row by row, parquet batch by batch, text files
line by line. Errors name the file, line and column.
"""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lf_tuner.errors import LfTunerError

if TYPE_CHECKING:
    from lf_tuner.data.dataset_info import DatasetAttr

_CHUNK = 1 << 20


def iter_rows(attr: DatasetAttr) -> Iterator[tuple[str, Any]]:
    """(location, row) for every row of every file, streaming."""
    for file in attr.files:
        yield from iter_file(file, attr.file_type)


def iter_file(file: Path, file_type: str) -> Iterator[tuple[str, Any]]:
    """(location, row) for every row of one file of `file_type` (json, csv, parquet, text)."""
    if file_type == "json":
        yield from iter_json(file)
    elif file_type == "csv":
        yield from _iter_csv(file)
    elif file_type == "text":
        yield from _iter_text(file)
    else:
        yield from _iter_parquet(file)


def load_small_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise LfTunerError(f"{path}: byte {exc.start}: not UTF-8; re-encode the file as UTF-8") from None
    except json.JSONDecodeError as exc:
        raise LfTunerError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None


class _Text:
    """Decoded text of a file, read in chunks, with a position counter for error messages."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fh = path.open("rb")
        self.decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self.bytes_read = 0
        self.eof = False
        self.lines_before = 0  # newlines in text already dropped from the buffer
        self.col_before = 0  # characters after the last dropped newline
        self.first = True

    def read(self, size: int) -> str:
        raw = self.fh.read(size)
        final = not raw
        try:
            text = self.decoder.decode(raw, final=final)
        except UnicodeDecodeError as exc:
            raise LfTunerError(
                f"{self.path}: byte {self.bytes_read + exc.start}: not UTF-8; re-encode the file as UTF-8"
            ) from None
        self.bytes_read += len(raw)
        if final:
            self.eof = True
            self.fh.close()
        if self.first and text.startswith("\ufeff"):
            text = text[1:]
        self.first = self.first and not text
        return text

    def drop(self, text: str) -> None:
        n = text.count("\n")
        if n:
            self.lines_before += n
            self.col_before = len(text) - text.rfind("\n") - 1
        else:
            self.col_before += len(text)

    def where(self, buf: str, pos: int) -> str:
        line = self.lines_before + buf.count("\n", 0, pos) + 1
        nl = buf.rfind("\n", 0, pos)
        col = pos - nl if nl >= 0 else self.col_before + pos + 1
        return f"{self.path}:{line}:{col}"


def iter_json(path: Path) -> Iterator[tuple[str, Any]]:
    """A JSON array (decoded object by object) or JSON lines, as the `json` loader of `datasets` accepts."""
    with path.open("rb") as fh:
        first = b""
        while True:
            block = fh.read(4096)
            if not block:
                break
            first = block.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
            if first:
                break
    if not first:
        return
    if first != b"[":
        yield from _iter_jsonl(path)
        return
    text = _Text(path)
    buf = text.read(_CHUNK)
    while not text.eof and "[" not in buf:
        buf += text.read(_CHUNK)
    yield from _iter_json_array(text, buf)


def _iter_json_array(text: _Text, buf: str) -> Iterator[tuple[str, Any]]:
    decoder = json.JSONDecoder()
    pos = buf.index("[") + 1
    index = 0
    size = _CHUNK
    expect_value = True
    while True:
        while True:  # skip whitespace, refilling
            while pos < len(buf) and buf[pos] in " \t\r\n":
                pos += 1
            if pos < len(buf) or text.eof:
                break
            buf, pos = _refill(text, buf, pos, size)
        if pos >= len(buf):
            raise LfTunerError(f"{text.where(buf, pos)}: invalid JSON: the array is not closed with `]`")
        ch = buf[pos]
        if ch == "]" and (index == 0 or not expect_value):
            rest = buf[pos + 1 :]
            while not text.eof:
                rest += text.read(_CHUNK)
            if rest.strip():
                raise LfTunerError(f"{text.where(buf, pos + 1)}: invalid JSON: extra data after the array")
            return
        if not expect_value:
            if ch != ",":
                raise LfTunerError(f"{text.where(buf, pos)}: invalid JSON: expecting `,` or `]`")
            pos += 1
            expect_value = True
            continue
        try:
            value, end = decoder.raw_decode(buf, pos)
            if end == len(buf) and not text.eof:  # a number may continue in the next chunk
                raise json.JSONDecodeError("incomplete", buf, end)
        except json.JSONDecodeError as exc:
            if text.eof:
                raise LfTunerError(f"{text.where(buf, exc.pos)}: invalid JSON: {exc.msg}") from None
            buf, pos = _refill(text, buf, pos, size)
            size *= 2
            continue
        size = _CHUNK
        yield f"{text.path}[{index}]", value
        index += 1
        pos = end
        expect_value = False
        if pos > _CHUNK:
            text.drop(buf[:pos])
            buf, pos = buf[pos:], 0


def _refill(text: _Text, buf: str, pos: int, size: int) -> tuple[str, int]:
    text.drop(buf[:pos])
    return buf[pos:] + text.read(size), 0


def _iter_jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    with path.open("rb") as fh:
        offset = 0
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise LfTunerError(
                    f"{path}:{lineno}: byte {offset + exc.start}: not UTF-8; re-encode the file as UTF-8"
                ) from None
            offset += len(raw)
            if lineno == 1:
                line = line.lstrip("\ufeff")
            if not line.strip():
                continue
            try:
                yield f"{path}:{lineno}", json.loads(line)
            except json.JSONDecodeError as exc:
                col = min(exc.pos, len(line.rstrip("\r\n"))) + 1
                raise LfTunerError(f"{path}:{lineno}:{col}: invalid JSON: {exc.msg}") from None


def _iter_text(path: Path) -> Iterator[tuple[str, Any]]:
    """Lines as `datasets`' text loader reads them (universal newlines, line breaks dropped): {"text": line}."""
    try:
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                yield f"{path}:{lineno}", {"text": line.rstrip("\n")}
    except UnicodeDecodeError as exc:
        raise LfTunerError(f"{path}: byte {exc.start}: not UTF-8; re-encode the file as UTF-8") from None


def _iter_csv(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            for row in reader:
                yield f"{path}:{reader.line_num}", {k: (v if v != "" else None) for k, v in row.items()}
    except UnicodeDecodeError as exc:
        raise LfTunerError(f"{path}: byte {exc.start}: not UTF-8; re-encode the file as UTF-8") from None


def _iter_parquet(path: Path) -> Iterator[tuple[str, Any]]:
    pq = pyarrow_parquet()
    try:
        pf = pq.ParquetFile(str(path))
    except Exception as exc:
        raise LfTunerError(f"{path}: not a readable parquet file ({exc})") from None
    index = 0
    for batch in pf.iter_batches(batch_size=8192):
        for row in batch.to_pylist():
            yield f"{path}[{index}]", row
            index += 1


def pyarrow_parquet() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise LfTunerError("parquet: reading parquet needs pyarrow; pip install pyarrow") from None
    return pq
