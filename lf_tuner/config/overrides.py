"""The one override grammar for render, run and sweep: `key=value` (YAML-typed) and `~key` (remove)."""

from __future__ import annotations

import re
from typing import Any

import yaml

from lf_tuner.errors import BadValue

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_override(item: str) -> tuple[str, Any, bool]:
    """(key, value, remove) for one override item; BadValue (exit 2) when malformed."""
    text = item.strip()
    if text.startswith("~"):
        key = text[1:].strip()
        if not _KEY.match(key):
            raise BadValue(
                f"`{item}`: `~` must be followed by a key name, e.g. `~val_size`", param="override"
            )
        return key, None, True
    if "=" not in text:
        raise BadValue(
            f"`{item}` is not `key=value` or `~key`; write e.g. `learning_rate=1e-4`", param="override"
        )
    key, raw = text.split("=", 1)
    key = key.strip()
    if not _KEY.match(key):
        raise BadValue(
            f"`{item}`: `{key}` is not a key name; write e.g. `learning_rate=1e-4`", param="override"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        problem = str(exc).splitlines()[0]
        raise BadValue(
            f"`{item}`: the value is not valid YAML ({problem}); quote it, e.g. {key}='...'",
            param="override",
        ) from exc
    return key, _yaml11_floats(value, raw.strip()), False


def _yaml11_floats(value: Any, raw: str) -> Any:
    """YAML 1.1 reads `1e-4` as a string; users mean a number (LLaMA-Factory's OmegaConf agrees)."""
    if isinstance(value, str) and value == raw:
        try:
            return float(raw) if re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+", raw) else value
        except ValueError:
            return value
    return value


def apply_overrides(cfg: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A new dict with the overrides applied in order; existing keys keep their place, new keys go last."""
    result = dict(cfg)
    for item in overrides:
        key, value, remove = parse_override(item)
        if remove:
            if key not in result:
                raise BadValue(
                    f"`{item}`: `{key}` is not in the config, so there is nothing to remove",
                    param="override",
                )
            del result[key]
        else:
            result[key] = value
    return result
