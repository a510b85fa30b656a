"""Reading alpaca / sharegpt / openai datasets the way LLaMA-Factory 0.9.5 reads them, one row at a time.

`dataset_info.json` resolution follows `llamafactory/data/parser.py`; the row conversion follows
`llamafactory/data/converter.py` and the validity check of `processor/supervised.py`. Files are streamed:
JSON arrays are decoded object by object, JSONL line by line, CSV row by row, parquet batch by batch.
"""

from __future__ import annotations

import codecs
import csv
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from lf_tuner.chat.template import Message
from lf_tuner.errors import LfTunerError, did_you_mean

Formatting = Literal["alpaca", "sharegpt", "openai"]
FILE_TYPES = {"json": "json", "jsonl": "json", "csv": "csv", "parquet": "parquet"}
_CHUNK = 1 << 20


@dataclass
class DatasetAttr:
    """`llamafactory.data.parser.DatasetAttr`, restricted to local files."""

    name: str
    files: list[Path]
    formatting: Formatting = "alpaca"
    ranking: bool = False
    num_samples: int | None = None
    system: str | None = None
    tools: str | None = None
    images: str | None = None
    videos: str | None = None
    audios: str | None = None
    chosen: str | None = None
    rejected: str | None = None
    kto_tag: str | None = None
    prompt: str | None = "instruction"
    query: str | None = "input"
    response: str | None = "output"
    history: str | None = None
    messages: str | None = "conversations"
    role_tag: str | None = "from"
    content_tag: str | None = "value"
    user_tag: str | None = "human"
    assistant_tag: str | None = "gpt"
    observation_tag: str | None = "observation"
    function_tag: str | None = "function_call"
    system_tag: str | None = "system"
    detected: bool = False
    file_type: str = field(default="json")

    def join(self, attr: dict[str, Any]) -> None:
        """`DatasetAttr.join`: formatting, ranking, columns and tags from a dataset_info entry."""
        fmt = attr.get("formatting", "alpaca")
        if fmt not in ("alpaca", "sharegpt", "openai"):
            raise LfTunerError(
                f"dataset_info.json: {self.name}.formatting: `{fmt}` is not alpaca, sharegpt or openai"
            )
        self.formatting = fmt
        self.ranking = bool(attr.get("ranking", False))
        self.num_samples = attr.get("num_samples")
        if "columns" in attr:
            for key in ("prompt", "query", "response", "history", "messages", "system", "tools", "images",
                        "videos", "audios", "chosen", "rejected", "kto_tag"):  # fmt: skip
                setattr(self, key, attr["columns"].get(key))
        if "tags" in attr:
            for key in ("role_tag", "content_tag", "user_tag", "assistant_tag", "observation_tag",
                        "function_tag", "system_tag"):  # fmt: skip
                setattr(self, key, attr["tags"].get(key))

    def describe(self) -> str:
        how = "detected" if self.detected else "dataset_info.json"
        return f"{self.name}: {self.formatting} ({how}), {', '.join(str(f) for f in self.files)}"


@dataclass(frozen=True)
class Sample:
    """One converted row: LLaMA-Factory's `_prompt`, `_response`, `_system`, `_tools`."""

    prompt: list[Message]
    response: list[Message]
    system: str | None
    tools: str | None

    @property
    def uses_tools(self) -> bool:
        return bool(self.tools) or any(m.role == "function" for m in self.prompt + self.response)


# ---------------------------------------------------------------- dataset_info.json


