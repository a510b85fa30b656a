"""Datasets and a byte-level BPE tokenizer for the cutoff tests (built in the test, nothing downloaded)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
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
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
              "pad_token": "<|endoftext|>", "model_max_length": 4096}  # fmt: skip
    return _train_and_save(tok, directory, vocab_size, SPECIALS, corpus or [TEXT] * 20 + TEXT.split(), config)


# Qwen2's pre-tokenizer (tokenizer.json of Qwen2.5 / Qwen3) and its special tokens.
QWEN2_PATTERN = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def build_qwen2_bpe_tokenizer(
    directory: Path, corpus: Iterable[str], *, vocab_size: int, added: list[Any], config: dict[str, Any]
) -> Path:
    """A byte-level BPE with Qwen2's pipeline (NFC, the Split regex + ByteLevel, its special tokens), then the
    `added` tokens (tokenizers.AddedToken) after training; `config` is its tokenizer_config.json."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])  # fmt: skip
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return _train_and_save(tok, directory, vocab_size, QWEN2_SPECIALS, corpus, config, added)


def _train_and_save(
    tok: Any,
    directory: Path,
    vocab_size: int,
    specials: list[str],
    corpus: Iterable[str],
    config: dict[str, Any],
    added: list[Any] | None = None,
) -> Path:
    """Train a byte-level BPE's merges on `corpus`, add `added`, save it and `config` in `directory`."""
    from tokenizers import decoders, pre_tokenizers, trainers

    directory.mkdir(parents=True, exist_ok=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    if added:
        tok.add_tokens(added)
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
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


# ---------------------------------------------------------------- LLaMA-Factory's own preprocessing (the oracle)


def run_llamafactory(
    tok: Path, data: Path, datasets: list[str], template: str, tmp: Path, stage: str = "sft", **extra: Any
) -> Any:
    """What scripts/stat_utils/length_cdf.py runs, for any stage: the dataset pipeline with no truncation.

    The caller isolates the environment (HF_DATASETS_CACHE, the working directory) with monkeypatch.
    """
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    args = dict(stage=stage, model_name_or_path=str(tok), dataset=",".join(datasets), dataset_dir=str(data),
                template=template, cutoff_len=1_000_000, output_dir=str(tmp / "out"), overwrite_cache=True,
                do_train=True, report_to="none")  # fmt: skip
    if stage == "kto":
        args["pref_beta"] = 0.1
    args.update(extra)
    model_args, data_args, training_args, _, _ = get_train_args(args)
    tokenizer_module = load_tokenizer(model_args)
    tpl = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    lf_stage = "rm" if stage in ("rm", "dpo") else stage
    module = get_dataset(tpl, model_args, data_args, training_args, lf_stage, **tokenizer_module)
    return module["train_dataset"]


def isolate_llamafactory(tmp: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp / "cache"))
    monkeypatch.setenv("DISABLE_VERSION_CHECK", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.chdir(tmp)


# ---------------------------------------------------------------- tool calls, preferences, KTO, pretraining text


def _tool(rnd: random.Random, i: int) -> dict[str, Any]:
    props: dict[str, Any] = {}
    for k in range(rnd.randint(0, 3)):
        p: dict[str, Any] = {
            "type": rnd.choice(["string", "number", "integer", "boolean"]),
            "description": _text(rnd, 1, 6),
        }
        if k == 1 and rnd.random() < 0.5:
            p = {"type": "array", "items": {"type": "string"}, "description": _text(rnd, 1, 4)}
        if k == 2 and rnd.random() < 0.5:
            p["enum"] = ["celsius", "fahrenheit"]
        props[f"arg_{k}"] = p
    fn = {"name": f"tool_{i}_{rnd.randint(0, 99)}", "description": _text(rnd, 1, 12),
          "parameters": {"type": "object", "properties": props, "required": list(props)[:1]}}  # fmt: skip
    return {"type": "function", "function": fn} if rnd.random() < 0.3 else fn


def _call(rnd: random.Random, tools: list[dict[str, Any]], parallel: bool = True) -> str:
    fn = tools[0].get("function", tools[0])
    args = {k: (_text(rnd, 1, 3) if v["type"] == "string" else rnd.randint(0, 99) if v["type"] != "array" else [_text(rnd, 1, 2)])
            for k, v in fn["parameters"]["properties"].items()}  # fmt: skip
    call = {"name": fn["name"], "arguments": args}
    return json.dumps(call if rnd.random() < 0.7 or not parallel else [call, call], ensure_ascii=False)


def tool_rows(n: int, seed: int = 3, parallel: bool = True) -> list[dict[str, Any]]:
    """sharegpt rows with `tools` and function_call / observation turns (as glaive_toolcall), some with none."""
    rnd = random.Random(seed)
    rows = []
    for i in range(n):
        tools = [_tool(rnd, k) for k in range(rnd.randint(1, 3))]
        msgs = [{"from": "human", "value": _text(rnd)}]
        if i % 4 != 3:
            msgs += [{"from": "function_call", "value": _call(rnd, tools, parallel)},
                     {"from": "observation", "value": json.dumps({"result": _text(rnd, 1, 8)})}]  # fmt: skip
        msgs.append({"from": "gpt", "value": _text(rnd)})
        rows.append(
            {"conversations": msgs, "tools": "[]" if i % 7 == 5 else json.dumps(tools, ensure_ascii=False)}
        )
    return rows


def openai_tool_rows(n: int, seed: int = 4) -> list[dict[str, Any]]:
    """openai rows with `tool_calls` and tool messages (tools and arguments as JSON strings: as lists, LLaMA-Factory
    reads them through Arrow, which fills keys that other rows have with null)."""
    rnd = random.Random(seed)
    rows = []
    for _ in range(n):
        tools = [_tool(rnd, k) for k in range(rnd.randint(1, 2))]
        call = json.loads(_call(rnd, tools))
        calls = call if isinstance(call, list) else [call]
        calls = [
            {"name": c["name"], "arguments": json.dumps(c["arguments"])} for c in calls
        ]  # as OpenAI sends them
        msgs = [
            {"role": "user", "content": _text(rnd)},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"type": "function", "function": c} for c in calls],
            },
            *({"role": "tool", "content": _text(rnd, 1, 6)} for _ in calls),
            {"role": "assistant", "content": _text(rnd)},
        ]
        rows.append({"messages": msgs, "tools": json.dumps(tools)})
    return rows


