"""A pure re-implementation of LLaMA-Factory 0.9.5's `Template._encode`, `encode_multiturn` and `encode_oneturn`.

It yields *pieces* instead of token ids: each string piece is tokenized on its own (as LLaMA-Factory calls
`tokenizer.encode(piece, add_special_tokens=False)` per slot), and special pieces count one token each.
Tools are rendered into the system prompt and function calls re-rendered exactly as LLaMA-Factory's
`ToolFormatter` / `FunctionFormatter` do (`lf_tuner.chat.tools`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, NamedTuple, TypeAlias

from lf_tuner.chat._registry import LLAMAFACTORY_VERSION, TEMPLATES
from lf_tuner.chat.tools import ToolError, function_text, tool_format_names, tool_text
from lf_tuner.errors import LfTunerError, did_you_mean

# A piece: text to tokenize on its own, or a special marker: ("token", name) is always one token,
# ("bos_token",) / ("eos_token",) are one token when the tokenizer has one.
Special: TypeAlias = tuple[str, ...]
Piece: TypeAlias = str | Special
Turn: TypeAlias = tuple[list[Piece], list[Piece]]

_REASONING = ("ReasoningTemplate", "Glm47ReasoningTemplate")


class Message(NamedTuple):
    """One chat message (a named tuple: built for every message of every row, it must be cheap)."""

    role: str  # user, assistant, observation, function
    content: str


@dataclass(frozen=True)
class MediaPlugin:
    """The template's multimodal plugin (`mm_plugin`): its registry name and placeholder tokens."""

    name: str
    image_token: str | None = None
    video_token: str | None = None
    audio_token: str | None = None
    expand_mm_tokens: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # plugin-specific fields (vision_bos_token, ...)

    @property
    def is_base(self) -> bool:
        return self.name == "base"


def template_names() -> list[str]:
    return sorted(TEMPLATES)


def _apply(slots: list[Any], **kwargs: str) -> list[Piece]:
    """`StringFormatter.apply` / `EmptyFormatter.apply`: replace placeholders once each, in kwargs order."""
    out: list[Piece] = []
    for slot in slots:
        if isinstance(slot, str):
            for name, value in kwargs.items():
                slot = slot.replace("{{" + name + "}}", value, 1)
            out.append(slot)
        elif "token" in slot:
            out.append(("token", slot["token"]))
        else:
            out.append((slot["special"],))
    return out


