"""Bytes alive at each stage's loss, per logit element, traced through LLaMA-Factory's own trainers on the CPU.

Usage: python scripts/trace_loss_bytes.py [--cases sft,dpo,...] [--json]

For every case it builds a tiny random Qwen2 model twice (vocabulary 2048 and 4096) as a checkpoint, loads it with
LLaMA-Factory's `load_model` (LoRA on all linears, trainable parameters upcast to fp32, gradient checkpointing on,
the value head for rm), builds the stage's trainer (CustomSeq2SeqTrainer, CustomDPOTrainer, CustomKTOTrainer,
PairwiseTrainer) and runs one `training_step` (forward and backward, as HF Trainer runs it) or one `prediction_step`
under a TorchDispatchMode that records every tensor storage an ATen op creates and drops it when it is freed. The peak
of those bytes grows with the vocabulary only through the logits and the loss, so
    (peak at V=4096 - peak at V=2048) / (micro-batch x sequence x 2048)
is the bytes per logit element the memory model needs (lf_tuner/memory/stages.py). Allocations inside a kernel are
invisible to a dispatch mode; the one that matters here is log_softmax's copy of a non-contiguous input (ATen
host_softmax calls `input_.contiguous()`), added at that op. The CPU runs the same trainer code and the same ATen
ops as the GPU; the caching allocator and the CUDA kernels' workspaces are not traced.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HIDDEN, LAYERS, BATCH, SEQ = 64, 2, 2, 256
VOCABS = (2048, 4096)


@dataclass(frozen=True)
class Case:
    name: str
    stage: str
    mode: str  # train, eval
    args: dict[str, Any]


CASES = [
    Case("sft", "sft", "train", {}),
    Case("dpo", "dpo", "train", {}),
    Case("dpo-orpo", "dpo", "train", {"pref_loss": "orpo"}),
    Case("kto", "kto", "train", {}),
    Case("rm", "rm", "train", {}),
    Case("sft-dft", "sft", "train", {"use_dft_loss": True}),
    Case("sft-eaft", "sft", "train", {"use_eaft_loss": True}),
    Case("sft-asft", "sft", "train", {"use_asft_loss": True, "finetuning_type": "full"}),
    Case("sft-eval", "sft", "eval", {}),
    Case("sft-dft-eval", "sft", "eval", {"use_dft_loss": True}),
    Case("sft-eaft-eval", "sft", "eval", {"use_eaft_loss": True}),
    Case("dpo-eval", "dpo", "eval", {}),
    Case("dpo-orpo-eval", "dpo", "eval", {"pref_loss": "orpo"}),
    Case("kto-eval", "kto", "eval", {}),
    Case("rm-eval", "rm", "eval", {}),
]


def _tracker() -> Any:
    import torch
    from torch.multiprocessing.reductions import StorageWeakRef
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_map_only

    softmaxes = (torch.ops.aten._log_softmax.default, torch.ops.aten._softmax.default)

    class LiveBytes(TorchDispatchMode):
        """Peak bytes of the storages created inside the mode and still alive (known storages ignored)."""

        def __init__(self, known: set[int]) -> None:
            super().__init__()
            self.known = known
            self.live: dict[int, tuple[int, Any]] = {}
            self.current = 0
            self.peak = 0

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            inner = 0
            if func in softmaxes and not args[0].is_contiguous():
                inner = args[0].numel() * args[0].element_size()  # host_softmax: input_.contiguous()
            out = func(*args, **(kwargs or {}))
            for key in [k for k, (_, ref) in self.live.items() if ref.expired()]:
                self.current -= self.live.pop(key)[0]

            def note(t: Any) -> None:
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key and key not in self.live and key not in self.known:
                    self.live[key] = (storage.nbytes(), StorageWeakRef(storage))
                    self.current += storage.nbytes()

            tree_map_only(torch.Tensor, note, out)
            self.peak = max(self.peak, self.current + inner)
            return out

    return LiveBytes


def _checkpoint(root: Path, vocab: int) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoConfig, AutoModelForCausalLM

    directory = root / f"vocab{vocab}"
    directory.mkdir(parents=True, exist_ok=True)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"]
    words = specials + [f"w{i}" for i in range(vocab - len(specials))]
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "eos_token": "<|im_end|>",
                "pad_token": "<|endoftext|>",
                "unk_token": "<unk>",
            }
        )
    )
    config = AutoConfig.for_model(
        "qwen2",
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab,
        tie_word_embeddings=False,
        max_position_embeddings=4 * SEQ,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).to(torch.bfloat16).save_pretrained(directory)
    return directory


def _trainer(case: Case, checkpoint: Path, out: Path) -> Any:
    import torch
    from llamafactory.hparams import FinetuningArguments, ModelArguments, TrainingArguments
    from llamafactory.model import load_model, load_tokenizer

    model_args = ModelArguments(model_name_or_path=str(checkpoint))
    model_args.compute_dtype = torch.bfloat16  # what get_train_args sets for bf16: true
    finetuning_args = FinetuningArguments(stage=case.stage, **{"finetuning_type": "lora", **case.args})
    tokenizer = load_tokenizer(model_args)["tokenizer"]
    model = load_model(
        tokenizer, model_args, finetuning_args, is_trainable=True, add_valuehead=case.stage == "rm"
    )
    args = TrainingArguments(
        output_dir=str(out),
        use_cpu=True,
        bf16=True,
        per_device_train_batch_size=BATCH,
        remove_unused_columns=False,
        report_to="none",
    )
    common = {"model": model, "args": args, "finetuning_args": finetuning_args, "processor": None}
    if case.stage == "dpo":
        from llamafactory.train.dpo.trainer import CustomDPOTrainer
        from llamafactory.train.trainer_utils import create_ref_model

        ref = create_ref_model(model_args, finetuning_args) if finetuning_args.use_ref_model else None
        return CustomDPOTrainer(ref_model=ref, tokenizer=tokenizer, **common)
    if case.stage == "kto":
        from llamafactory.train.kto.trainer import CustomKTOTrainer
        from llamafactory.train.trainer_utils import create_ref_model

        return CustomKTOTrainer(
            ref_model=create_ref_model(model_args, finetuning_args), tokenizer=tokenizer, **common
        )
    if case.stage == "rm":
        from llamafactory.train.rm.trainer import PairwiseTrainer

        return PairwiseTrainer(tokenizer=tokenizer, **common)
    from llamafactory.train.sft.trainer import CustomSeq2SeqTrainer
    from llamafactory.train.trainer_utils import create_ref_model

    ref = create_ref_model(model_args, finetuning_args) if finetuning_args.use_asft_loss else None
    return CustomSeq2SeqTrainer(tokenizer=tokenizer, ref_model=ref, **common)


def _batch(case: Case, vocab: int) -> dict[str, Any]:
    """What the stage's collator gives: pairs as 2b rows (chosen, then rejected), KTO's KL rows; prompts masked."""
    import torch

    gen = torch.Generator().manual_seed(1)

    def rows(n: int) -> Any:
        return torch.randint(10, vocab, (n, SEQ), generator=gen)

    def labels(ids: Any) -> Any:
        out = ids.clone()
        out[:, : SEQ // 4] = -100
        return out

    if case.stage in ("dpo", "rm"):
        ids = rows(2 * BATCH)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels(ids)}
    ids = rows(BATCH)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels(ids)}
    if case.stage == "kto":
        kl = rows(BATCH)
        batch.update(kl_input_ids=kl, kl_attention_mask=torch.ones_like(kl), kl_labels=labels(kl))
        batch["kto_tags"] = torch.tensor([i % 2 == 0 for i in range(BATCH)])
    return batch


def _peak(case: Case, vocab: int, root: Path) -> int:
    trainer = _trainer(case, _checkpoint(root, vocab), root / f"out{vocab}")
    known = set()
    for module in (trainer.model, getattr(trainer, "ref_model", None)):
        if module is not None and hasattr(module, "parameters"):
            for t in [*module.parameters(), *module.buffers()]:
                known.add(t.untyped_storage().data_ptr())
    batch = _batch(case, vocab)
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop, read by training_step
    with _tracker()(known) as live:
        if case.mode == "train":
            trainer.model.train()
            trainer.training_step(trainer.model, batch)
        else:
            trainer.model.eval()
            trainer.prediction_step(trainer.model, batch, prediction_loss_only=False)
    return int(live.peak)


def trace(case: Case) -> float:
    """Bytes per (micro-batch element x position x vocab entry) at the peak of the case's step."""
    with tempfile.TemporaryDirectory(prefix="lf-tuner-trace-") as tmp:
        small, large = (_peak(case, v, Path(tmp)) for v in VOCABS)
    return (large - small) / (BATCH * SEQ * (VOCABS[1] - VOCABS[0]))