def preference_rows(n: int, seed: int = 5) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    rows = []
    for i in range(n):
        msgs = []
        for _ in range(rnd.randint(0, 1)):
            msgs += [{"from": "human", "value": _text(rnd)}, {"from": "gpt", "value": _text(rnd)}]
        msgs.append({"from": "human", "value": _text(rnd)})
        chosen = _text(rnd) if i % 3 else "<think>\n" + _text(rnd, 1, 5) + "\n</think>\n\n" + _text(rnd)
        rows.append({"conversations": msgs, "chosen": {"from": "gpt", "value": chosen},
                     "rejected": {"from": "gpt", "value": _text(rnd, 1, 60)}})  # fmt: skip
    return rows


def kto_rows(n: int, seed: int = 6) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    return [{"messages": [{"role": "user", "content": _text(rnd)}, {"role": "assistant", "content": _text(rnd)}],
             "label": i % 3 != 0} for i in range(n)]  # fmt: skip


def pt_texts(n: int, seed: int = 7) -> list[str]:
    rnd = random.Random(seed)
    return [_text(rnd, 0, 120) if i % 9 else "" for i in range(n)]


def write_stage_dir(directory: Path, n: int = 24) -> Path:
    """Tool-call, preference, KTO and pretraining datasets registered in dataset_info.json."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tools.json").write_text(json.dumps(tool_rows(n), ensure_ascii=False, indent=1))
    (directory / "tools_single.json").write_text(json.dumps(tool_rows(n, seed=12, parallel=False)))
    (directory / "tools_openai.jsonl").write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in openai_tool_rows(n)) + "\n"
    )
    (directory / "dpo.json").write_text(json.dumps(preference_rows(n), ensure_ascii=False))
    alpaca_dpo = [{"instruction": r["conversations"][-1]["value"], "chosen": r["chosen"]["value"],
                   "rejected": r["rejected"]["value"]} for r in preference_rows(n, seed=8)]  # fmt: skip
    (directory / "dpo_alpaca.json").write_text(json.dumps(alpaca_dpo, ensure_ascii=False))
    (directory / "kto.json").write_text(json.dumps(kto_rows(n), ensure_ascii=False))
    (directory / "wiki.txt").write_text("\n".join(pt_texts(n)) + "\n")
    (directory / "c4.jsonl").write_text(
        "\n".join(json.dumps({"text": t}, ensure_ascii=False) for t in pt_texts(n, seed=9)) + "\n"
    )
    role = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}
    info = {
        "tools": {"file_name": "tools.json", "formatting": "sharegpt", "columns": {"messages": "conversations", "tools": "tools"}},
        "tools_single": {"file_name": "tools_single.json", "formatting": "sharegpt", "columns": {"messages": "conversations", "tools": "tools"}},
        "tools_openai": {"file_name": "tools_openai.jsonl", "formatting": "openai", "columns": {"messages": "messages", "tools": "tools"},
                         "tags": {**role, "system_tag": "system", "observation_tag": "tool", "function_tag": "function_call"}},
        "dpo": {"file_name": "dpo.json", "ranking": True, "formatting": "sharegpt", "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}},
        "dpo_alpaca": {"file_name": "dpo_alpaca.json", "ranking": True, "columns": {"prompt": "instruction", "chosen": "chosen", "rejected": "rejected"}},
        "kto": {"file_name": "kto.json", "formatting": "sharegpt", "columns": {"messages": "messages", "kto_tag": "label"}, "tags": role},
        "wiki": {"file_name": "wiki.txt", "columns": {"prompt": "text"}},
        "c4": {"file_name": "c4.jsonl", "columns": {"prompt": "text"}},
    }  # fmt: skip
    (directory / "dataset_info.json").write_text(json.dumps(info, indent=1))
    return directory


# ---------------------------------------------------------------- a real SentencePiece model, in two layouts


def sentencepiece_model() -> Path:
    """Mistral 7B v0.1's SentencePiece model, as the mistral-common package ships it."""
    import importlib.resources

    return Path(str(importlib.resources.files("mistral_common") / "data" / "tokenizer.model.v1"))


