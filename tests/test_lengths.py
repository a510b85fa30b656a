"""Cores of `lf-tuner cutoff`: percentiles, the recommendation, the histogram, template pieces, and counting
(the pre-token shortcut against `encode`; batches and worker processes against one-by-one counts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from lf_tuner.chat import Message, get_template, template_names
from lf_tuner.data import DatasetAttr, convert, iter_rows, resolve_datasets
from lf_tuner.errors import LfTunerError
from lf_tuner.lengths import (
    HFTokenCounter,
    LengthCounter,
    Stats,
    histogram,
    load_hf_tokenizer,
    percentile,
    recommend,
)
from lf_tuner.lengths.shortcuts import GPT2_PATTERN, ascii_pattern
from tests.lf_data import QWEN2_PATTERN


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


# ---------------------------------------------------------------- counting: the pre-token shortcut, batches, workers

LLAMA3_PATTERN = QWEN2_PATTERN.replace(r"\p{N}|", r"\p{N}{1,3}|")
O200K_PATTERN = "|".join(
    [
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"\p{N}{1,3}",
        r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
        r"\s*[\r\n]+",
        r"\s+(?!\S)",
        r"\s+",
    ]
)
# Pieces that stress the pre-tokenizers: contractions, runs of blanks and newlines, digits, added tokens,
# and characters that send a text to `encode` (non-ASCII, control characters).
PIECES = ["a", "Zq", "x9", "The", " cat", "12345", "'s", "'LL", "'t", " ", "  ", "\n", "\n\n", "\t", "\r\n",
          " \n ", ".", "!?", "...", "-->", "__", "(x)", "\"", "'", "<|im_start|>", "<|im_end|>", "<think>",
          "é", "東京", "—", "\x00", "\x0b", "\x0c", "\x1c", "\x1f", "\x7f", "\x85", "\u00a0"]  # fmt: skip
texts = st.lists(st.sampled_from(PIECES), max_size=30).map("".join)


def _qwen_style_tokenizer(directory: Path) -> Path:
    """A byte-level BPE with Qwen2's pipeline (NFC, Split regex + ByteLevel) and added tokens of both kinds."""
    from tokenizers import AddedToken

    from tests.lf_data import TEXT, build_qwen2_bpe_tokenizer

    added = [AddedToken("<think>", special=False, normalized=False), AddedToken("<tool>", normalized=True)]
    return build_qwen2_bpe_tokenizer(directory, [TEXT] * 20 + TEXT.split(), vocab_size=600, added=added,
                                     config={"eos_token": "<|im_end|>"})  # fmt: skip


@pytest.fixture(scope="module")
def tokenizers_dir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.lf_data import build_bpe_tokenizer

    root = tmp_path_factory.mktemp("tok")
    return {"gpt2": build_bpe_tokenizer(root / "gpt2"), "qwen": _qwen_style_tokenizer(root / "qwen")}


@pytest.mark.parametrize("pattern", [QWEN2_PATTERN, LLAMA3_PATTERN, O200K_PATTERN, GPT2_PATTERN])
@settings(max_examples=300, deadline=None)
@given(text=texts)
def test_ascii_pattern_splits_like_the_tokenizer(pattern: str, text: str) -> None:
    """`re` on the translated pattern cuts ASCII text exactly where the tokenizer's own Split (Oniguruma) does."""
    from tokenizers import Regex, pre_tokenizers

    data = text.encode("ascii", "ignore")  # what the shortcut is given: ASCII, as bytes
    split = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    compiled = ascii_pattern(pattern)
    assert compiled is not None
    assert compiled.findall(data) == [piece.encode() for piece, _ in split.pre_tokenize_str(data.decode())]


@pytest.mark.parametrize(
    "pattern",
    [r"\s+$|\S+", r"(a)|b", r"[[a]b]", r"\p{Han}+|.", r"[^\P{L}]", r"\bx", r"(?m:x)", r"\x{41}", r"(?<n>a)"],
)
def test_ascii_pattern_refuses_what_it_cannot_prove(pattern: str) -> None:
    assert ascii_pattern(pattern) is None


@pytest.mark.parametrize("kind", ["gpt2", "qwen"])
@settings(max_examples=200, deadline=None)
@given(batch=st.lists(texts, max_size=8))
def test_shortcut_counts_equal_encode(kind: str, batch: list[str], tokenizers_dir: dict[str, Path]) -> None:
    counter = _counter(tokenizers_dir[kind])
    assert counter.pretoken_counter() is not None
    assert counter.count(batch) == counter.encode_counts(batch)


