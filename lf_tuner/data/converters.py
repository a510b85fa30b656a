"""Rows converted the way LLaMA-Factory 0.9.5 converts them (`data/converter.py`), and each stage's validity
check (`data/processor/*.py`: "Dropped invalid example").

`convert` gives LLaMA-Factory's `_prompt`, `_response`, `_system`, `_tools`, `_images`, `_videos`, `_audios`
as a `Sample`, or the reason the row is skipped; `check` says whether a stage's processor keeps it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lf_tuner.chat import Message
from lf_tuner.data.dataset_info import DatasetAttr, pairwise

Row = dict[str, Any]  # one dataset row, as JSON gives it


@dataclass(slots=True)
class Sample:
    """One converted row: LLaMA-Factory's `_prompt`, `_response` (two messages for ranked and KTO rows),
    `_system`, `_tools` and media lists (paths resolved against the media folder, None when there are none)."""

    prompt: list[Message]
    response: list[Message]
    system: str | None
    tools: str | None
    images: list[Any] | None = None
    videos: list[Any] | None = None
    audios: list[Any] | None = None
    approximate: str | None = None  # why LLaMA-Factory may see this row differently

    def with_approximate(self, reason: str) -> Sample:
        return replace(self, approximate=reason)

    @property
    def has_media(self) -> bool:
        return bool(self.images or self.videos or self.audios)


class _Skip(Exception):
    pass


def convert(row: Any, attr: DatasetAttr, stage: str = "sft") -> Sample | str:
    """A row as LLaMA-Factory converts it and `stage`'s processor keeps it, or the reason it is skipped."""
    if not isinstance(row, dict):
        return "row is not an object"
    try:
        if attr.formatting == "alpaca":
            sample = _alpaca(row, attr, need_response=stage != "pt")
        elif attr.formatting == "sharegpt":
            sample = _sharegpt(row, attr)
        else:
            sample = _openai(row, attr)
    except _Skip as skip:
        return str(skip)
    if isinstance(sample, str):
        return sample
    return check(sample, stage) or sample


def check(sample: Sample, stage: str) -> str | None:
    """Why `stage`'s processor drops the sample ("Dropped invalid example"), or None when it keeps it."""
    if stage == "pt":
        if not sample.prompt:
            return "no text"
        if not isinstance(sample.prompt[0].content, str):
            return "text is not a string"
        return None
    if len(sample.prompt) % 2 != 1:
        return "not a prompt/response pair" if sample.prompt or sample.response else "no messages"
    if stage == "sft" and len(sample.response) != 1:
        if not sample.response:
            return "no response (pretraining text? use --stage pt)"
        return "kto example (not SFT)" if len(sample.response) == 2 else "not a prompt/response pair"
    if (pairwise(stage) or stage == "kto") and len(sample.response) < 2:
        return "not a preference example" if pairwise(stage) else "not a kto example (no boolean kto_tag)"
    for m in sample.prompt + sample.response:
        if not isinstance(m.content, str):
            return f"{m.role} content is not a string"
    if sample.system is not None and not isinstance(sample.system, str):
        return "system is not a string"
    if sample.tools is not None and not isinstance(sample.tools, str):
        return "tools is not a string"
    return None


def _col(row: Row, key: str | None, required: bool = False) -> Any:
    if not key:
        return None
    if required and key not in row:
        raise _Skip(f"missing column `{key}`")
    return row.get(key)


def _find_medias(medias: Any, media_dir: Path | None) -> list[Any] | None:
    """`DatasetConverter._find_medias`: a list, with each path joined to the media folder where it exists there."""
    if medias is None:
        return None
    items: list[Any] = list(medias) if isinstance(medias, list) else [medias]
    if not items:
        return None
    if media_dir is None:
        return items

    def find(path: Any) -> Any:
        joined = os.path.join(media_dir, path) if isinstance(path, str) else None
        return joined if joined is not None and os.path.isfile(joined) else path

    if isinstance(items[0], str):
        return [find(m) for m in items]
    if isinstance(items[0], list):  # videos as lists of frames
        return [[find(f) for f in m] if isinstance(m, list) else m for m in items]
    return items


def _sample(
    row: Row,
    attr: DatasetAttr,
    prompt: list[Message],
    response: list[Message],
    system: Any,
    tools: Any,
) -> Sample:
    return Sample(
        prompt,
        response,
        system,
        tools,
        _find_medias(row.get(attr.images), attr.media_dir) if attr.images else None,
        _find_medias(row.get(attr.videos), attr.media_dir) if attr.videos else None,
        _find_medias(row.get(attr.audios), attr.media_dir) if attr.audios else None,
    )


def _kto(row: Row, attr: DatasetAttr, response: Message) -> list[Message] | None:
    """A KTO row's response pair: (response, "") when desired, ("", response) when not; None for other rows."""
    tag = row.get(attr.kto_tag) if attr.kto_tag else None
    if not isinstance(tag, bool):
        return None
    empty = Message("assistant", "")
    return [response, empty] if tag else [empty, response]


def _alpaca(row: Row, attr: DatasetAttr, need_response: bool = True) -> Sample | str:
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
    response_value = _col(row, attr.response)
    kto = _kto(row, attr, Message("assistant", response_value))
    if kto is not None:
        response = kto
    elif (
        attr.ranking
        and isinstance(row.get(str(attr.chosen)), str)
        and isinstance(row.get(str(attr.rejected)), str)
    ):
        response = [
            Message("assistant", row[str(attr.chosen)]),
            Message("assistant", row[str(attr.rejected)]),
        ]
    elif attr.response and isinstance(response_value, str):
        response = [Message("assistant", response_value)]
    elif attr.response and need_response and not attr.ranking:
        return (
            f"missing column `{attr.response}`"
            if attr.response not in row
            else f"`{attr.response}` is not a string"
        )
    else:  # unsupervised (pretraining text) or a ranked row without chosen/rejected strings
        response = []
    return _sample(row, attr, prompt, response, _col(row, attr.system) or "", _col(row, attr.tools) or "")


