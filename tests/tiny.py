"""A tiny randomly initialised model and a tokenizer built inside the tests (nothing is downloaded)."""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = [f"w{i}" for i in range(400)]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"]


def build_tokenizer(directory: Path) -> Path:
    """A word-level tokenizer with Qwen's special tokens, saved as a Hugging Face tokenizer directory."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    directory.mkdir(parents=True, exist_ok=True)
    vocab = {tok: i for i, tok in enumerate(SPECIALS + WORDS + ["system", "user", "assistant", "\n", ":"])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(SPECIALS)
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "eos_token": "<|im_end|>",
                "pad_token": "<|endoftext|>",
                "unk_token": "<unk>",
                "additional_special_tokens": ["<|im_start|>"],
                "model_max_length": 1024,
            }
        )
    )
    (directory / "special_tokens_map.json").write_text(
        json.dumps({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "unk_token": "<unk>"})
    )
    return directory


TINY_CONFIG = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 512,
    "max_position_embeddings": 1024,
    "tie_word_embeddings": True,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 0,
    "torch_dtype": "float32",
}


def build_tiny_model(directory: Path) -> Path:
    """A 2-layer Qwen2 with random weights plus its tokenizer (needs torch and transformers)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    cfg = dict(TINY_CONFIG)
    config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(directory, safe_serialization=True)
    build_tokenizer(directory)
    return directory


def write_alpaca(path: Path, n: int = 16, seed: int = 0) -> Path:
    """n alpaca rows of random words."""
    rnd = random.Random(seed)
    rows = [
        {
            "instruction": " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(4, 20))),
            "input": "",
            "output": " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(4, 20))),
        }
        for _ in range(n)
    ]
    path.write_text(json.dumps(rows, indent=1))
    return path


def write_tiny_project(root: Path, *, tokenizer: bool = False) -> dict[str, object]:
    """A tiny model directory (config.json, and a tokenizer if asked; no weights), a registered 16-row alpaca
    dataset, and a LoRA SFT config pointing at both with absolute paths."""
    model = build_tokenizer(root / "model") if tokenizer else root / "model"
    model.mkdir(parents=True, exist_ok=True)
    (model / "config.json").write_text(json.dumps(TINY_CONFIG))
    data = root / "data"
    data.mkdir()
    write_alpaca(data / "tiny.json", 16)
    (data / "dataset_info.json").write_text(json.dumps({"tiny": {"file_name": "tiny.json"}}))
    return {
        "model_name_or_path": str(model),
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "lora",
        "lora_target": "all",
        "dataset": "tiny",
        "dataset_dir": str(data),
        "template": "qwen",
        "cutoff_len": 64,
        "output_dir": str(root / "out"),
        "per_device_train_batch_size": 4,
    }


# The smallest text decoder and vision towers of the fast path's families, for tests that build them with
# transformers (the vocabulary is above every family's default pad_token_id)
SMALL_TEXT = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "vocab_size": 152064}  # fmt: skip
SMALL_VISION = {
    "qwen2_vl": {"depth": 2, "embed_dim": 32, "num_heads": 2, "hidden_size": 64},
    "qwen2_5_vl": {"depth": 2, "hidden_size": 32, "intermediate_size": 48, "num_heads": 2, "out_hidden_size": 64},
    "qwen3_vl": {"depth": 3, "hidden_size": 32, "intermediate_size": 48, "num_heads": 2, "out_hidden_size": 64,
                 "deepstack_visual_indexes": [1]},
    "siglip": {"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 2,
               "image_size": 56, "patch_size": 14},
}  # fmt: skip
