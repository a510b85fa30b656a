"""LLaMA-Factory's chat templates and tool formats, reproduced as data so lengths count the tokens it trains on."""

from lf_tuner.chat.template import (
    ChatTemplate,
    MediaPlugin,
    Message,
    Piece,
    ToolError,
    Turn,
    get_template,
    template_names,
)
from lf_tuner.chat.tools import FunctionCall, function_text, tool_format_names, tool_text

__all__ = [
    "ChatTemplate",
    "FunctionCall",
    "MediaPlugin",
    "Message",
    "Piece",
    "ToolError",
    "Turn",
    "function_text",
    "get_template",
    "template_names",
    "tool_format_names",
    "tool_text",
]