# Words, runs of spaces, line breaks and tabs around them, code indentation, digits, the added tokens and "\u2581":
# what the SentencePiece shortcut splits (into words, and at the characters no merge touches) must not change counts.
SP_PIECES = ["a", "the", "The", " cat", "word.", "(x,", "7)", "12345", " ", " ", " ", "  ", "    ", "\n", "\n",
             "\n\n", "\t", "\r\n", " \n ", "\x01", "\x00", "\x0b", "\u2581", "\u2581\u2581", "<s>", "</s>",
             "[INST]", "été", "東京", "**b**", "```python\ndef f(x):\n    return x\n```"]  # fmt: skip
sp_texts = st.lists(st.sampled_from(SP_PIECES), max_size=30).map("".join)


@pytest.fixture(scope="module")
def sentencepiece_counters(tmp_path_factory: pytest.TempPathFactory) -> list[HFTokenCounter]:
    """Mistral's SentencePiece model as transformers loads it (Metaspace), as lf-tuner rebuilds it without
    transformers, and in the old layout read as it is (Prepend + Replace normalizer)."""
    from tokenizers import Tokenizer

    from tests.lf_data import build_sentencepiece_tokenizer

    directory = build_sentencepiece_tokenizer(tmp_path_factory.mktemp("sp") / "sp")
    raw = Tokenizer.from_file(str(directory / "tokenizer.json"))
    counters = [
        load_hf_tokenizer(directory, use_transformers=True),
        load_hf_tokenizer(directory, use_transformers=False),
        HFTokenCounter(tokenizer=raw, label="old layout"),
    ]
    for counter in counters:
        assert counter.pretoken_counter() is not None
    return counters


@settings(max_examples=300, deadline=None)
@given(batch=st.lists(sp_texts, max_size=8))
# the text's own "\x01" after a space: not the mark of a word after a line break
@example(batch=[" \x01", "x \x01", "a \x01b"])
def test_sentencepiece_shortcut_counts_equal_encode(
    batch: list[str], sentencepiece_counters: list[HFTokenCounter]
) -> None:
    for counter in sentencepiece_counters:
        assert counter.count(batch) == counter.encode_counts(batch), counter.label
        assert counter.count(batch) == counter.encode_counts(batch), counter.label  # from the caches


def test_sentencepiece_shortcut_splits_at_line_breaks(sentencepiece_counters: list[HFTokenCounter]) -> None:
    """Mistral's vocabulary has no token with a line break in it: words joined by one are looked up apart."""
    fast = sentencepiece_counters[0].pretoken_counter()
    assert fast is not None and "\n" in getattr(fast, "barriers", "")
    text = "One two.\n\nThree four\n- five"
    assert sentencepiece_counters[0].count([text]) == sentencepiece_counters[0].encode_counts([text])
    assert "Three" in fast.lengths and not any("\n" in w and w != "\n" for w in [*fast.lengths, *fast.spaced])


def test_shortcut_learns_added_tokens_from_prepare(tokenizers_dir: dict[str, Path]) -> None:
    counter = load_hf_tokenizer(tokenizers_dir["qwen"])
    text = "hello<|eot_id|>world"
    before = counter.count([text])[0]
    counter.prepare(["<|eot_id|>"], replace_eos=False)  # llama3's stop word, added as a special token
    after = counter.count([text])
    assert after == counter.encode_counts([text])
    assert after[0] < before  # the stop word is one token now, on the shortcut as in encode


def test_shortcut_stays_off_for_other_pipelines(tmp_path: Path, tokenizers_dir: dict[str, Path]) -> None:
    from tokenizers import Tokenizer, normalizers

    tok = Tokenizer.from_file(str(tokenizers_dir["qwen"] / "tokenizer.json"))
    tok.normalizer = normalizers.Lowercase()  # changes ASCII text: not reproduced
    (tmp_path / "lower").mkdir()
    tok.save(str(tmp_path / "lower" / "tokenizer.json"))
    counter = load_hf_tokenizer(tmp_path / "lower")
    assert counter.pretoken_counter() is None
    assert counter.count(["Hello World"]) == counter.encode_counts(["Hello World"])