def modelled(case: Case) -> float:
    """The figure lf_tuner.memory uses for the same stage."""
    from lf_tuner.memory import TrainSetup, stage_cost
    from lf_tuner.models import resolve_model

    args = dict(case.args)
    method = args.pop("finetuning_type", "lora")
    sft_loss = next((key[4:-5] for key in list(args) if key.startswith("use_") and args.pop(key)), "ce")
    setup = TrainSetup(
        arch=resolve_model("Qwen2.5-0.5B"), stage=case.stage, method=method, sft_loss=sft_loss, **args
    )
    logits = stage_cost(setup).logits
    return logits.train if case.mode == "train" else logits.eval


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", help="comma list of: " + ", ".join(c.name for c in CASES))
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    ns = parser.parse_args()
    os.environ.setdefault("DISABLE_VERSION_CHECK", "1")
    os.environ.setdefault("LLAMAFACTORY_VERBOSITY", "ERROR")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    wanted = set(ns.cases.split(",")) if ns.cases else {c.name for c in CASES}
    unknown = wanted - {c.name for c in CASES}
    if unknown:
        parser.error(f"unknown case(s): {', '.join(sorted(unknown))}")
    results = {c.name: (trace(c), modelled(c)) for c in CASES if c.name in wanted}
    if ns.json:
        print(json.dumps({name: {"traced": t, "modelled": m} for name, (t, m) in results.items()}, indent=2))
        return
    print(f"{'case':16s} {'traced B/logit':>15s} {'model B/logit':>14s}")
    for name, (traced, model) in results.items():
        print(f"{name:16s} {traced:15.2f} {model:14.2f}")


if __name__ == "__main__":
    main()
