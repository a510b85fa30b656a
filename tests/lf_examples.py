"""LLaMA-Factory 0.9.5's example training configs (../shared/llamafactory-0.9.5/examples beside the repository, as
CI has it), and stand-in config.json files for the models they name that the catalog does not hold.

The stand-ins are the text-model fields of each checkpoint's public config.json (vision towers left out), written to
a directory so that `resolve_model` reads them as it reads a downloaded model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
LLAMAFACTORY = ROOT.parent / "shared" / "llamafactory-0.9.5"
EXAMPLES = LLAMAFACTORY / "examples"

_LLAMA3_8B = {
    "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": False,
    "max_position_embeddings": 8192,
}  # fmt: skip
_QWEN3_4B = {
    "model_type": "qwen3", "hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36,
    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936,
    "tie_word_embeddings": True, "max_position_embeddings": 262144,
}  # fmt: skip
_QWEN3_30B_A3B = {
    "model_type": "qwen3_moe", "hidden_size": 2048, "intermediate_size": 6144, "moe_intermediate_size": 768,
    "num_hidden_layers": 48, "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128,
    "num_experts": 128, "num_experts_per_tok": 8, "vocab_size": 151936, "tie_word_embeddings": False,
    "max_position_embeddings": 262144,
}  # fmt: skip
STAND_INS: dict[str, dict[str, Any]] = {
    "Qwen/Qwen3-4B-Instruct-2507": _QWEN3_4B,
    "Qwen/Qwen3-VL-4B-Instruct": {"model_type": "qwen3_vl", "text_config": _QWEN3_4B, "tie_word_embeddings": True},
    "Qwen/Qwen3-8B": {
        **_QWEN3_4B, "hidden_size": 4096, "intermediate_size": 12288, "tie_word_embeddings": False,
        "max_position_embeddings": 40960,
    },
    "Qwen/Qwen3-30B-A3B-Instruct-2507": _QWEN3_30B_A3B,
    "Qwen/Qwen3-VL-30B-A3B-Instruct": {"model_type": "qwen3_vl_moe", "text_config": _QWEN3_30B_A3B},
    "Qwen/Qwen2-1.5B-Instruct": {
        "model_type": "qwen2", "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
        "num_attention_heads": 12, "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True,
        "max_position_embeddings": 32768,
    },
    "Qwen/Qwen2.5-VL-7B-Instruct": {
        "model_type": "qwen2_5_vl", "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
        "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064, "tie_word_embeddings": False,
        "max_position_embeddings": 128000,
    },
    "meta-llama/Meta-Llama-3-8B-Instruct": _LLAMA3_8B,
    "TechxGenus/Meta-Llama-3-8B-Instruct-AWQ": _LLAMA3_8B,
    "TechxGenus/Meta-Llama-3-8B-Instruct-GPTQ": _LLAMA3_8B,
    "ISTA-DASLab/Meta-Llama-3-8B-Instruct-AQLM-2Bit-1x16": _LLAMA3_8B,
    "models/llama3-8b-pro": {**_LLAMA3_8B, "num_hidden_layers": 40},  # extras/llama_pro/expand.sh: 32 + 8 layers
    "models/Qwen2.5-7B": {  # a local folder: resolved only through its stand-in, never the catalog's Qwen2.5-7B
        "model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
        "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064, "tie_word_embeddings": False,
        "max_position_embeddings": 131072,
    },
    "models/Llama-2-7b": {
        "model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000, "tie_word_embeddings": False,
        "max_position_embeddings": 4096,
    },
}  # fmt: skip


def training_configs() -> Iterator[tuple[str, dict[str, Any]]]:
    """(path relative to examples/, config) of every LLaMA-Factory training config: the YAML files with a `stage`
    (the v1 engine's examples/v1/ configs have none; inference and merge configs are not training)."""
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(cfg, dict) and "stage" in cfg:
            yield str(path.relative_to(EXAMPLES)), cfg


def accelerate_config(relative: str) -> Path | None:
    """The accelerate config an example is launched with: `--config_file` in its comments or in the train.sh
    beside it (examples/extras/fsdp_qlora/train.sh)."""
    path = EXAMPLES / relative
    texts = [path.read_text(encoding="utf-8")]
    script = path.parent / "train.sh"
    if script.is_file():
        texts.append(script.read_text(encoding="utf-8"))
    for text in texts:
        found = re.search(r"--config_file\s+(\S+\.yaml)", text)
        if found:
            return LLAMAFACTORY / found.group(1)
    return None


def with_eval_block(relative: str) -> dict[str, Any]:
    """The example with its commented-out `### eval` block switched on (val_size, eval batch, eval_strategy)."""
    lines = (EXAMPLES / relative).read_text(encoding="utf-8").splitlines()
    on = [
        re.sub(r"^# (val_size|per_device_eval_batch_size|eval_strategy|eval_steps):", r"\1:", line)
        for line in lines
    ]
    cfg: dict[str, Any] = yaml.safe_load("\n".join(on))
    return cfg


def write_stand_in(model: str, directory: Path) -> Path:
    """A model directory with the stand-in config.json for `model`."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(STAND_INS[model]), encoding="utf-8")
    return directory
