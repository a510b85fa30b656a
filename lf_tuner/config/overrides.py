"""The one override grammar for render, run and sweep: `key=value` (YAML-typed) and `~key` (remove)."""

from __future__ import annotations

import re
from typing import Any

from lf_tuner.config.files import TrainConfig, parse_yaml
from lf_tuner.errors import BadValue, LfTunerError

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
        value = parse_yaml(raw, f"`{item}`") if raw.strip() else ""
    except LfTunerError as exc:  # values are read as config files are: `1e-4` is a number
        raise BadValue(f"{exc.message}; quote the value, e.g. {key}='...'", param="override") from None
    return key, value, False


def apply_overrides(cfg: TrainConfig, overrides: list[str]) -> TrainConfig:
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