def _tag_map(attr: DatasetAttr) -> dict[Any, str]:
    return {
        attr.user_tag: "user",
        attr.assistant_tag: "assistant",
        attr.observation_tag: "observation",
        attr.function_tag: "function",
        attr.system_tag: "system",
    }


def _messages(row: Row, attr: DatasetAttr) -> list[Row]:
    messages = _col(row, attr.messages, required=True)
    if not isinstance(messages, list):
        raise _Skip(f"`{attr.messages}` is not a list")
    for m in messages:
        if not isinstance(m, dict) or attr.role_tag not in m or attr.content_tag not in m:
            raise _Skip(f"a message without `{attr.role_tag}`/`{attr.content_tag}`")
    return messages


def _count_ok(n: int, attr: DatasetAttr) -> bool:
    """Ranked rows hold the prompt only (odd); others end with the response (even)."""
    return n % 2 == (1 if attr.ranking else 0)


def _ranked(row: Row, attr: DatasetAttr, tags: dict[Any, str]) -> list[Message] | str | None:
    """The (chosen, rejected) pair of a ranked sharegpt/openai row; None when the row has no such dicts."""
    chosen, rejected = row.get(str(attr.chosen)), row.get(str(attr.rejected))
    if not (attr.ranking and isinstance(chosen, dict) and isinstance(rejected, dict)):
        return None
    rt, ct = str(attr.role_tag), str(attr.content_tag)
    if ct not in chosen or ct not in rejected:
        return f"`{attr.chosen}`/`{attr.rejected}` without `{ct}`"
    if chosen.get(rt) not in (attr.assistant_tag, attr.function_tag) or rejected.get(rt) not in (
        attr.assistant_tag,
        attr.function_tag,
    ):
        return f"invalid role in `{attr.chosen}`/`{attr.rejected}`"
    return [Message(tags[chosen[rt]], chosen[ct]), Message(tags[rejected[rt]], rejected[ct])]


def _finish(
    row: Row,
    attr: DatasetAttr,
    aligned: list[Message],
    tags: dict[Any, str],
    system: Any,
    tools: Any,
) -> Sample | str:
    """The end both chat converters share: message count, then a KTO, ranked or plain sample."""
    if not _count_ok(len(aligned), attr):
        return "odd number of messages" if not attr.ranking else "even number of messages in a ranked row"
    kto = _kto(row, attr, aligned[-1]) if aligned else None
    if kto is not None:
        return _sample(row, attr, aligned[:-1], kto, system, tools)
    ranked = _ranked(row, attr, tags)
    if isinstance(ranked, str):
        return ranked
    if ranked is not None:
        return _sample(row, attr, aligned, ranked, system, tools)
    return _sample(row, attr, aligned[:-1], aligned[-1:], system, tools)


def _leading_system(messages: list[Row], attr: DatasetAttr, otherwise: Any) -> tuple[Any, list[Row]]:
    """(system prompt, the other messages): a first message with the system tag, else `otherwise` (each chat
    converter's own reading of the system column)."""
    if attr.system_tag and messages and messages[0][str(attr.role_tag)] == attr.system_tag:
        return messages[0][str(attr.content_tag)], messages[1:]
    return otherwise, messages


def _sharegpt(row: Row, attr: DatasetAttr) -> Sample | str:
    tags = _tag_map(attr)
    rt, ct = str(attr.role_tag), str(attr.content_tag)
    system, messages = _leading_system(_messages(row, attr), attr, _col(row, attr.system) or "")
    accept = ((attr.user_tag, attr.observation_tag), (attr.assistant_tag, attr.function_tag))
    aligned = []
    for i, m in enumerate(messages):
        if m[rt] not in accept[i % 2]:
            return f"invalid role `{m[rt]}` at message {i}"
        aligned.append(Message(tags[m[rt]], m[ct]))
    return _finish(row, attr, aligned, tags, system, _col(row, attr.tools) or "")


def _openai(row: Row, attr: DatasetAttr) -> Sample | str:
    tags = _tag_map(attr)
    rt, ct = str(attr.role_tag), str(attr.content_tag)
    system, messages = _leading_system(
        _messages(row, attr), attr, row.get(attr.system, "") if attr.system else ""
    )
    aligned: list[Message] = []
    tool_responses: list[str] = []
    structured = isinstance(_col(row, attr.tools), (dict, list))
    for m in messages:
        role, content = m[rt], m[ct]
        if role in (attr.assistant_tag, attr.function_tag) and m.get("tool_calls"):
            functions = [t["function"] for t in m["tool_calls"]]
            structured = structured or any(not isinstance(f.get("arguments"), str) for f in functions)
            content = json.dumps(functions, ensure_ascii=False)
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
    sample = _finish(row, attr, aligned, tags, system, tools)
    if structured and isinstance(sample, Sample):
        return sample.with_approximate(ARROW_JSON)
    return sample


ARROW_JSON = (
    "tools or tool-call arguments given as JSON objects: LLaMA-Factory reads them through Arrow, which adds the "
    "keys other rows have (as null); write them as JSON strings for exact counts"
)
