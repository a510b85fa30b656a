"""`dataset_info.json` and data files as LLaMA-Factory 0.9.5 resolves them (`data/parser.py`, `data/loader.py`).

A dataset is a `DatasetAttr`: its local files, formatting, columns and tags. A file given on its own is
looked up in its folder's dataset_info.json, else its columns are detected from the first row.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lf_tuner.data.readers import iter_rows, load_small_json
from lf_tuner.errors import LfTunerError, did_you_mean

Formatting = Literal["alpaca", "sharegpt", "openai"]
# LLaMA-Factory's training stages; the data each one reads (`loader._get_dataset_processor`)
Stage = Literal["pt", "sft", "rm", "dpo", "kto"]
STAGES: tuple[str, ...] = ("pt", "sft", "rm", "dpo", "kto")
FILE_TYPES = {"json": "json", "jsonl": "json", "csv": "csv", "parquet": "parquet", "txt": "text"}
COLUMNS = ("prompt", "query", "response", "history", "messages", "system", "tools", "images", "videos", "audios",
           "chosen", "rejected", "kto_tag")  # fmt: skip
TAGS = (
    "role_tag",
    "content_tag",
    "user_tag",
    "assistant_tag",
    "observation_tag",
    "function_tag",
    "system_tag",
)


def pairwise(stage: str) -> bool:
    """Whether a stage trains on ranked (chosen/rejected) data: rm, and dpo (which LLaMA-Factory loads as rm)."""
    return stage in ("rm", "dpo")


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
    media_dir: Path | None = None  # where relative media paths are looked up (LLaMA-Factory's media_dir)

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
            for key in COLUMNS:
                setattr(self, key, attr["columns"].get(key))
        if "tags" in attr:
            for key in TAGS:
                setattr(self, key, attr["tags"].get(key))

    def describe(self) -> str:
        how = "detected" if self.detected else "dataset_info.json"
        kind = f"{self.formatting}{', ranking' if self.ranking else ''}"
        return f"{self.name}: {kind} ({how}), {', '.join(str(f) for f in self.files)}"


def read_dataset_info(dataset_dir: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(dataset_dir) / "dataset_info.json"
    if not path.is_file():
        raise LfTunerError(
            f"dataset_dir: {path} not found; pass --dataset-dir DIR (the folder holding dataset_info.json)"
        )
    data = load_small_json(path)
    if not isinstance(data, dict):
        raise LfTunerError(f"{path}: must be a JSON object of dataset name -> attributes")
    return data


def check_stage(attr: DatasetAttr, stage: str) -> None:
    """LLaMA-Factory refuses ranked data outside rm/dpo and unranked data in them."""
    if attr.ranking != pairwise(stage):
        need = "needs a ranking dataset (`\"ranking\": true`, chosen/rejected)" if pairwise(stage) else (
            "cannot use a ranking (preference) dataset; use stage rm or dpo for it")  # fmt: skip
        raise LfTunerError(
            f"dataset: {attr.name}: stage {stage} {need} (LLaMA-Factory: the dataset is not applicable in the "
            "current training stage)"
        )


def resolve_datasets(
    names: list[str],
    dataset_dir: str | os.PathLike[str],
    *,
    stage: str = "sft",
    media_dir: str | os.PathLike[str] | None = None,
) -> list[DatasetAttr]:
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
        attr = DatasetAttr(name=name, files=files, file_type=ftype, media_dir=Path(media_dir or dataset_dir))
        attr.join(entry)
        check_stage(attr, stage)
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
        raise LfTunerError(
            f"dataset: {bad}: unsupported file type; use .json, .jsonl, .csv, .parquet or .txt"
        )
    if len(types) > 1:
        raise LfTunerError(
            f"dataset: {path}: file types should be identical (found {sorted(map(str, types))})"
        )
    return files, str(types.pop())


def attr_for_file(
    path: str | os.PathLike[str], formatting: Formatting | None = None, *, stage: str = "sft"
) -> DatasetAttr:
    """A dataset given as a file: its dataset_info.json entry when the folder has one naming it, else detected."""
    file = Path(path)
    files, ftype = _dataset_files(file)
    info_path = file.parent / "dataset_info.json"
    if info_path.is_file() and file.is_file():
        info = load_small_json(info_path)
        for name, entry in info.items() if isinstance(info, dict) else []:
            if (
                isinstance(entry, dict)
                and entry.get("file_name")
                and (file.parent / entry["file_name"]).resolve() == file.resolve()
            ):
                attr = DatasetAttr(name=name, files=files, file_type=ftype, media_dir=file.parent)
                attr.join(entry)
                if formatting and formatting != attr.formatting:
                    break  # the flag wins over the registry
                check_stage(attr, stage)
                return attr
    attr = DatasetAttr(name=file.name, files=files, file_type=ftype, detected=True, media_dir=file.parent)
    first = next((row for _, row in iter_rows(attr) if isinstance(row, dict)), None)
    if first is None:
        raise LfTunerError(f"dataset: {file} is empty; it holds no rows")
    detect_format(attr, first, formatting, stage)
    return attr


def detect_format(
    attr: DatasetAttr, row: dict[str, Any], formatting: Formatting | None, stage: str = "sft"
) -> None:
    """Columns and tags from the first row; `--format` picks the converter when given."""
    msg_key = next((k for k in ("conversations", "messages") if isinstance(row.get(k), list)), None)
    fmt: Formatting = formatting or ("sharegpt" if msg_key else "alpaca")
    attr.formatting = fmt
    for key in ("images", "videos", "audios"):
        if key in row:
            setattr(attr, key, key)
    if pairwise(stage):
        if "chosen" not in row or "rejected" not in row:
            raise LfTunerError(
                f"dataset: {attr.name}: stage {stage} needs `chosen` and `rejected` columns; register the "
                "columns in dataset_info.json"
            )
        attr.ranking, attr.chosen, attr.rejected = True, "chosen", "rejected"
    if stage == "kto":
        attr.kto_tag = next((k for k in ("kto_tag", "label") if isinstance(row.get(k), bool)), None)
        if attr.kto_tag is None:
            raise LfTunerError(
                f"dataset: {attr.name}: stage kto needs a boolean `kto_tag` or `label` column; register it in "
                "dataset_info.json (columns.kto_tag)"
            )
    if fmt == "alpaca":
        if msg_key:
            raise LfTunerError(
                f"dataset: {attr.name}: rows have `{msg_key}`; use --format sharegpt or openai"
            )
        if stage == "pt" and "instruction" not in row:
            text = "text" if "text" in row else next((k for k, v in row.items() if isinstance(v, str)), None)
            if text is None:
                raise LfTunerError(f"dataset: {attr.name}: no text column in the first row")
            attr.prompt, attr.query, attr.response = text, None, None
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
