"""Datasets and a byte-level BPE tokenizer for the cutoff tests (built in the test, nothing downloaded)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<s>",
    "</s>",
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]
TEXT = (
    "The quick brown fox jumps over the lazy dog. Größe café naïve — 東京 数据 123 4567 !? "
    "def f(x):\n    return x * 2\n\nuser assistant system Human Assistant [INST] [/INST] ### Instruction"
)


def build_bpe_tokenizer(directory: Path, vocab_size: int = 800, corpus: list[str] | None = None) -> Path:
    """A byte-level BPE tokenizer with chat special tokens, saved as a Hugging Face tokenizer directory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    directory.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus or [TEXT] * 20 + [w for w in TEXT.split()], trainer=trainer)
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<s>",
                "eos_token": "</s>",
                "pad_token": "<|endoftext|>",
                "model_max_length": 4096,
            }
        )
    )
    return directory


WORDS = TEXT.replace("\n", " ").split(" ")


def _text(rnd: random.Random, lo: int = 1, hi: int = 30) -> str:
    parts = [rnd.choice(WORDS) for _ in range(rnd.randint(lo, hi))]
    seps = [rnd.choice([" ", " ", " ", "\n", "  ", ""]) for _ in parts]
    return "".join(p + s for p, s in zip(parts, seps, strict=True)).strip(" ")


def alpaca_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for i in range(n):
        row: dict[str, Any] = {
            "instruction": _text(rnd),
            "input": _text(rnd) if i % 3 else "",
            "output": _text(rnd),
        }
        if i % 4 == 1:
            row["system"] = _text(rnd, 1, 8)
        if i % 5 == 2:
            row["history"] = [[_text(rnd), _text(rnd)] for _ in range(rnd.randint(1, 2))]
        rows.append(row)
    return rows


def sharegpt_rows(n: int, seed: int = 1, openai: bool = False) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    role, content = ("role", "content") if openai else ("from", "value")
    user, assistant = ("user", "assistant") if openai else ("human", "gpt")
    rows = []
    for i in range(n):
        msgs = []
        if i % 3 == 0:
            msgs.append({role: "system", content: _text(rnd, 1, 10)})
        for _ in range(rnd.randint(1, 3)):
            msgs.append({role: user, content: _text(rnd)})
            msgs.append({role: assistant, content: _text(rnd)})
        rows.append({("messages" if openai else "conversations"): msgs})
    return rows


def write_dataset_dir(directory: Path, n: int = 24) -> Path:
    """alpaca (JSON + JSONL), sharegpt and openai datasets registered in dataset_info.json."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "alpaca.json").write_text(json.dumps(alpaca_rows(n), ensure_ascii=False, indent=1))
    (directory / "alpaca.jsonl").write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in alpaca_rows(n, seed=5)) + "\n"
    )
    (directory / "sharegpt.json").write_text(json.dumps(sharegpt_rows(n), ensure_ascii=False))
    (directory / "openai.jsonl").write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in sharegpt_rows(n, seed=2, openai=True)) + "\n"
    )
    openai_tags = {
        "role_tag": "role",
        "content_tag": "content",
        "user_tag": "user",
        "assistant_tag": "assistant",
        "system_tag": "system",
    }
    info = {
        "alp": {"file_name": "alpaca.json", "columns": {"prompt": "instruction", "query": "input", "response": "output", "system": "system", "history": "history"}},
        "alp_jsonl": {"file_name": "alpaca.jsonl", "columns": {"prompt": "instruction", "query": "input", "response": "output", "system": "system", "history": "history"}},
        "sg": {"file_name": "sharegpt.json", "formatting": "sharegpt"},
        "oa_sharegpt": {"file_name": "openai.jsonl", "formatting": "sharegpt", "columns": {"messages": "messages"}, "tags": openai_tags},
        "oa": {"file_name": "openai.jsonl", "formatting": "openai", "columns": {"messages": "messages"}, "tags": openai_tags},
    }  # fmt: skip
    (directory / "dataset_info.json").write_text(json.dumps(info, indent=1))
    return directory