def read_dataset_info(dataset_dir: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(dataset_dir) / "dataset_info.json"
    if not path.is_file():
        raise LfTunerError(
            f"dataset_dir: {path} not found; pass --dataset-dir DIR (the folder holding dataset_info.json)"
        )
    data = _load_small_json(path)
    if not isinstance(data, dict):
        raise LfTunerError(f"{path}: must be a JSON object of dataset name -> attributes")
    return data


def resolve_datasets(names: list[str], dataset_dir: str | os.PathLike[str]) -> list[DatasetAttr]:
    """`get_dataset_list` for local datasets: each name looked up in `{dataset_dir}/dataset_info.json`."""
    info = read_dataset_info(dataset_dir)
    out = []
    for name in names:
        if name not in info:
            raise LfTunerError(
                f"dataset: `{name}` is not defined in {Path(dataset_dir) / 'dataset_info.json'};"
                f"{did_you_mean(name, info) or ' add an entry with file_name and formatting.'}"
            )
        entry = info[name]
        if not isinstance(entry, dict):
            raise LfTunerError(f"dataset_info.json: {name}: must be an object with file_name")
        remote = [
            k
            for k in ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")
            if k in entry
        ]
        if remote:
            raise LfTunerError(
                f"dataset_info.json: {name}.{remote[0]}: lf-tuner reads local files only; download the data "
                "and register it with file_name"
            )
        if "file_name" not in entry:
            raise LfTunerError(f"dataset_info.json: {name}: no file_name; add the data file's path")
        files, ftype = _dataset_files(Path(dataset_dir) / entry["file_name"])
        attr = DatasetAttr(name=name, files=files, file_type=ftype)
        attr.join(entry)
        if attr.ranking:
            raise LfTunerError(
                f"dataset_info.json: {name}: a ranking (preference) dataset; cutoff measures SFT data only"
            )
        out.append(attr)
    return out


def _dataset_files(path: Path) -> tuple[list[Path], str]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file())
    elif path.is_file():
        files = [path]
    else:
        raise LfTunerError(f"dataset: file {path} not found")
    if not files:
        raise LfTunerError(f"dataset: folder {path} holds no files")
    types = {FILE_TYPES.get(f.suffix.lstrip(".").lower()) for f in files}
    if None in types:
        bad = next(f for f in files if FILE_TYPES.get(f.suffix.lstrip(".").lower()) is None)
        raise LfTunerError(f"dataset: {bad}: unsupported file type; use .json, .jsonl, .csv or .parquet")
    if len(types) > 1:
        raise LfTunerError(
            f"dataset: {path}: file types should be identical (found {sorted(map(str, types))})"
        )
    return files, str(types.pop())


def attr_for_file(path: str | os.PathLike[str], formatting: Formatting | None = None) -> DatasetAttr:
    """A dataset given as a file: its dataset_info.json entry when the folder has one naming it, else detected."""
    file = Path(path)
    files, ftype = _dataset_files(file)
    info_path = file.parent / "dataset_info.json"
    if info_path.is_file() and file.is_file():
        info = _load_small_json(info_path)
        for name, entry in info.items() if isinstance(info, dict) else []:
            if (
                isinstance(entry, dict)
                and entry.get("file_name")
                and (file.parent / entry["file_name"]).resolve() == file.resolve()
            ):
                attr = DatasetAttr(name=name, files=files, file_type=ftype)
                attr.join(entry)
                if formatting and formatting != attr.formatting:
                    break  # the flag wins over the registry
                return attr
    attr = DatasetAttr(name=file.name, files=files, file_type=ftype, detected=True)
    first = next((row for _, row in iter_rows(attr) if isinstance(row, dict)), None)
    if first is None:
        raise LfTunerError(f"dataset: {file} is empty; it holds no rows")
    detect_format(attr, first, formatting)
    return attr


def detect_format(attr: DatasetAttr, row: dict[str, Any], formatting: Formatting | None) -> None:
    """Columns and tags from the first row; `--format` picks the converter when given."""
    msg_key = next((k for k in ("conversations", "messages") if isinstance(row.get(k), list)), None)
    fmt: Formatting = formatting or ("sharegpt" if msg_key else "alpaca")
    attr.formatting = fmt
    if fmt == "alpaca":
        if msg_key:
            raise LfTunerError(
                f"dataset: {attr.name}: rows have `{msg_key}`; use --format sharegpt or openai"
            )
        return
    if msg_key is None:
        raise LfTunerError(
            f"dataset: {attr.name}: no `conversations` or `messages` list in the first row; "
            "use --format alpaca or register the columns in dataset_info.json"
        )
    attr.messages = msg_key
    first = next((m for m in row[msg_key] if isinstance(m, dict)), {})
    if "role" in first or fmt == "openai":
        attr.role_tag, attr.content_tag = "role", "content"
        attr.user_tag, attr.assistant_tag, attr.system_tag = "user", "assistant", "system"
        attr.observation_tag = "tool" if fmt == "sharegpt" else attr.observation_tag
    for key in ("system", "tools"):
        if key in row:
            setattr(attr, key, key)