def build_sentencepiece_tokenizer(directory: Path, *, legacy: bool | None = None) -> Path:
    """A Llama-2-style tokenizer directory in the layout transformers 4 saved (tokenizer.json with a
    Prepend + Replace normalizer, tokenizer_class LlamaTokenizer), from a real SentencePiece model."""
    import shutil

    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers
    from transformers.convert_slow_tokenizer import SentencePieceExtractor

    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(sentencepiece_model(), directory / "tokenizer.model")
    extracted = SentencePieceExtractor(str(directory / "tokenizer.model")).extract(models.BPE)
    tok = Tokenizer(models.BPE(vocab=extracted["vocab"], merges=extracted["merges"], unk_token="<unk>",
                               fuse_unk=True, byte_fallback=True))  # fmt: skip
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tok.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ("<unk>", "<s>", "</s>")])
    tok.save(str(directory / "tokenizer.json"))
    config: dict[str, Any] = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
                              "unk_token": "<unk>", "add_bos_token": True, "model_max_length": 32768}  # fmt: skip
    if legacy is not None:
        config["legacy"] = legacy
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return directory


# ---------------------------------------------------------------- multimodal: a tiny Qwen2-VL processor and media

VISION_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
IMAGE_SIZES = [(640, 480), (20, 300), (1000, 40), (3000, 2000), (50, 50), (333, 777)]


def build_qwen2_vl_model(directory: Path, qwen3: bool = False) -> Path:
    """The test tokenizer with Qwen2-VL's vision tokens, and image/video processor configs (small pixel limits);
    Qwen3-VL's processor (patches of 16) with `qwen3`."""
    from tokenizers import AddedToken, Tokenizer

    build_bpe_tokenizer(directory)
    tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in VISION_TOKENS])
    tok.save(str(directory / "tokenizer.json"))
    common = {"processor_class": "Qwen3VLProcessor" if qwen3 else "Qwen2VLProcessor", "patch_size": 16 if qwen3 else 14,
              "merge_size": 2, "temporal_patch_size": 2, "min_pixels": 3136, "image_mean": [0.5, 0.5, 0.5],
              "image_std": [0.5, 0.5, 0.5]}  # fmt: skip
    (directory / "preprocessor_config.json").write_text(
        json.dumps({**common, "image_processor_type": "Qwen2VLImageProcessor", "max_pixels": 200704})
    )
    (directory / "video_preprocessor_config.json").write_text(
        json.dumps(
            {
                **common,
                "video_processor_type": f"Qwen{3 if qwen3 else 2}VLVideoProcessor",
                "max_pixels": 100352,
            }
        )
    )
    return directory


