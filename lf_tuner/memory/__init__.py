"""The VRAM model: a run's peak GPU memory by component, and what to change when it does not fit.

`setup_from_config` reads a LLaMA-Factory config into a `TrainSetup`; `estimate` gives the peak per GPU (training,
and evaluation when the run evaluates); `report_fit` checks it against GPU budgets and finds the changes that fit.
`DeepSpeed` and `Fsdp` are the layouts. docs/memory-model.md derives every term.
"""

from lf_tuner.memory.calibration import OVER_LIMIT_PCT as CALIBRATION_OVER_LIMIT_PCT
from lf_tuner.memory.calibration import UNDER_LIMIT_PCT as CALIBRATION_UNDER_LIMIT_PCT
from lf_tuner.memory.calibration import CalibrationRow, calibration_files, read_calibration
from lf_tuner.memory.fit import (
    Budget,
    Change,
    EstimateReport,
    FitReport,
    GpuFit,
    fit_changes,
    lora_vram_gib,
    max_cutoff,
    no_cutoff_fits,
    report_estimate,
    report_fit,
)
from lf_tuner.memory.layout import (
    DEEPSPEED_CHOICES,
    DEEPSPEED_KINDS,
    RENDERABLE,
    DeepSpeed,
    Fsdp,
    fsdp_from_accelerate,
    load_deepspeed,
    parse_kind,
)
from lf_tuner.memory.model import (
    CUDA_CONTEXT_BYTES,
    GIB,
    LIGER_MODEL_TYPES,
    Estimate,
    Peak,
    estimate,
    layer_activation_bytes,
)
from lf_tuner.memory.optimizers import CUSTOM_OPTIMIZERS, OPTIMIZERS
from lf_tuner.memory.params import lora_params, oft_params, trainable_params
from lf_tuner.memory.setup import (
    ATTENTIONS,
    METHODS,
    PPO_REFUSED,
    STAGES,
    EvalSetup,
    TrainSetup,
    eval_from_config,
    model_notes,
    setup_from_config,
    unsupported,
)
from lf_tuner.memory.stages import CE_BYTES_PER_LOGIT, LogitBytes, stage_cost
from lf_tuner.memory.vision import VisionSetup, patches_per_sample

__all__ = [
    "ATTENTIONS",
    "CALIBRATION_OVER_LIMIT_PCT",
    "CALIBRATION_UNDER_LIMIT_PCT",
    "CE_BYTES_PER_LOGIT",
    "CUDA_CONTEXT_BYTES",
    "CUSTOM_OPTIMIZERS",
    "DEEPSPEED_CHOICES",
    "DEEPSPEED_KINDS",
    "GIB",
    "LIGER_MODEL_TYPES",
    "METHODS",
    "OPTIMIZERS",
    "PPO_REFUSED",
    "RENDERABLE",
    "STAGES",
    "Budget",
    "CalibrationRow",
    "Change",
    "DeepSpeed",
    "Estimate",
    "EstimateReport",
    "EvalSetup",
    "FitReport",
    "Fsdp",
    "GpuFit",
    "LogitBytes",
    "Peak",
    "TrainSetup",
    "VisionSetup",
    "calibration_files",
    "estimate",
    "eval_from_config",
    "fit_changes",
    "fsdp_from_accelerate",
    "layer_activation_bytes",
    "load_deepspeed",
    "lora_params",
    "lora_vram_gib",
    "max_cutoff",
    "model_notes",
    "no_cutoff_fits",
    "oft_params",
    "patches_per_sample",
    "parse_kind",
    "read_calibration",
    "report_estimate",
    "report_fit",
    "setup_from_config",
    "stage_cost",
    "trainable_params",
    "unsupported",
]