@dataclass(frozen=True)
class ChatTemplate:
    """One LLaMA-Factory template (see `lf_tuner.chat._registry`)."""

    name: str
    spec: dict[str, Any]
    enable_thinking: bool | None = True
    preserve_thinking: bool = False

    @property
    def kind(self) -> str:
        return str(self.spec["class"])

    @property
    def efficient_eos(self) -> bool:
        return bool(self.spec["efficient_eos"])

    @property
    def replace_eos(self) -> bool:
        return bool(self.spec["replace_eos"])

    @property
    def stop_words(self) -> list[str]:
        return list(self.spec["stop_words"])

    @property
    def default_system(self) -> str:
        return str(self.spec["default_system"])

    @property
    def plugin(self) -> MediaPlugin:
        raw = dict(self.spec["mm_plugin"])
        base = {
            k: raw.pop(k) for k in ("name", "image_token", "video_token", "audio_token", "expand_mm_tokens")
        }
        return MediaPlugin(**base, extra=raw)

    def _slots(self, key: str) -> list[Any]:
        slots: list[Any] = self.spec[key]["slots"]
        return slots

    def _thought_words(self) -> tuple[str, str]:
        open_, close = self.spec["thought_words"]
        return str(open_), str(close)

    def _thought_text(self) -> str:
        """`add_thought()`: the empty thought."""
        open_, close = self._thought_words()
        return close if self.kind == "Glm47ReasoningTemplate" else open_ + close

    def _remove_thought(self, content: str) -> str:
        return _thought_pattern(*self._thought_words()).sub("", content).lstrip("\n")

    def _has_thought(self, content: str) -> bool:
        open_, close = self._thought_words()
        return open_.strip() in content or close.strip() in content

    def encode(
        self,
        messages: list[Message],
        system: str | None,
        tools: str | None,
        *,
        discard_history_cot: bool = False,
    ) -> list[Turn]:
        """`encode_multiturn` with pieces: one (source, target) pair per turn."""
        reasoning = self.kind in _REASONING
        if reasoning and self.enable_thinking is False:
            messages = [self._without_thought(m) if i % 2 == 1 else m for i, m in enumerate(messages)]
        if reasoning and discard_history_cot:
            messages = [self._without_thought(m) if i % 2 == 1 and i < len(messages) - 2 else m
                        for i, m in enumerate(messages)]  # fmt: skip
        encoded = self._encode(messages, system, tools)
        if reasoning:
            turns = [len(messages) - 2] if discard_history_cot else range(0, len(messages), 2)
            for i in turns:
                self._add_empty_thought(encoded, i, messages[i + 1].content)
        return [(encoded[i], encoded[i + 1]) for i in range(0, len(encoded), 2)]

    def encode_oneturn(self, messages: list[Message], system: str | None, tools: str | None) -> Turn:
        """`encode_oneturn` with pieces: everything before the last message, and the last message."""
        reasoning = self.kind in _REASONING
        if reasoning:
            messages = list(messages)
            if not self.preserve_thinking:
                for i in range(1, len(messages) - 2, 2):
                    messages[i] = self._without_thought(messages[i])
            if self.enable_thinking is False:
                messages[-1] = self._without_thought(messages[-1])
        encoded = self._encode(messages, system, tools)
        prompt = [p for pieces in encoded[:-1] for p in pieces]
        response = encoded[-1]
        if reasoning and not self._has_thought(messages[-1].content):
            if not self.enable_thinking:
                prompt = [*prompt, self._thought_text()]
            else:
                response = [self._thought_text(), *response]
        return prompt, response

    def _without_thought(self, message: Message) -> Message:
        return Message(message.role, self._remove_thought(message.content))

    def _add_empty_thought(self, encoded: list[list[Piece]], i: int, response: str) -> None:
        if self._has_thought(response):
            return
        if not self.enable_thinking:
            encoded[i] = [*encoded[i], self._thought_text()]
        else:
            encoded[i + 1] = [self._thought_text(), *encoded[i + 1]]

    def tool_prompt(self, tools: str) -> Piece:
        """`format_tools.apply(content=tools)[0]`."""
        spec = self.spec["format_tools"]
        if spec["kind"] == "ToolFormatter":
            return tool_text(str(spec["tool_format"]), tools)
        return _apply(spec["slots"], content=tools)[0]

    def _encode(self, messages: list[Message], system: str | None, tools: str | None) -> list[list[Piece]]:
        system = system or self.default_system
        llama2 = self.kind == "Llama2Template"
        out: list[list[Piece]] = []
        for i, message in enumerate(messages):
            pieces: list[Piece] = []
            system_text = ""
            if i == 0:
                pieces += _apply(self._slots("format_prefix"))
                if system or tools:
                    tool = self.tool_prompt(tools) if tools else ""
                    sys_pieces = _apply(self._slots("format_system"), content=system + str(tool))
                    if llama2:
                        first = sys_pieces[0]
                        system_text = first if isinstance(first, str) else ""
                    else:
                        pieces += sys_pieces
            role = message.role
            if role == "user":
                if llama2:
                    pieces += _apply(self._slots("format_user"), content=system_text + message.content)
                else:
                    pieces += _apply(self._slots("format_user"), content=message.content, idx=str(i // 2))
            elif role == "assistant":
                pieces += _apply(self._slots("format_assistant"), content=message.content)
            elif role == "observation":
                pieces += _apply(self._slots("format_observation"), content=message.content)
            elif role == "function":
                pieces += _apply(
                    self._slots("format_function"), content=self._function(message.content, llama2)
                )
            else:
                raise ValueError(f"unexpected role {role!r}")
            out.append(pieces)
        return out

    def _function(self, content: str, llama2: bool) -> str:
        spec = self.spec["format_function"]
        if spec["kind"] != "FunctionFormatter":
            return content
        if llama2:  # Llama2Template passes neither thought words nor tool-call words
            return function_text(str(spec["tool_format"]), content)
        tw = self.spec.get("tool_call_words")
        return function_text(
            str(spec["tool_format"]), content, self._thought_words(), (str(tw[0]), str(tw[1])) if tw else None
        )


@lru_cache(maxsize=64)
def _thought_pattern(open_: str, close: str) -> re.Pattern[str]:
    return re.compile(f"{re.escape(open_)}(.*?){re.escape(close)}", re.DOTALL)


def get_template(
    name: str,
    *,
    enable_thinking: bool | None = True,
    preserve_thinking: bool = False,
    tool_format: str | None = None,
    default_system: str | None = None,
) -> ChatTemplate:
    """The template LLaMA-Factory registers under `name`, with `get_template_and_fix_tokenizer`'s overrides
    (`tool_format`, `default_system`); an unknown name is an error with the closest ones."""
    if name not in TEMPLATES:
        raise LfTunerError(
            f"template: unknown template `{name}` (LLaMA-Factory {LLAMAFACTORY_VERSION} has "
            f"{len(TEMPLATES)});{did_you_mean(name, TEMPLATES) or ' run `lf-tuner cutoff --list-templates`.'}"
        )
    spec = TEMPLATES[name]
    if tool_format is not None:
        if tool_format not in tool_format_names():
            raise LfTunerError(
                f"tool_format: unknown tool format `{tool_format}`; LLaMA-Factory has "
                f"{', '.join(tool_format_names())}"
            )
        slots: list[Any] = (
            ["{{content}}"] if spec["efficient_eos"] else ["{{content}}", {"special": "eos_token"}]
        )
        spec = dict(
            spec,
            format_function={"kind": "FunctionFormatter", "slots": slots, "tool_format": tool_format},
            format_tools={"kind": "ToolFormatter", "slots": [], "tool_format": tool_format},
        )
    if default_system is not None:
        spec = dict(spec, default_system=default_system)
    template = ChatTemplate(name=name, spec=spec)
    if spec["class"] in _REASONING:  # LLaMA-Factory sets these on reasoning templates only
        template = replace(template, enable_thinking=enable_thinking, preserve_thinking=preserve_thinking)
    return template


__all__ = [
    "ChatTemplate",
    "MediaPlugin",
    "Message",
    "Piece",
    "ToolError",
    "Turn",
    "get_template",
    "template_names",
]
