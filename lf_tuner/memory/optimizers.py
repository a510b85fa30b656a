"""Optimizer memory: the states an optimizer keeps and what its step allocates, per optimizer LLaMA-Factory runs.

Two families. `optim:` names one of transformers' optimizers (the table below). The `use_galore`, `use_apollo`,
`use_badam`, `use_adam_mini` and `use_muon` keys replace it with the optimizer LLaMA-Factory builds in
train/trainer_utils.py `create_custom_optimizer` (lines 527-548 in 0.9.5); each function below names the code it
counts. Pure functions of a TrainSetup; sizes in bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lf_tuner.memory.setup import TrainSetup

# optimizer name -> (state bytes per trainable parameter as a multiple of its dtype size, fixed bytes per
# parameter or None, step temporaries as a multiple of the parameter dtype size)
_ADAM = (2.0, None, 0.0)
OPTIMIZERS: dict[str, tuple[float, float | None, float]] = {
    "adamw_torch_fused": _ADAM,
    "adamw_torch": (2.0, None, 1.0),  # foreach implementation: one temporary per parameter at the step
    "adamw_torch_xla": _ADAM,
    "adamw_apex_fused": _ADAM,
    "adamw_anyprecision": _ADAM,
    "adamw_torch_4bit": (0.0, 1.0, 0.0),
    "adamw_torch_8bit": (0.0, 2.0, 0.0),
    "adamw_8bit": (0.0, 2.0, 0.0),
    "adamw_bnb_8bit": (0.0, 2.0, 0.0),
    "paged_adamw_8bit": (0.0, 2.0, 0.0),
    "paged_adamw_32bit": (0.0, 8.0, 0.0),
    "paged_adamw": (0.0, 8.0, 0.0),
    "adamw_hf": (2.0, None, 1.0),
    "adafactor": (0.0, 0.0, 0.0),  # factored second moments: counted from the matrix shapes below
    "sgd": (0.0, 0.0, 0.0),
    "adagrad": (1.0, None, 0.0),
    "rmsprop": (1.0, None, 0.0),
    "lion_32bit": (0.0, 4.0, 0.0),
    "paged_lion_32bit": (0.0, 4.0, 0.0),
    "lion_8bit": (0.0, 1.0, 0.0),
    "paged_lion_8bit": (0.0, 1.0, 0.0),
}
DEFAULT_OPTIM = "adamw_torch_fused"  # transformers 5 default with torch >= 2.8 (training_args.py:811-816)
CUSTOM_OPTIMIZERS = ("galore", "apollo", "badam", "adam_mini", "muon")


@dataclass(frozen=True)
class OptimizerCost:
    """What an optimizer holds on the GPU (bytes)."""

    states: float  # kept from the first step on
    step_temp: float  # allocated and freed by one step
    in_backward: bool = False  # layer-wise GaLore/APOLLO step inside backward (post-accumulate-grad hooks)
    master: float = 0.0  # a high-precision copy it keeps beside the model (BAdam's fp32 block)


@dataclass(frozen=True)
class Matrix:
    rows: int
    cols: int
    count: int  # how many of this shape train

    @property
    def size(self) -> int:
        return self.rows * self.cols


def trainable_matrices(setup: TrainSetup) -> tuple[list[Matrix], int, int]:
    """Full or freeze tuning: (the 2-D decoder weights that train, embedding/lm_head parameters that train,
    1-D parameters that train). MoE experts are 3-D tensors in transformers 5, listed as matrices per expert."""
    arch = setup.arch
    layers = arch.num_layers if setup.method == "full" else setup.trainable_layers
    mats = [
        Matrix(lin.out_features, lin.in_features, layers * (arch.num_experts if lin.per_expert else 1))
        for lin in arch.linears()
    ]
    embeds = arch.embedding_params + arch.lm_head_params if setup.method == "full" else 0
    vectors = arch.norm_params_per_layer() * layers + (arch.hidden_size if setup.method == "full" else 0)
    return mats, embeds, vectors


def _standard(setup: TrainSetup, n_train: int, dtype_bytes: int) -> OptimizerCost:
    state_mult, state_fixed, step_mult = OPTIMIZERS[setup.optim]
    step_temp = n_train * step_mult * dtype_bytes
    if setup.optim == "adafactor":
        return OptimizerCost(adafactor_state(setup), step_temp)
    if setup.optim.startswith("paged_"):
        # bitsandbytes keeps paged states in CUDA unified memory, which pages out to the CPU under pressure:
        # they cannot cause an out-of-memory error and nvidia-smi does not count them for the process.
        return OptimizerCost(0.0, step_temp)
    if state_fixed is None:
        return OptimizerCost(n_train * state_mult * dtype_bytes, step_temp)
    states = n_train * state_fixed
    if state_fixed < 4 and setup.method == "full":
        # transformers' Trainer keeps nn.Embedding states in 32 bit under bitsandbytes' 8-bit optimizers
        states += setup.arch.embedding_params * (8.0 - state_fixed)
    return OptimizerCost(states, step_temp)


def adafactor_state(setup: TrainSetup) -> float:
    """Adafactor keeps a row and a column vector per matrix (4 B each) and a full state per vector."""
    arch = setup.arch
    if setup.is_adapter:
        targets = lora_targets(setup)
        per_layer = sum(
            4 * 2 * (setup.lora_rank + lin.in_features + lin.out_features)
            for lin in arch.linears()
            if lin.name in targets
        )
        return per_layer * arch.num_layers
    per_layer = (
        sum(4 * (lin.in_features + lin.out_features) for lin in arch.linears())
        + 4 * arch.norm_params_per_layer()
    )
    layers = arch.num_layers if setup.method == "full" else setup.trainable_layers
    embed = 4 * (arch.vocab_size + arch.hidden_size) * (1 if arch.tie_embeddings else 2)
    return per_layer * layers + (embed if setup.method == "full" else 0)


def lora_targets(setup: TrainSetup) -> set[str]:
    names = {lin.name for lin in setup.arch.linears() if not lin.per_expert}
    if "all" in setup.lora_target:
        return names
    return names & set(setup.lora_target)


def _low_rank(setup: TrainSetup, n_train: int, dtype_bytes: int, *, svd: bool) -> OptimizerCost:
    """GaLore (galore_torch/adamw.py + galore_projector.py) and APOLLO (apollo_torch).

    Every trained decoder nn.Linear weight W (m x n) is optimised in a rank-r projection: Adam's two moments
    are r x max(m, n) (`project`: grad @ P.T when m >= n, else P.T @ grad); GaLore keeps the projector
    P (r x min(m, n)) from an SVD, APOLLO's default random projection (`apollo_proj: random`) regenerates it from
    a seed. The other trained parameters (embeddings, lm_head, norms) get plain AdamW states. The step projects the
    update back to m x n and scales it (two full-size temporaries of the largest matrix); GaLore's projector
    refresh (every `galore_update_interval` steps, and at the first) runs an fp32 SVD of the largest gradient.
    `galore_layerwise` / `apollo_layerwise` step each parameter in a post-accumulate-grad hook
    (trainer_utils.py:264-271, 351-358): gradients never all exist at once.
    """
    mats, embeds, vectors = trainable_matrices(setup)
    r = setup.optimizer_rank
    moments = 2.0 if not setup.optim.endswith("8bit") else 2.0 / dtype_bytes  # GaLoreAdamW8bit: 1 B a moment
    states = 0.0
    for mat in mats:
        k = min(r, mat.rows, mat.cols)
        per = moments * k * max(mat.rows, mat.cols) * dtype_bytes
        if svd:
            per += k * min(mat.rows, mat.cols) * dtype_bytes
        states += per * mat.count
    states += 2.0 * (embeds + vectors) * dtype_bytes
    largest = max(mats, key=lambda m: m.size)
    step_temp = 2.0 * largest.size * dtype_bytes
    if svd:
        k = min(largest.rows, largest.cols)
        step_temp += 4.0 * (largest.size + k * (largest.rows + largest.cols))
    if embeds:
        step_temp = max(step_temp, 2.0 * setup.arch.embedding_params * dtype_bytes)
    return OptimizerCost(states, step_temp, in_backward=setup.layerwise)


def _badam(setup: TrainSetup, n_train: int, dtype_bytes: int) -> OptimizerCost:
    """BAdam (badam/block_optim.py, BlockOptimizer): one decoder layer trains at a time (`badam_mode: layer`); its
    parameters get an fp32 copy (`_grad_to_hp`/`_update_param`), fp32 gradients and AdamW states on that copy, while
    the model stays in bf16 (LLaMA-Factory skips the fp32 upcast under BAdam, model/adapter.py:319). `ratio` mode
    (BlockOptimizerRatio) trains every parameter with a sparse update mask: counted as full bf16 gradients plus
    AdamW states on the updated fraction."""
    if setup.badam_mode == "ratio":
        return OptimizerCost(8.0 * setup.badam_ratio * n_train, 2.0 * setup.arch.embedding_params)
    block = setup.arch.layer_params
    return OptimizerCost(states=8.0 * block, step_temp=4.0 * block, master=4.0 * block)


def _adam_mini(setup: TrainSetup, n_train: int, dtype_bytes: int) -> OptimizerCost:
    """Adam-mini (adam_mini/adam_mini.py `step`): the first moment `m` in fp32 for every parameter; the second
    moment in fp32 only for the embedding and output layers, one value per head (q/k) or per block elsewhere.
    The step allocates `grad * grad` and `m * stepsize` (two fp32 temporaries of the largest block)."""
    arch = setup.arch
    embeds = arch.embedding_params + arch.lm_head_params if setup.method == "full" else 0
    largest = max(lin.params for lin in arch.linears())
    if embeds:
        largest = max(largest, arch.embedding_params)
    return OptimizerCost(states=4.0 * n_train + 4.0 * embeds, step_temp=8.0 * largest)


def _muon(setup: TrainSetup, n_train: int, dtype_bytes: int) -> OptimizerCost:
    """Muon (llamafactory/third_party/muon/muon.py): 2-D weights other than embeddings and lm_head keep one momentum
    buffer in the gradient's dtype; the rest get AdamW's two moments (trainer_utils.py:498-524). The step
    orthogonalises each update by Newton-Schulz in bf16 (`zeropower_via_newtonschulz5`: the gradient plus Nesterov
    momentum, then X, X X^T, and B X per iteration), one matrix at a time."""
    mats, embeds, vectors = trainable_matrices(setup)
    muon = sum(m.size * m.count for m in mats)
    adamw = n_train - muon
    largest = max(mats, key=lambda m: m.size)
    k = min(largest.rows, largest.cols)
    muon_temp = (dtype_bytes + 3 * 2.0) * largest.size + 3 * 2.0 * k * k
    adamw_temp = 2.0 * dtype_bytes * (setup.arch.embedding_params if embeds else largest.size)
    return OptimizerCost(muon * dtype_bytes + 2.0 * adamw * dtype_bytes, max(muon_temp, adamw_temp))


def optimizer_cost(setup: TrainSetup, n_train: int, dtype_bytes: int) -> OptimizerCost:
    """States and step temporaries of the optimizer a run uses, for n_train parameters of dtype_bytes each."""
    custom = setup.custom_optimizer
    if custom == "galore":
        return _low_rank(setup, n_train, dtype_bytes, svd=True)
    if custom == "apollo":
        return _low_rank(setup, n_train, dtype_bytes, svd=False)
    if custom == "badam":
        return _badam(setup, n_train, dtype_bytes)
    if custom == "adam_mini":
        return _adam_mini(setup, n_train, dtype_bytes)
    if custom == "muon":
        return _muon(setup, n_train, dtype_bytes)
    return _standard(setup, n_train, dtype_bytes)
