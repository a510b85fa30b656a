"""The override grammar shared by render, run and sweep."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from lf_tuner.cli import cli
from lf_tuner.config import apply_overrides, parse_override
from lf_tuner.errors import BadValue


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("learning_rate=1e-4", ("learning_rate", 1e-4, False)),
        ("learning_rate=5.0e-5", ("learning_rate", 5e-5, False)),
        ("cutoff_len=1024", ("cutoff_len", 1024, False)),
        ("bf16=false", ("bf16", False, False)),
        ("dataset=a,b", ("dataset", "a,b", False)),
        ("report_to=[wandb, tensorboard]", ("report_to", ["wandb", "tensorboard"], False)),
        ("quantization_bit=null", ("quantization_bit", None, False)),
        ("template='1'", ("template", "1", False)),
        ("~val_size", ("val_size", None, True)),
        (" lora_rank = 16 ", ("lora_rank", 16, False)),
    ],
)
def test_parse_override_types_values_as_yaml(item: str, expected: tuple[object, ...]) -> None:
    assert parse_override(item) == expected


def test_apply_overrides_keeps_order_and_removes() -> None:
    cfg = {"a": 1, "b": 2, "c": 3}
    out = apply_overrides(cfg, ["b=20", "~a", "d=x"])
    assert list(out.items()) == [("b", 20), ("c", 3), ("d", "x")]
    assert cfg == {"a": 1, "b": 2, "c": 3}  # the input is not changed


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("learning_rate", "is not `key=value` or `~key`"),
        ("=3", "is not a key name"),
        ("~", "must be followed by a key name"),
        ("lr=[1, 2", "not valid YAML"),
        ("~missing", "`missing` is not in the config"),
    ],
)
def test_malformed_override_is_bad_parameter(item: str, message: str) -> None:
    with pytest.raises(BadValue, match=message):
        apply_overrides({"a": 1}, [item])


def test_render_malformed_override_exits_2() -> None:
    result = CliRunner().invoke(cli, ["render", "--preset", "security", "--schema-only", "oops"])
    assert result.exit_code == 2
    assert "`oops` is not `key=value` or `~key`" in result.output
