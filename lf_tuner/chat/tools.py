"""LLaMA-Factory 0.9.5's tool formats (`data/tool_utils.py`, `data/formatter.py`), reproduced text for text.

`tool_text(fmt, tools_json)` is what `ToolFormatter.apply` puts into the system prompt; `function_text(fmt,
content, ...)` is what `FunctionFormatter.apply` makes of a function-call turn. The prompt strings come from the
generated registry; the formatting code follows LLaMA-Factory's classes one to one (the drift test in
tests/test_lengths_llamafactory.py compares every format's output with the installed LLaMA-Factory's).

Where LLaMA-Factory raises (invalid JSON, a tool without `parameters`), these raise `ToolError` with its reason:
LLaMA-Factory stops preprocessing on such a row.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple

from lf_tuner.chat._registry import TOOL_FORMATS, TOOL_PROMPTS

Tool = dict[
    str, Any
]  # one tool: a JSON function schema ({"name", "description", "parameters"}), maybe wrapped


class ToolError(ValueError):
    """A row LLaMA-Factory's tool formatting fails on (it stops preprocessing there)."""


class FunctionCall(NamedTuple):
    name: str
    arguments: str  # JSON


def _dumps(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


def _unwrap(tool: Tool, default: Any = "") -> Any:
    """`tool.get("function", default) if tool.get("type") == "function" else tool`."""
    return tool.get("function", default) if tool.get("type") == "function" else tool


def _wrap(tool: Tool) -> Tool:
    return tool if tool.get("type") == "function" else {"type": "function", "function": tool}


# ---------------------------------------------------------------- tool prompts (tool_formatter)


def _default_tools(tools: list[Tool]) -> str:
    tool_text = ""
    tool_names = []
    for tool in tools:
        tool = _unwrap(tool)
        param_text = ""
        for name, param in tool["parameters"]["properties"].items():
            required, enum, items = "", "", ""
            if name in tool["parameters"].get("required", []):
                required = ", required"
            if param.get("enum", None):
                enum = ", should be one of [{}]".format(", ".join(param["enum"]))
            if param.get("items", None):
                items = ", where each item should be {}".format(param["items"].get("type", ""))
            param_text += "  - {name} ({type}{required}): {desc}{enum}{items}\n".format(
                name=name,
                type=param.get("type", ""),
                required=required,
                desc=param.get("description", ""),
                enum=enum,
                items=items,
            )
        tool_text += "> Tool Name: {name}\nTool Description: {desc}\nTool Args:\n{args}\n".format(
            name=tool["name"], desc=tool.get("description", ""), args=param_text
        )
        tool_names.append(tool["name"])
    return TOOL_PROMPTS["DEFAULT_TOOL_PROMPT"].format(tool_text=tool_text, tool_names=", ".join(tool_names))


def _gemma4_tools(tools: list[Tool]) -> str:
    def parameters(properties: dict[str, Any]) -> str:
        parts: list[str] = []
        for name, schema in properties.items():
            item_parts: list[str] = []
            if schema.get("description"):
                item_parts.append(f'description:<|"|>{schema["description"]}<|"|>')
            if schema.get("type"):
                item_parts.append(f'type:<|"|>{str(schema["type"]).upper()}<|"|>')
            parts.append(f"{name}:{{{','.join(item_parts)}}}")
        return ",".join(parts)

    declarations: list[str] = []
    for tool in tools:
        data = tool.get("function", tool) if tool.get("type") == "function" else tool
        declaration = f'declaration:{data["name"]}{{description:<|"|>{data.get("description", "")}<|"|>'
        params = data.get("parameters")
        if params:
            param_parts: list[str] = []
            if params.get("properties"):
                param_parts.append(f"properties:{{{parameters(params['properties'])}}}")
            if params.get("required"):
                required_text = ",".join(f'<|"|>{item}<|"|>' for item in params["required"])
                param_parts.append(f"required:[{required_text}]")
            if params.get("type"):
                param_parts.append(f'type:<|"|>{str(params["type"]).upper()}<|"|>')
            declaration += f",parameters:{{{','.join(param_parts)}}}"
        response = data.get("response")
        if response:
            response_parts: list[str] = []
            if response.get("description"):
                response_parts.append(f'description:<|"|>{response["description"]}<|"|>')
            response_type = str(response.get("type", "")).upper()
            if response_type == "OBJECT":
                response_parts.append(f'type:<|"|>{response_type}<|"|>')
            declaration += f",response:{{{','.join(response_parts)}}}"
        declarations.append(declaration + "}")
    return "\n".join(declarations)


def _glm4_tools(tools: list[Tool]) -> str:
    tool_text = ""
    for tool in tools:
        tool = _unwrap(tool)
        tool_text += "\n\n## {name}\n\n{body}\n在调用上述函数时，请使用 Json 格式表示调用的参数。".format(
            name=tool["name"], body=_dumps(tool, indent=4)
        )
    return TOOL_PROMPTS["GLM4_TOOL_PROMPT"].format(tool_text=tool_text)


def _llama3_tools(tools: list[Tool]) -> str:
    date = datetime.now().strftime("%d %b %Y")
    tool_text = "".join(_dumps(_wrap(tool), indent=4) + "\n\n" for tool in tools)
    return TOOL_PROMPTS["LLAMA3_TOOL_PROMPT"].format(date=date, tool_text=tool_text)


def _minimax1_tools(tools: list[Tool]) -> str:
    tool_text = "".join(_dumps(_unwrap(tool)) + "\n" for tool in tools)
    return TOOL_PROMPTS["MINIMAX_M1_TOOL_PROMPT"].format(tool_text=tool_text)


def _minimax2_tools(tools: list[Tool]) -> str:
    tool_text = "".join("<tool>" + _dumps(_unwrap(tool)) + "</tool>\n" for tool in tools)
    return TOOL_PROMPTS["MINIMAX_M2_TOOL_PROMPT"].format(tool_text=tool_text)


def _mistral_tools(tools: list[Tool]) -> str:
    return "[AVAILABLE_TOOLS] " + _dumps([_wrap(tool) for tool in tools]) + "[/AVAILABLE_TOOLS]"


def _qwen_like(prompt: str) -> Callable[[list[Tool]], str]:
    def tools_text(tools: list[Tool]) -> str:
        tool_text = "".join("\n" + _dumps(_wrap(tool)) for tool in tools)
        return TOOL_PROMPTS[prompt].format(tool_text=tool_text)

    return tools_text


def _qwen35_tools(tools: list[Tool]) -> str:
    tool_text = "".join("\n" + _dumps(tool.get("function", tool) if tool.get("type") == "function" else tool)
                        for tool in tools)  # fmt: skip
    return TOOL_PROMPTS["QWEN35_TOOL_PROMPT"].format(tool_text=tool_text)


def _seed_tools(tools: list[Tool]) -> str:
    return TOOL_PROMPTS["SEED_TOOL_PROMPT"].format(tool_text="\n" + _dumps(tools))


def _ling_tools(tools: list[Tool]) -> str:
    return _qwen_like("LING_TOOL_PROMPT")(tools) + "\n" + "detailed thinking off"


def _lfm2_tools(tools: list[Tool]) -> str:
    tool_list = [tool.get("function", tool) if tool.get("type") == "function" else tool for tool in tools]
    return TOOL_PROMPTS["LFM2_TOOL_PROMPT"].format(tool_text=_dumps(tool_list))


# ---------------------------------------------------------------- function calls (function_formatter)


def _default_calls(functions: list[FunctionCall]) -> str:
    return "\n".join(f"Action: {name}\nAction Input: {arguments}" for name, arguments in functions)


def _gemma4_argument(argument: Any, escape_keys: bool = True) -> str:
    if isinstance(argument, str):
        return f'<|"|>{argument}<|"|>'
    if isinstance(argument, bool):
        return "true" if argument else "false"
    if isinstance(argument, dict):
        items: list[str] = []
        for key in sorted(argument.keys()):
            formatted_key = f'<|"|>{key}<|"|>' if escape_keys else str(key)
            items.append(f"{formatted_key}:{_gemma4_argument(argument[key], escape_keys=escape_keys)}")
        return "{" + ",".join(items) + "}"
    if isinstance(argument, (list, tuple)):
        return "[" + ",".join(_gemma4_argument(item, escape_keys=escape_keys) for item in argument) + "]"
    if argument is None:
        return "null"
    return str(argument)


def _gemma4_calls(functions: list[FunctionCall]) -> str:
    texts: list[str] = []
    for function in functions:
        try:
            parsed: Any = json.loads(function.arguments)
        except (TypeError, json.JSONDecodeError):
            parsed = function.arguments
        call_text = f"<|tool_call>call:{function.name}" + "{"
        if isinstance(parsed, dict):
            call_text += ",".join(
                f"{key}:{_gemma4_argument(parsed[key], escape_keys=False)}" for key in sorted(parsed.keys())
            )
        elif isinstance(parsed, str):
            call_text += parsed
        else:
            call_text += _gemma4_argument(parsed, escape_keys=False)
        texts.append(call_text + "}<tool_call|>")
    return "".join(texts)


def _glm4_calls(functions: list[FunctionCall]) -> str:
    if len(functions) > 1:
        raise ValueError("GLM-4 does not support parallel functions.")
    return f"{functions[0].name}\n{functions[0].arguments}"


def _llama3_calls(functions: list[FunctionCall]) -> str:
    objects = [{"name": name, "parameters": json.loads(arguments)} for name, arguments in functions]
    return _dumps(objects[0] if len(objects) == 1 else objects)


def _minimax1_calls(functions: list[FunctionCall]) -> str:
    texts = [_dumps({"name": f.name, "arguments": json.loads(f.arguments)}) for f in functions]
    return "<tool_calls>\n" + "\n".join(texts) + "\n</tool_calls>"


def _value_text(value: Any) -> str:
    return value if isinstance(value, str) else _dumps(value)


def _minimax2_calls(functions: list[FunctionCall]) -> str:
    texts = []
    for f in functions:
        prompt = f'<invoke name="{f.name}">'
        for key, value in json.loads(f.arguments).items():
            prompt += f'\n<parameter name="{key}">' + _value_text(value) + "</parameter>"
        texts.append(prompt + "\n</invoke>")
    return "\n".join(texts)


def _mistral_calls(functions: list[FunctionCall]) -> str:
    return _dumps([{"name": name, "arguments": json.loads(arguments)} for name, arguments in functions])


def _qwen_calls(functions: list[FunctionCall]) -> str:
    texts = [_dumps({"name": name, "arguments": json.loads(arguments)}) for name, arguments in functions]
    return "\n".join(f"<tool_call>\n{text}\n</tool_call>" for text in texts)


def _qwen35_calls(functions: list[FunctionCall]) -> str:
    texts = []
    for f in functions:
        prompt = f"<tool_call>\n<function={f.name}>"
        for key, value in json.loads(f.arguments).items():
            prompt += f"\n<parameter={key}>" + f"\n{_value_text(value)}\n</parameter>"
        texts.append(prompt + "\n</function>\n</tool_call>")
    return "\n".join(texts)


def _glm4_moe_calls(functions: list[FunctionCall]) -> str:
    texts = []
    for f in functions:
        prompt = "\n<tool_call>" + f.name
        for key, value in json.loads(f.arguments).items():
            prompt += (
                "\n<arg_key>" + key + "</arg_key>" + "\n<arg_value>" + _value_text(value) + "</arg_value>"
            )
        texts.append(prompt)
    return "\n".join(texts)


def _seed_calls(functions: list[FunctionCall]) -> str:
    texts = []
    for f in functions:
        prompt = "\n<seed:tool_call>\n<function=" + f.name
        for key, value in json.loads(f.arguments).items():
            prompt += "\n<parameter=" + key + ">" + _value_text(value) + "</parameter>"
        texts.append(prompt + "\n</function>\n</seed:tool_call>")
    return "\n".join(texts)


def _lfm2_calls(functions: list[FunctionCall]) -> str:
    calls = []
    for name, args_json in functions:
        parts = [
            f'{key}="{value}"' if isinstance(value, str) else f"{key}={_dumps(value)}"
            for key, value in json.loads(args_json).items()
        ]
        calls.append(f"{name}({', '.join(parts)})")
    return f"<|tool_call_start|>[{', '.join(calls)}]<|tool_call_end|>"


ToolsFn = Callable[[list[Tool]], str]
CallsFn = Callable[[list[FunctionCall]], str]
# LLaMA-Factory's class name -> (tool_formatter, function_formatter); TOOL_FORMATS maps format names to classes
_CLASSES: dict[str, tuple[ToolsFn, CallsFn]] = {
    "DefaultToolUtils": (_default_tools, _default_calls),
    "Gemma4ToolUtils": (_gemma4_tools, _gemma4_calls),
    "GLM4ToolUtils": (_glm4_tools, _glm4_calls),
    "Llama3ToolUtils": (_llama3_tools, _llama3_calls),
    "LFM2ToolUtils": (_lfm2_tools, _lfm2_calls),
    "MiniMaxM1ToolUtils": (_minimax1_tools, _minimax1_calls),
    "MiniMaxM2ToolUtils": (_minimax2_tools, _minimax2_calls),
    "MistralToolUtils": (_mistral_tools, _mistral_calls),
    "QwenToolUtils": (_qwen_like("QWEN_TOOL_PROMPT"), _qwen_calls),
    "Qwen35ToolUtils": (_qwen35_tools, _qwen35_calls),
    "GLM4MOEToolUtils": (_qwen_like("GLM4_MOE_TOOL_PROMPT"), _glm4_moe_calls),
    "SeedToolUtils": (_seed_tools, _seed_calls),
    "LingToolUtils": (_ling_tools, _qwen_calls),
}


def tool_format_names() -> list[str]:
    return sorted(TOOL_FORMATS)


def _utils(fmt: str) -> tuple[ToolsFn, CallsFn]:
    cls = TOOL_FORMATS.get(fmt)
    if cls is None or cls not in _CLASSES:
        raise ToolError(f"tool format `{fmt}` not found (LLaMA-Factory has {', '.join(tool_format_names())})")
    return _CLASSES[cls]


def _failure(what: str, exc: Exception) -> ToolError:
    return ToolError(f"{what} ({type(exc).__name__}: {exc})")


def tool_text(fmt: str, tools: str) -> str:
    """`ToolFormatter(tool_format=fmt).apply(content=tools)[0]`: the tool prompt for a `tools` JSON string."""
    tools_fn = _utils(fmt)[0]
    try:
        parsed = json.loads(tools)
    except json.JSONDecodeError:
        raise ToolError(f"Invalid JSON format in tool description: {str([tools])[:200]}.") from None
    try:
        return tools_fn(parsed) if len(parsed) != 0 else ""
    except (KeyError, TypeError, AttributeError, ValueError, IndexError) as exc:
        raise _failure(f"LLaMA-Factory's `{fmt}` tool formatter fails on these tools", exc) from None


def _parse_functions(content: str) -> list[FunctionCall]:
    try:
        calls = json.loads(content)
    except json.JSONDecodeError:
        raise ToolError(f"Invalid JSON format in function message: {str([content])[:200]}.") from None
    if not isinstance(calls, list):  # parallel function call
        calls = [calls]
    try:
        return [FunctionCall(c["name"], json.dumps(c["arguments"], ensure_ascii=False)) for c in calls]
    except (KeyError, TypeError) as exc:
        raise _failure("a function call without `name` and `arguments`", exc) from None


def function_text(
    fmt: str,
    content: str,
    thought_words: tuple[str, str] | None = None,
    tool_call_words: tuple[str, str] | None = None,
) -> str:
    """The content `FunctionFormatter.apply` puts in the function slots: thoughts kept, calls re-rendered."""
    calls_fn = _utils(fmt)[1]
    tool_call_match = None
    if tool_call_words and len(tool_call_words) == 2:
        regex = re.compile(rf"{re.escape(tool_call_words[0])}(.*?){re.escape(tool_call_words[1])}", re.DOTALL)
        tool_call_match = regex.search(content)
    try:
        if tool_call_match is None:
            thought_match = None
            if thought_words and len(thought_words) == 2:
                regex = re.compile(
                    rf"{re.escape(thought_words[0])}(.*?){re.escape(thought_words[1])}", re.DOTALL
                )
                thought_match = regex.search(content)
            json_part = content.replace(thought_match.group(0), "") if thought_match else content
            text = calls_fn(_parse_functions(json_part))
            return thought_match.group(0) + text if thought_match else text
        thought_content = content.replace(tool_call_match.group(0), "")
        return thought_content + calls_fn(_parse_functions(tool_call_match.group(1)))
    except ToolError:
        raise
    except (KeyError, TypeError, AttributeError, ValueError, IndexError) as exc:
        raise _failure(f"LLaMA-Factory's `{fmt}` function formatter fails on this call", exc) from None
