"""Pure cores of `lf-tuner cutoff`: percentiles, the recommendation, the histogram, template pieces."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lf_tuner.chat import Message, get_template, template_names
from lf_tuner.errors import LfTunerError
from lf_tuner.lengths import Stats, histogram, percentile, recommend


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))  # 1..100
    assert percentile(values, 95) == 95
    assert percentile(values, 99) == 99
    assert percentile(values, 99.5) == 100
    assert percentile(values, 50) == 50
    assert percentile([10, 20, 30], 50) == 20  # ceil(1.5) = 2nd value
    assert percentile([10, 20, 30], 34) == 20
    assert percentile([10, 20, 30], 33) == 10  # 33% of 3 = 0.99 -> rank 1
    assert percentile([7], 0.1) == 7


def test_percentile_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="outside"):
        percentile([1], 101)


@given(
    st.lists(st.integers(min_value=0, max_value=100_000), min_size=1),
    st.floats(min_value=0.01, max_value=100),
)
def test_percentile_properties(values: list[int], p: float) -> None:
    ordered = sorted(values)
    got = percentile(ordered, p)
    assert got <= ordered[-1]
    # at least p% of samples are <= got, and no smaller value in the data satisfies that
    assert sum(v <= got for v in ordered) * 100 >= p * len(ordered) - 1e-9
    smaller = [v for v in ordered if v < got]
    if smaller:
        assert sum(v <= smaller[-1] for v in ordered) * 100 < p * len(ordered) + 1e-9


def test_stats() -> None:
    s = Stats.of([5, 1, 3, 2, 4])
    assert (s.count, s.mean, s.p50, s.p90, s.p95, s.p99, s.max, s.sum) == (5, 3.0, 3, 5, 5, 5, 5, 15)


def test_recommend_rounds_up_and_counts_truncation() -> None:
    totals = [100] * 90 + [300] * 9 + [1000]
    rec = recommend(totals, percentile_=95, multiple=128)
    assert rec.percentile_length == 300
    assert rec.cutoff == 384
    assert rec.truncated == 1
    assert rec.truncated_tokens == 1000 - 384
    assert rec.truncated_token_share == pytest.approx(616 / (9000 + 2700 + 1000))


def test_recommend_caps_at_max_positions() -> None:
    rec = recommend([5000, 6000], percentile_=99, multiple=128, max_positions=4096)
    assert (rec.cutoff, rec.capped_at, rec.truncated) == (4096, 4096, 2)


def test_recommend_exact_multiple_is_kept() -> None:
    assert recommend([256] * 10, multiple=128).cutoff == 256
    assert recommend([3] * 10, multiple=128).cutoff == 128


@given(
    st.lists(st.integers(min_value=1, max_value=50_000), min_size=1), st.integers(min_value=1, max_value=512)
)
def test_recommend_properties(values: list[int], multiple: int) -> None:
    rec = recommend(values, multiple=multiple)
    assert rec.cutoff % multiple == 0
    assert rec.cutoff >= rec.percentile_length
    assert rec.truncated == sum(v > rec.cutoff for v in values)
    assert rec.truncated <= len(values) * 0.05 + 1


def test_histogram_exact() -> None:
    lines = histogram([1, 2, 2, 3, 10], bins=3, width=10, mark=9)
    assert lines == [
        " 1-4 | ########## 4",
        " 5-8 |            0",
        "9-12 | ##         1  <- cutoff",
    ]


def test_template_pieces_qwen_multiturn() -> None:
    tpl = get_template("qwen")
    msgs = [
        Message("user", "hi"),
        Message("assistant", "yo"),
        Message("user", "again"),
        Message("assistant", "ok"),
    ]
    pairs = tpl.encode(msgs, system="", tools="")
    assert pairs[0][0] == [
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n",
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    ]
    assert pairs[0][1] == ["yo<|im_end|>\n"]
    assert pairs[1] == (["<|im_start|>user\nagain<|im_end|>\n<|im_start|>assistant\n"], ["ok<|im_end|>\n"])


def test_template_pieces_llama2_fuses_system_and_bos() -> None:
    pairs = get_template("mistral").encode([Message("user", "q"), Message("assistant", "a")], "S", "")
    assert pairs == [([("bos_token",), "[INST] S\n\nq[/INST]"], [" a", ("eos_token",)])]


def test_reasoning_template_adds_empty_thought() -> None:
    msgs = [Message("user", "q"), Message("assistant", "a")]
    on = get_template("qwen3").encode(msgs, None, None)
    assert on[0][1][0] == "<think>\n\n</think>\n\n"
    off = get_template("qwen3", enable_thinking=False).encode(msgs, None, None)
    assert off[0][0][-1] == "<think>\n\n</think>\n\n"
    with_thought = get_template("qwen3").encode(
        [msgs[0], Message("assistant", "<think>\nx\n</think>\n\na")], None, None
    )
    assert "<think>\n\n</think>\n\n" not in with_thought[0][1]


def test_unknown_template_names_closest() -> None:
    assert {"qwen", "qwen3", "llama3", "mistral", "gemma", "chatml", "default", "empty"} <= set(
        template_names()
    )
    with pytest.raises(
        LfTunerError, match=r"template: unknown template `qwen4` .*; did you mean `qwen` or `qwen3`"
    ):
        get_template("qwen4")