def write_media_dir(directory: Path, n: int = 12) -> Path:
    """sharegpt rows with images (files of several sizes), videos (a file and frame lists) and text-only rows."""
    import av
    import numpy as np
    from PIL import Image

    media = directory / "media"
    media.mkdir(parents=True, exist_ok=True)
    for i, (w, h) in enumerate(IMAGE_SIZES):
        Image.new("RGB", (w, h), (i * 40, 100, 200)).save(media / f"{i}.png")
    container = av.open(str(media / "clip.mp4"), "w")
    stream = container.add_stream("mpeg4", rate=10)
    stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
    for i in range(25):
        frame = av.VideoFrame.from_ndarray(np.full((64, 96, 3), i * 8, dtype=np.uint8), format="rgb24")
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    rnd = random.Random(13)
    rows, video_rows, frame_rows = [], [], []
    for i in range(n):
        k = i % 3
        images = [f"media/{rnd.randrange(len(IMAGE_SIZES))}.png" for _ in range(k)]
        user = "".join("<image>" for _ in images) + _text(rnd)
        msgs = [{"role": "user", "content": user}, {"role": "assistant", "content": _text(rnd)}]
        rows.append({"messages": msgs, "images": images})
        frames = [f"media/{i % 2}.png"] * (3 + i % 2)  # frame lists (of one size): odd ones get a frame added
        (video_rows if i % 2 else frame_rows).append({"messages": [{"role": "user", "content": "<video>" + _text(rnd)},
                                        {"role": "assistant", "content": _text(rnd)}],
             "videos": ["media/clip.mp4"] if i % 2 else [frames]})  # fmt: skip
    (directory / "images.json").write_text(json.dumps(rows))
    (directory / "videos.json").write_text(json.dumps(video_rows))
    (directory / "frames.json").write_text(json.dumps(frame_rows))
    role = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}
    info = {
        "images": {"file_name": "images.json", "formatting": "sharegpt", "columns": {"messages": "messages", "images": "images"}, "tags": role},
        "videos": {"file_name": "videos.json", "formatting": "sharegpt", "columns": {"messages": "messages", "videos": "videos"}, "tags": role},
        "frames": {"file_name": "frames.json", "formatting": "sharegpt", "columns": {"messages": "messages", "videos": "videos"}, "tags": role},
    }  # fmt: skip
    (directory / "dataset_info.json").write_text(json.dumps(info, indent=1))
    return directory


def build_image_model(directory: Path, kind: str) -> Path:
    """The test tokenizer with an `<image>` token and a tiny llava (CLIP, center crop) or paligemma (SigLIP)
    processor config."""
    from tokenizers import AddedToken, Tokenizer

    build_bpe_tokenizer(directory)
    tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
    tok.add_special_tokens([AddedToken("<image>", special=True, normalized=False)])
    tok.save(str(directory / "tokenizer.json"))
    norm = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    if kind == "llava":
        image = {"image_processor_type": "CLIPImageProcessor", "processor_class": "LlavaProcessor",
                 "crop_size": {"height": 56, "width": 42}, "size": {"shortest_edge": 56}, "do_center_crop": True}  # fmt: skip
        processor = {"processor_class": "LlavaProcessor", "patch_size": 14, "image_token": "<image>",
                     "vision_feature_select_strategy": "default", "num_additional_image_tokens": 1}  # fmt: skip
        (directory / "processor_config.json").write_text(json.dumps(processor))
    else:
        image = {"image_processor_type": "SiglipImageProcessor", "processor_class": "PaliGemmaProcessor",
                 "image_seq_length": 9, "size": {"height": 42, "width": 42}}  # fmt: skip
    (directory / "preprocessor_config.json").write_text(json.dumps({**image, **norm}))
    return directory