# ---------------------------------------------------------------- reading rows


def iter_rows(attr: DatasetAttr) -> Iterator[tuple[str, Any]]:
    """(location, row) for every row of every file, streaming."""
    for file in attr.files:
        if attr.file_type == "json":
            yield from _iter_json(file)
        elif attr.file_type == "csv":
            yield from _iter_csv(file)
        else:
            yield from _iter_parquet(file)


def _load_small_json(path: Path) -> Any:
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


def _iter_json(path: Path) -> Iterator[tuple[str, Any]]:
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


def _iter_csv(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            for row in reader:
                yield f"{path}:{reader.line_num}", {k: (v if v != "" else None) for k, v in row.items()}
    except UnicodeDecodeError as exc:
        raise LfTunerError(f"{path}: byte {exc.start}: not UTF-8; re-encode the file as UTF-8") from None


def _iter_parquet(path: Path) -> Iterator[tuple[str, Any]]:
    pq = _pyarrow_parquet()
    try:
        pf = pq.ParquetFile(str(path))
    except Exception as exc:
        raise LfTunerError(f"{path}: not a readable parquet file ({exc})") from None
    index = 0
    for batch in pf.iter_batches(batch_size=8192):
        for row in batch.to_pylist():
            yield f"{path}[{index}]", row
            index += 1


def _pyarrow_parquet() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise LfTunerError("parquet: reading parquet needs pyarrow; pip install pyarrow") from None
    return pq


# ---------------------------------------------------------------- conversion (converter.py)


def convert(row: Any, attr: DatasetAttr) -> Sample | str:
    """A row as LLaMA-Factory converts it for SFT, or the reason it is skipped."""
    if not isinstance(row, dict):
        return "row is not an object"
    try:
        if attr.formatting == "alpaca":
            sample = _alpaca(row, attr)
        elif attr.formatting == "sharegpt":
            sample = _sharegpt(row, attr)
        else:
            sample = _openai(row, attr)
    except _Skip as skip:
        return str(skip)
    if isinstance(sample, str):
        return sample
    # processor/supervised.py: "Dropped invalid example"
    if len(sample.prompt) % 2 != 1 or len(sample.response) != 1:
        return "not a prompt/response pair"
    for m in sample.prompt + sample.response:
        if not isinstance(m.content, str):
            return f"{m.role} content is not a string"
    if sample.system is not None and not isinstance(sample.system, str):
        return "system is not a string"
    if sample.tools is not None and not isinstance(sample.tools, str):
        return "tools is not a string"
    return sample


class _Skip(Exception):
    pass


def _col(row: dict[str, Any], key: str | None, required: bool = False) -> Any:
    if not key:
        return None
    if required and key not in row:
        raise _Skip(f"missing column `{key}`")
    return row.get(key)


def _alpaca(row: dict[str, Any], attr: DatasetAttr) -> Sample | str:
    prompt: list[Message] = []
    history = _col(row, attr.history)
    if isinstance(history, list):
        for pair in history:
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                return f"`{attr.history}` entries must be [prompt, response] pairs"
            prompt += [Message("user", pair[0]), Message("assistant", pair[1])]
    query = [v for v in (_col(row, attr.prompt), _col(row, attr.query)) if v]
    if any(not isinstance(q, str) for q in query):
        return f"`{attr.prompt}`/`{attr.query}` is not a string"
    prompt.append(Message("user", "\n".join(query)))
    if attr.kto_tag and isinstance(row.get(attr.kto_tag), bool):
        return "kto example (not SFT)"
    response_value = _col(row, attr.response)
    if not isinstance(response_value, str):
        return (
            f"missing column `{attr.response}`"
            if attr.response not in row
            else f"`{attr.response}` is not a string"
        )
    return Sample(
        prompt,
        [Message("assistant", response_value)],
        _col(row, attr.system) or "",
        _col(row, attr.tools) or "",
    )


def _tag_map(attr: DatasetAttr) -> dict[Any, str]:
    return {
        attr.user_tag: "user",
        attr.assistant_tag: "assistant",
        attr.observation_tag: "observation",
        attr.function_tag: "function",
        attr.system_tag: "system",
    }


def _messages(row: dict[str, Any], attr: DatasetAttr) -> list[dict[str, Any]]:
    messages = _col(row, attr.messages, required=True)
    if not isinstance(messages, list):
        raise _Skip(f"`{attr.messages}` is not a list")
    for m in messages:
        if not isinstance(m, dict) or attr.role_tag not in m or attr.content_tag not in m:
            raise _Skip(f"a message without `{attr.role_tag}`/`{attr.content_tag}`")
    return messages


def _sharegpt(row: dict[str, Any], attr: DatasetAttr) -> Sample | str:
    messages = _messages(row, attr)
    tags = _tag_map(attr)
    rt, ct = str(attr.role_tag), str(attr.content_tag)
    if attr.system_tag and messages and messages[0][rt] == attr.system_tag:
        system = messages[0][ct]
        messages = messages[1:]
    else:
        system = _col(row, attr.system) or ""
    accept = ((attr.user_tag, attr.observation_tag), (attr.assistant_tag, attr.function_tag))
    aligned = []
    for i, m in enumerate(messages):
        if m[rt] not in accept[i % 2]:
            return f"invalid role `{m[rt]}` at message {i}"
        aligned.append(Message(tags[m[rt]], m[ct]))
    if len(aligned) % 2 != 0:
        return "odd number of messages"
    if attr.kto_tag and isinstance(row.get(attr.kto_tag), bool):
        return "kto example (not SFT)"
    return Sample(aligned[:-1], aligned[-1:], system, _col(row, attr.tools) or "")


def _openai(row: dict[str, Any], attr: DatasetAttr) -> Sample | str:
    messages = _messages(row, attr)
    tags = _tag_map(attr)
    rt, ct = str(attr.role_tag), str(attr.content_tag)
    if attr.system_tag and messages and messages[0][rt] == attr.system_tag:
        system = messages[0][ct]
        messages = messages[1:]
    else:
        system = row.get(attr.system, "") if attr.system else ""
    aligned: list[Message] = []
    tool_responses: list[str] = []
    for m in messages:
        role, content = m[rt], m[ct]
        if role in (attr.assistant_tag, attr.function_tag) and m.get("tool_calls"):
            content = json.dumps([t["function"] for t in m["tool_calls"]], ensure_ascii=False)
            role = attr.function_tag
        if role == attr.observation_tag:
            tool_responses.append(content)
            continue
        if tool_responses:
            aligned.append(
                Message("observation", "\n</tool_response>\n<tool_response>\n".join(tool_responses))
            )
            tool_responses = []
        if role not in tags:
            return f"invalid role `{role}`"
        aligned.append(Message(tags[role], content))
    accept = (("user", "observation"), ("assistant", "function"))
    for i, msg in enumerate(aligned):
        if msg.role not in accept[i % 2]:
            return f"invalid role `{msg.role}` at message {i}"
    if len(aligned) % 2 != 0:
        return "odd number of messages"
    if attr.kto_tag and isinstance(row.get(attr.kto_tag), bool):
        return "kto example (not SFT)"
    tools = row.get(attr.tools, "") if attr.tools else ""
    if isinstance(tools, (dict, list)):
        tools = json.dumps(tools, ensure_ascii=False)
    # LLaMA-Factory 0.9.5 appends this to every openai-format system prompt without tools
    short = "detailed thinking off"
    if not system:
        if not tools:
            system = short
    elif not tools:
        if "detailed thinking on" not in system and short not in system:
            system += "\n" + short
    else:
        system += "\n"
    return Sample(aligned[:-1], aligned[-1:], system, tools)


def attr_fields() -> list[str]:
    return [f.name for f in fields(DatasetAttr)]


# ---------------------------------------------------------------- writing a filtered copy


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
        for (_, row), keep in zip(_iter_json(source), flags, strict=False):
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
    pq = _pyarrow_parquet()
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