def _counter(directory: Path, shortcut: bool = True) -> HFTokenCounter:
    counter = load_hf_tokenizer(directory)
    counter.shortcut = shortcut
    return counter


def _write_sharegpt(directory: Path, n: int) -> list[DatasetAttr]:
    from tests.lf_data import sharegpt_rows

    rows = sharegpt_rows(n, seed=7)
    for i, row in enumerate(rows):  # repeated system prompts and answers: counted once per batch
        if i % 2:
            row["conversations"].insert(0, {"from": "system", "value": "You are terse." * (1 + i % 3)})
        row["conversations"][-1]["value"] = (
            "Same answer." if i % 4 == 0 else row["conversations"][-1]["value"]
        )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sg.json").write_text(json.dumps(rows, ensure_ascii=False))
    (directory / "dataset_info.json").write_text('{"sg": {"file_name": "sg.json", "formatting": "sharegpt"}}')
    return resolve_datasets(["sg"], directory)


@pytest.mark.parametrize("template", ["qwen", "llama3", "mistral"])
def test_batched_and_parallel_lengths_equal_one_by_one(
    template: str, tokenizers_dir: dict[str, Path], tmp_path: Path
) -> None:
    """Batches (each distinct piece counted once), the shortcut and worker processes change nothing: the
    lengths equal those of each sample counted alone on `encode`."""
    attrs = _write_sharegpt(tmp_path / "data", 90)
    tok = tokenizers_dir["qwen"]
    tpl = get_template(template)
    reference = LengthCounter(tpl, _counter(tok, shortcut=False), batch_size=1, workers=1)
    samples = [s for _, row in iter_rows(attrs[0]) if not isinstance(s := convert(row, attrs[0]), str)]
    one_by_one = [reference.lengths([s])[0] for s in samples]
    for workers in (1, 2):
        m = LengthCounter(tpl, _counter(tok), batch_size=16, workers=workers).measure(attrs)
        assert list(zip(m.prompt, m.response, strict=True)) == one_by_one


def test_workers_from_environment(monkeypatch: pytest.MonkeyPatch, tokenizers_dir: dict[str, Path]) -> None:
    counter = LengthCounter(get_template("qwen"), _counter(tokenizers_dir["qwen"]))
    monkeypatch.setenv("LF_TUNER_WORKERS", "3")
    assert counter._worker_count([], None) == 3
    monkeypatch.setenv("LF_TUNER_WORKERS", "many")
    with pytest.raises(LfTunerError, match="LF_TUNER_WORKERS: `many` is not a number"):
        counter._worker_count([], None)
    monkeypatch.delenv("LF_TUNER_WORKERS")
    assert counter._worker_count([], None) == 1  # no data, no pool


def test_padding_and_truncation_in_tokenizer_json_are_ignored(
    tmp_path: Path, tokenizers_dir: dict[str, Path]
) -> None:
    """transformers' `encode` neither pads nor truncates without being asked; neither does lf-tuner's count."""
    from tokenizers import Tokenizer

    text = "The quick brown fox jumps over the lazy dog. " * 4
    expected = _counter(tokenizers_dir["qwen"], shortcut=False).encode_counts([text, "a"])
    tok = Tokenizer.from_file(str(tokenizers_dir["qwen"] / "tokenizer.json"))
    tok.enable_truncation(max_length=8)
    tok.enable_padding(length=64)
    (tmp_path / "padded").mkdir()
    tok.save(str(tmp_path / "padded" / "tokenizer.json"))
    for shortcut in (False, True):
        assert _counter(tmp_path / "padded", shortcut=shortcut).count([text, "a"]) == expected
    assert expected[0] > 8


def test_shortcut_forgets_pre_tokens_when_full(
    monkeypatch: pytest.MonkeyPatch, tokenizers_dir: dict[str, Path]
) -> None:
    import lf_tuner.lengths.shortcuts

    monkeypatch.setattr(lf_tuner.lengths.shortcuts, "_PRETOKEN_CACHE_MAX", 5)
    counter = _counter(tokenizers_dir["qwen"])
    batch = ["The quick brown fox jumps over the lazy dog.\n\n" * 3, "user assistant system 123 4567 !?"]
    assert counter.count(batch) == counter.encode_counts(batch)
    fast = counter.pretoken_counter()
    assert fast is not None and 0 < len(fast.lengths) <= 6
