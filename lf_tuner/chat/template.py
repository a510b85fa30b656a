"""A pure re-implementation of LLaMA-Factory 0.9.5's `Template._encode` / `encode_multiturn`.

It yields *pieces* instead of token ids: each string piece is tokenized on its own (as LLaMA-Factory calls
`tokenizer.encode(piece, add_special_tokens=False)` per slot), and special pieces count one token each.
Tool prompts and function-call formatting (`tool_utils.py`) are not reproduced: samples that use them are
counted from their raw JSON text and marked approximate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, TypeAlias

from lf_tuner.chat._registry import LLAMAFACTORY_VERSION, TEMPLATES
from lf_tuner.errors import LfTunerError, did_you_mean

# A piece: text to tokenize on its own, or a special marker: ("token", name) is always one token,
# ("bos_token",) / ("eos_token",) are one token when the tokenizer has one.
Special: TypeAlias = tuple[str, ...]
Piece: TypeAlias = str | Special
Role = Literal["user", "assistant", "observation", "function"]


@dataclass(frozen=True)
class Message:
    role: str
    content: str


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

    def _slots(self, key: str) -> list[Any]:
        slots: list[Any] = self.spec[key]["slots"]
        return slots

    def _thought_text(self) -> str:
        open_, close = self.spec["thought_words"]
        if self.kind == "Glm47ReasoningTemplate":
            return str(close)
        return str(open_) + str(close)

    def _remove_thought(self, content: str) -> str:
        open_, close = self.spec["thought_words"]
        pattern = _thought_pattern(open_, close)
        return pattern.sub("", content).lstrip("\n")

    def encode(
        self, messages: list[Message], system: str | None, tools: str | None
    ) -> list[tuple[list[Piece], list[Piece]]]:
        """`encode_multiturn` with pieces: one (source, target) pair per turn (mask_history off)."""
        reasoning = self.kind in ("ReasoningTemplate", "Glm47ReasoningTemplate")
        if reasoning and self.enable_thinking is False:
            messages = [
                Message(m.role, self._remove_thought(m.content)) if i % 2 == 1 else m
                for i, m in enumerate(messages)
            ]
        encoded = self._encode(messages, system, tools)
        if reasoning:
            open_, close = self.spec["thought_words"]
            for i in range(0, len(messages), 2):
                content = messages[i + 1].content
                if open_.strip() not in content and close.strip() not in content:
                    if not self.enable_thinking:
                        thought: list[Piece] = [self._thought_text()]
                        encoded[i] = encoded[i] + thought
                    else:
                        encoded[i + 1] = [self._thought_text(), *encoded[i + 1]]
        return [(encoded[i], encoded[i + 1]) for i in range(0, len(encoded), 2)]

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
                    # approximation: LLaMA-Factory renders `tools` through tool_utils; lf-tuner uses the raw JSON
                    tool_text = tools or ""
                    sys_pieces = _apply(self._slots("format_system"), content=system + tool_text)
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
                # approximation: the function-call JSON is not re-rendered in the tool format
                pieces += _apply(self._slots("format_function"), content=message.content)
            else:
                raise ValueError(f"unexpected role {role!r}")
            out.append(pieces)
        return out


@lru_cache(maxsize=64)
def _thought_pattern(open_: str, close: str) -> re.Pattern[str]:
    return re.compile(f"{re.escape(open_)}(.*?){re.escape(close)}", re.DOTALL)


def get_template(name: str, *, enable_thinking: bool | None = True) -> ChatTemplate:
    """The template LLaMA-Factory registers under `name`; an unknown name is an error with the closest ones."""
    if name not in TEMPLATES:
        raise LfTunerError(
            f"template: unknown template `{name}` (LLaMA-Factory {LLAMAFACTORY_VERSION} has "
            f"{len(TEMPLATES)});{did_you_mean(name, TEMPLATES) or ' run `lf-tuner cutoff --list-templates`.'}"
        )
    return ChatTemplate(name=name, spec=TEMPLATES[name], enable_thinking=enable_thinking)
