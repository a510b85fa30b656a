"""Train a small byte-level BPE tokenizer on the bundled example data (the demo needs one offline).

Usage: python scripts/make_demo_tokenizer.py DIR
Writes DIR/tokenizer.json and DIR/tokenizer_config.json with Qwen's special tokens. A real run uses the
model's own tokenizer directory instead.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

ROOT = Path(__file__).resolve().parent.parent
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def corpus() -> list[str]:
    texts: list[str] = []
    for path in sorted((ROOT / "examples" / "data").glob("demo_*.json")):
        for row in json.loads(path.read_text(encoding="utf-8")):
            for value in row.values():
                if isinstance(value, str):
                    texts.append(value)
                elif isinstance(value, list):
                    texts += [turn.get("value", "") for turn in value if isinstance(turn, dict)]
    return texts


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    target = Path(sys.argv[1])
    if target.exists() and any(target.iterdir()):
        print(f"{target} is not empty; pass a new directory", file=sys.stderr)
        return 1
    target.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2000,
        special_tokens=SPECIALS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    tok.save(str(target / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "additional_special_tokens": ["<|im_start|>"],
        "model_max_length": 32768,
    }
    (target / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    print(f"wrote a {tok.get_vocab_size()}-token demo tokenizer to {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
