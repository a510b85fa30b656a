"""The one YAML loader and the one renderer of pydantic errors.

Every YAML file lf-tuner reads (train configs, presets, sweep specs) goes through `parse_mapping`: one set of
one-line errors, and duplicate keys reported with their line numbers (PyYAML keeps the last value silently,
LLaMA-Factory's OmegaConf refuses the file). Every strict file schema (presets, sweep specs, run records)
turns pydantic's errors into `Problem`s with `pydantic_problems`.
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from lf_tuner.errors import LfTunerError, Problem, ProblemsError, did_you_mean

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError

# A LLaMA-Factory training config as lf-tuner passes it around: the YAML's mapping of LLaMA-Factory's keys (an
# open set, checked against the schema by config.validate); JSON and YAML only at the edges
TrainConfig = dict[str, Any]

MAPPING = "a mapping of LLaMA-Factory keys"
TRAIN_CONFIG_HINT = "pass a LLaMA-Factory train config YAML"


class _Duplicate(typing.NamedTuple):
    key: str
    first_line: int
    line: int


class _Loader(yaml.SafeLoader):
    """yaml.SafeLoader that records duplicate keys instead of keeping the last value silently."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[_Duplicate] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            line = key_node.start_mark.line + 1
            try:
                first = seen.setdefault(key, line)
            except TypeError:  # an unhashable key: construct_mapping below says so
                continue
            if first != line:
                self.duplicates.append(_Duplicate(str(key), first, line))
        return super().construct_mapping(node, deep=deep)


# Read values as LLaMA-Factory's OmegaConf does (YAML 1.2 floats: `1e-4` is a number, not a string;
# no timestamps), so lf-tuner and LLaMA-Factory see the same config.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?[0-9][0-9_]*(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in _Loader.yaml_implicit_resolvers.items()
}


def parse_yaml(text: str, origin: str) -> Any:
    """YAML text as data. `origin` (a path, or e.g. `preset security`) starts every error line.

    Bad YAML is one line with the line and column; duplicate keys are a ProblemsError, one line each.
    """
    loader = _Loader(text)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise LfTunerError(f"{origin}: not valid YAML ({where}{problem})") from None
    finally:
        loader.dispose()
    if loader.duplicates:
        raise ProblemsError(
            [
                Problem(d.key, f"given twice (lines {d.first_line} and {d.line}); keep one")
                for d in sorted(loader.duplicates, key=lambda d: d.line)
            ],
            origin,
        )
    return data


def parse_mapping(text: str, origin: str, *, expected: str = MAPPING) -> dict[str, Any]:
    """YAML text that must hold a mapping (`expected` says which, for the error)."""
    data = parse_yaml(text, origin)
    if not isinstance(data, dict):
        got = "an empty file" if data is None else type(data).__name__
        raise LfTunerError(f"{origin}: expected {expected}, got {got}")
    return data


def load_mapping(path: Path, *, expected: str = MAPPING, hint: str = TRAIN_CONFIG_HINT) -> dict[str, Any]:
    """A YAML (or JSON) file that must hold a mapping: a train config unless `expected` and `hint` (what to
    pass instead, for the errors) say otherwise."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LfTunerError(f"{path} does not exist; {hint}") from None
    except IsADirectoryError:
        raise LfTunerError(f"{path} is a directory; {hint}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LfTunerError(f"{path}: cannot read it ({exc})") from None
    return parse_mapping(text, str(path), expected=expected)


# --------------------------------------------------------------------------- pydantic errors


def _model_in(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """(the pydantic model inside a field's annotation, whether it sits in a dict's values)."""
    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is dict and len(args) == 2:
        model, _ = _model_in(args[1])
        return model, model is not None
    if origin in (typing.Union, types.UnionType, list, tuple):
        for arg in args:
            model, in_dict = _model_in(arg)
            if model is not None:
                return model, in_dict
    return None, False


def _walk(model: type[BaseModel], loc: tuple[int | str, ...]) -> tuple[list[str], type[BaseModel] | None]:
    """The user's path in `loc` (pydantic's union-branch tags dropped) and the model it ends in."""
    path: list[str] = []
    current: type[BaseModel] | None = model
    dict_key_next = False
    for part in loc:
        if isinstance(part, int):
            path.append(str(part))
        elif dict_key_next:
            path.append(part)
            dict_key_next = False
        elif current is not None and part in current.model_fields:
            path.append(part)
            current, dict_key_next = _model_in(current.model_fields[part].annotation)
        # else: a union branch (`float`, `ByMethod`, `function-after[...]`): not the user's key
    return path, current


def _shown(value: Any) -> str | None:
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57] + "...")
    return None


def pydantic_problems(
    exc: ValidationError,
    model: type[BaseModel],
    *,
    unknown: str = "unknown key `{key}`",
    unknown_hint: str | None = None,
    top: str = "(top level)",
) -> list[Problem]:
    """Each of pydantic's errors as a `Problem(path, message)`: a typo gets "did you mean", a missing key
    says so, and a bad value keeps pydantic's message with the value given.

    `unknown` is the message for an unknown key (`{key}` is replaced); `unknown_hint` is added when nothing is
    close (default: the allowed keys); `top` is the key of errors about the whole file.
    """
    problems: list[Problem] = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden" and loc:
            path, where = _walk(model, loc[:-1])
            key = str(loc[-1])
            fields = list(where.model_fields) if where is not None else []
            hint = did_you_mean(key, fields) or unknown_hint or f" allowed keys: {', '.join(fields)}."
            problems.append(Problem(".".join([*path, key]), unknown.format(key=key) + ";" + hint))
            continue
        path, _ = _walk(model, loc)
        if err["type"] == "missing":
            message = "required key is missing"
        else:
            message = str(err["msg"]).removeprefix("Value error, ")
            shown = _shown(err.get("input"))
            if err["type"] != "value_error" and shown is not None:
                message += f" (got {shown})"
        problems.append(Problem(".".join(path) or top, message))
    return problems
