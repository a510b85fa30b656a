"""What each LLaMA-Factory training stage puts through the model, and what its loss keeps alive.

The largest sequence-dependent term of a step is the logits and the loss built on them: `LOGIT_BYTES` gives, per
stage, the bytes alive at the loss per (micro-batch element x sequence position x vocabulary entry), with and
without gradients (training / evaluation). SFT's 12 B is measured on the H100 rows (calibration/); every other
figure is derived from the trainer code named below and checked by `scripts/trace_loss_bytes.py`, which runs
LLaMA-Factory's own trainers (training_step / prediction_step) on a tiny model on the CPU, records every tensor
storage alive after each ATen op, and reads the peak's growth with the vocabulary. The same script gives 12.0 B for
SFT, the figure the H100 rows measure. No GPU measured the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lf_tuner.memory.setup import TrainSetup

# Bytes per logit element with transformers' cross-entropy (pt, sft): at the backward of the loss, the saved
# log-softmax output (fp32, 4), its gradient (4) and nll_loss's gradient (4) (transformers loss/loss_utils.py
# ForCausalLMLoss upcasts the logits to fp32). Measured on the H100 rows: 12.
CE_BYTES_PER_LOGIT = 12


@dataclass(frozen=True)
class LogitBytes:
    """Bytes alive at a stage's loss per (micro-batch element x position x vocab entry)."""

    train: float
    eval: float


# train/dpo/trainer.py: `concatenated_forward` runs chosen and rejected as one batch of 2b sequences and keeps
# `all_logits.to(torch.float32)` (4 B) for the metrics; `get_batch_logps` (train/trainer_utils.py:592-636) takes
# `logits[:, :-1].log_softmax(-1)`, which ATen makes contiguous first (a 4 B copy; aten/src/ATen/native/cuda/
# SoftMax.cu host_softmax) and whose output autograd saves (4 B). `compute_reference_log_probs` then repeats the
# forward under no_grad (the adapter disabled, or the reference copy) while the policy's 8 B are alive:
# 8 + 4 + 4 + 4 = 20 B per element of the 2b sequences, 40 per pair. Without a reference (orpo, simpo) the peak is
# the policy's log-softmax: 12 B per sequence element, 24 per pair. Without gradients the policy keeps 4 B, not 8.
DPO = LogitBytes(train=40.0, eval=32.0)
DPO_REFERENCE_FREE = LogitBytes(train=24.0, eval=24.0)
# train/kto/trainer.py: the target batch (b sequences) keeps its fp32 logits, the saved log-softmax output and the
# indexed chosen/rejected copies (`target_logits[batch["kto_tags"]]`, 4 B together) while the KL batch
# (`kl_input_ids`, b more sequences) runs under no_grad: 4 + 4 + 4 + (4 + 4 + 4) = 24 B per target element.
KTO = LogitBytes(train=24.0, eval=20.0)
# train/rm/trainer.py PairwiseTrainer.compute_loss: the value-head model (trl AutoModelForCausalLMWithValueHead)
# still computes the full LM logits (bf16, 2) and the LM loss of the collator's labels (the log-softmax output
# saved in its graph, 4), then `lm_logits.float()` (4): 10 B per element of the 2b sequences, 20 per pair. The
# pairwise loss reads only the value head, so none of it reaches backward.
RM = LogitBytes(train=20.0, eval=20.0)
# Evaluation of pt/sft (HF Trainer.prediction_step under no_grad): bf16 logits kept in the outputs (2), the fp32
# upcast (4) and the log-softmax output (4). Liger's fused loss only runs in training (liger_kernel/transformers/
# model/*.py lce_forward: `skip_logits = self.training and labels is not None`), so these logits exist with Liger.
SFT = LogitBytes(train=float(CE_BYTES_PER_LOGIT), eval=10.0)
# The SFT loss variants (train/sft/workflow.py sets compute_loss_func; train/trainer_utils.py): DFT weighs the
# cross-entropy by the token's probability (its own fp32 log-softmax, 12 B like the plain loss); EAFT adds an
# entropy weight (13 B); ASFT adds a KL term to a reference model's logits (train/sft/trainer.py compute_loss runs
# the reference under no_grad): fp32 and shifted contiguous copies of both logits, softmax, log-softmax and
# kl_div's elementwise output, 44 B. Evaluation runs the plain loss (10 B).
SFT_VARIANTS = {
    "ce": SFT,
    "dft": LogitBytes(train=12.0, eval=10.0),
    "eaft": LogitBytes(train=13.0, eval=10.0),
    "asft": LogitBytes(train=44.0, eval=10.0),
}


@dataclass(frozen=True)
class StageCost:
    """What one micro-batch of a stage costs beyond a plain SFT step."""

    sequences: int  # sequences per micro-batch element that run with gradients (chosen + rejected: 2)
    logits: LogitBytes
    fused_loss: bool  # Liger's fused linear cross-entropy applies (pt, sft only: model/model_utils/liger_kernel.py:94)
    reference_copy: bool  # the reference is a second model in memory (not the adapter-disabled policy)
    value_head: int  # trainable parameters the stage adds (RM: trl's ValueHead, Linear(hidden, 1))


def stage_cost(setup: TrainSetup) -> StageCost:
    """The cost of setup's stage (LLaMA-Factory 0.9.5 train/{pt,sft,dpo,kto,rm}/workflow.py)."""
    stage = setup.stage
    if stage in ("dpo", "kto"):
        # train/trainer_utils.py create_ref_model (lines 116-148): a given `ref_model` is always loaded; otherwise
        # LoRA uses the policy with its adapter disabled and every other method (freeze, full, OFT) loads a copy.
        copy = setup.uses_reference and (setup.ref_model or not setup.is_lora)
        if stage == "kto":
            return StageCost(1, KTO, False, copy, 0)
        logits = DPO if setup.uses_reference else DPO_REFERENCE_FREE
        return StageCost(2, logits, False, copy, 0)
    if stage == "rm":
        return StageCost(2, RM, False, False, setup.arch.hidden_size + 1)
    # ASFT loads a reference copy for every method but LoRA (train/sft/workflow.py:56-58, create_ref_model)
    copy = setup.sft_loss == "asft" and not setup.is_lora
    return StageCost(1, SFT_VARIANTS[setup.sft_loss], True, copy, 0)


def reference_weight_bytes(setup: TrainSetup) -> float:
    """A reference model loaded beside the policy: bf16, or quantized by `ref_model_quantization_bit` when the
    reference is a separate `ref_model` (a copy of the policy is loaded with the policy's own ModelArguments).
    The reference is assumed to have the policy's architecture."""
    from lf_tuner.memory.params import base_weight_bytes

    if not stage_cost(setup).reference_copy:
        return 0.0
    bits = (
        setup.ref_quantization_bit if setup.ref_model and setup.stage in ("dpo", "kto") else setup.quant_bits
    )
    return base_weight_bytes(setup.arch, bits, setup.double_quantization)
