"""The VRAM model: a run's peak GPU memory by component, and what to change when it does not fit.

`setup_from_config` reads a LLaMA-Factory config into a `TrainSetup`; `estimate` gives the peak per GPU;
`report_fit` checks it against GPU budgets and finds the changes that fit. See docs/memory-model.md.
"""

from lf_tuner.memory.fit import (
    Budget,
    Change,
    FitReport,
    GpuFit,
    fit_changes,
    lora_vram_gib,
    max_cutoff,
    report_fit,
)
from lf_tuner.memory.model import (
    ATTENTIONS,
    CE_BYTES_PER_LOGIT,
    CUDA_CONTEXT_BYTES,
    DEEPSPEED,
    GIB,
    METHODS,
    Estimate,
    TrainSetup,
    estimate,
    lora_params,
    setup_from_config,
)

__all__ = [
    "ATTENTIONS",
    "CE_BYTES_PER_LOGIT",
    "CUDA_CONTEXT_BYTES",
    "DEEPSPEED",
    "GIB",
    "METHODS",
    "Budget",
    "Change",
    "Estimate",
    "FitReport",
    "GpuFit",
    "TrainSetup",
    "estimate",
    "fit_changes",
    "lora_params",
    "lora_vram_gib",
    "max_cutoff",
    "report_fit",
    "setup_from_config",
]
