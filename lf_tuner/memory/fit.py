"""What to change when a run does not fit, and the fit verdict per GPU (estimate, render --fit, run's preflight)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from lf_tuner.errors import LfTunerError
from lf_tuner.memory.layout import DeepSpeed
from lf_tuner.memory.model import GIB, LIGER_MODEL_TYPES, Estimate, estimate
from lf_tuner.memory.setup import TrainSetup, model_notes, setup_from_config


@dataclass(frozen=True)
class Change:
    """A change to a run that makes it fit, as LLaMA-Factory config keys."""

    description: str
    overrides: dict[str, Any]
    setup: TrainSetup
    total_bytes: int

    @property
    def total_gib(self) -> float:
        return self.total_bytes / GIB


@dataclass(frozen=True)
class Budget:
    """What a run is checked against: a GPU (or `--gpu-memory`) and the bytes the run may use on it."""

    name: str
    budget_bytes: int


@dataclass(frozen=True)
class GpuFit:
    gpu: str
    fits: bool
    headroom_gib: float


@dataclass(frozen=True)
class FitReport:
    """The verdict per GPU and, when the tightest does not fit, the changes that make it fit."""

    gpus: list[GpuFit]
    changes: list[Change]
    lines: list[str]  # what a person reads, one line each

    @property
    def fits(self) -> bool:
        return all(g.fits for g in self.gpus)

    def as_dict(self) -> dict[str, Any]:
        return {
            "fits": self.fits,
            "gpus": [{"gpu": g.gpu, "fits": g.fits, "headroom_gib": g.headroom_gib} for g in self.gpus],
            "changes": [
                {"change": c.description, "overrides": c.overrides, "total_gib": round(c.total_gib, 2)}
                for c in self.changes
            ],
            "lines": self.lines,
        }


def report_fit(est: Estimate, budgets: list[Budget]) -> FitReport:
    """Per GPU: fits or not with headroom; for the tightest, the changes that make it fit."""
    total = est.total_bytes
    lines: list[str] = []
    checks: list[GpuFit] = []
    which = (
        " (the evaluation peak)" if est.eval is not None and est.eval.total_bytes > est.train_bytes else ""
    )
    for gpu in budgets:
        headroom = gpu.budget_bytes - total
        fits = headroom >= 0
        checks.append(GpuFit(gpu.name, fits, round(headroom / GIB, 2)))
        verdict = (
            f"fits, headroom {headroom / GIB:.2f} GiB"
            if fits
            else f"does NOT fit: short by {-headroom / GIB:.2f} GiB{which}"
        )
        lines.append(f"{gpu.name}: {verdict}")
    tightest = min(budgets, key=lambda g: g.budget_bytes)
    changes: list[Change] = []
    if total > tightest.budget_bytes:
        changes = fit_changes(est.setup, tightest.budget_bytes)
        if changes:
            lines.append("changes that fit:")
        else:
            lines.append(
                "no change lf-tuner knows makes it fit: use more GPUs with ZeRO-3, or a smaller model"
            )
        for change in changes:
            keys = ", ".join(f"{k}: {v}" for k, v in change.overrides.items())
            lines.append(f"  - {change.description} -> {change.total_gib:.2f} GiB  ({keys})")
    return FitReport(checks, changes, lines)


@dataclass(frozen=True)
class EstimateReport:
    """`estimate`'s answer: the estimate, its verdict against the budgets (None without any), and, when asked,
    the largest cutoff_len that fits the tightest budget (None when none does: `max_cutoff_problem` says why)."""

    estimate: Estimate
    fit: FitReport | None
    max_cutoff_asked: bool = False
    max_cutoff: int | None = None
    max_cutoff_problem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """`estimate --json`: the estimate's figures with what it assumed about the model, then the verdict."""
        out = self.estimate.as_dict()
        out["notes"] = [*model_notes(self.estimate.setup), *out["notes"]]
        if self.max_cutoff_asked:
            out["max_cutoff"] = self.max_cutoff
            if self.max_cutoff_problem is not None:
                out["max_cutoff_problem"] = self.max_cutoff_problem
        if self.fit is not None:
            out.update(self.fit.as_dict())
        return out


def report_estimate(est: Estimate, budgets: list[Budget], *, want_max_cutoff: bool = False) -> EstimateReport:
    """The estimate checked against `budgets` (none: no verdict), and the largest cutoff_len that fits the
    tightest of them when `want_max_cutoff` (which needs a budget)."""
    fit = report_fit(est, budgets) if budgets else None
    if not want_max_cutoff:
        return EstimateReport(est, fit)
    tightest = min(budgets, key=lambda g: g.budget_bytes)
    cut = max_cutoff(est.setup, tightest.budget_bytes) or None
    problem = None if cut else no_cutoff_fits(est.setup, tightest)
    return EstimateReport(est, fit, True, cut, problem)


# ---------------------------------------------------------------------------------------------------------
# What to change when it does not fit


def max_cutoff(setup: TrainSetup, gpu_bytes: int, multiple: int = 128) -> int:
    """The largest cutoff_len (a multiple of `multiple`, at most the model's context) that fits; 0 if none."""
    limit = setup.arch.max_positions or 131072
    lo, hi = 0, limit // multiple
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if estimate(replace(setup, cutoff_len=mid * multiple)).total_bytes <= gpu_bytes:
            lo = mid
        else:
            hi = mid - 1
    return lo * multiple


def no_cutoff_fits(setup: TrainSetup, gpu: Budget, multiple: int = 128) -> str:
    """Why no cutoff_len fits `gpu`, and what would make the smallest one fit."""
    small = replace(setup, cutoff_len=multiple)
    need = estimate(small).total_gib
    changes = fit_changes(small, gpu.budget_bytes)
    fix = (
        f"with `{changes[0].description}` it would need {changes[0].total_gib:.2f} GiB "
        f"({', '.join(f'{k}: {v}' for k, v in changes[0].overrides.items())})"
        if changes
        else "use a smaller model, or more GPUs with --deepspeed z3"
    )
    return f"no cutoff_len fits {gpu.name}: even cutoff_len {multiple} needs {need:.2f} GiB; {fix}"


class _Candidate(NamedTuple):
    """One change to try: in words, as config keys, and the setup it makes."""

    description: str
    overrides: dict[str, Any]
    setup: TrainSetup


def _candidates(setup: TrainSetup, gpu_bytes: int) -> list[_Candidate]:
    out: list[_Candidate] = []
    if not setup.liger and setup.arch.model_type in LIGER_MODEL_TYPES:
        out.append(
            _Candidate(
                "enable Liger Kernel (fused linear cross-entropy)",
                {"enable_liger_kernel": True},
                replace(setup, liger=True),
            )
        )
    if setup.batch_size > 1:
        b = setup.batch_size // 2
        ga = setup.grad_accum * setup.batch_size // b
        out.append(
            _Candidate(
                f"micro-batch {b} with gradient accumulation {ga} (same effective batch)",
                {"per_device_train_batch_size": b, "gradient_accumulation_steps": ga},
                replace(setup, batch_size=b, grad_accum=ga),
            )
        )
    if not setup.gradient_checkpointing:
        out.append(
            _Candidate(
                "turn gradient checkpointing back on",
                {"disable_gradient_checkpointing": False},
                replace(setup, gradient_checkpointing=True),
            )
        )
    if setup.method == "lora" and setup.quant_bits is None:
        out.append(
            _Candidate(
                "QLoRA: load the base model in 4 bit",
                {"quantization_bit": 4},
                replace(setup, quantization_bit=4),
            )
        )
    if setup.method == "full" and not setup.pure_bf16 and setup.zero_stage != 3:
        out.append(
            _Candidate(
                "pure_bf16 (bf16 weights, gradients and optimizer states)",
                {"pure_bf16": True},
                replace(setup, pure_bf16=True),
            )
        )
    if setup.method == "full" and setup.optim not in ("adamw_8bit", "paged_adamw_8bit"):
        out.append(
            _Candidate(
                "8-bit AdamW (bitsandbytes)", {"optim": "adamw_8bit"}, replace(setup, optim="adamw_8bit")
            )
        )
    if setup.gpus > 1 and setup.zero_stage != 3 and setup.fsdp is None:
        out.append(
            _Candidate(
                f"DeepSpeed ZeRO-3 across the {setup.gpus} GPUs",
                {"deepspeed": "ds_z3_config.json"},
                replace(setup, deepspeed=DeepSpeed.from_kind("z3")),
            )
        )
    kind = setup.deepspeed.kind if setup.deepspeed else None
    if setup.gpus > 1 and kind != "z3-offload" and setup.method == "full" and setup.fsdp is None:
        out.append(
            _Candidate(
                f"DeepSpeed ZeRO-3 with CPU offload across the {setup.gpus} GPUs",
                {"deepspeed": "ds_z3_offload_config.json"},
                replace(setup, deepspeed=DeepSpeed.from_kind("z3-offload")),
            )
        )
    out.extend(_eval_candidates(setup))
    cut = max_cutoff(setup, gpu_bytes)
    if 0 < cut < setup.cutoff_len:
        out.append(
            _Candidate(
                f"cutoff_len {cut} (longer samples are truncated)",
                {"cutoff_len": cut},
                replace(setup, cutoff_len=cut),
            )
        )
    return out


def _eval_candidates(setup: TrainSetup) -> list[_Candidate]:
    """Changes that only lower the evaluation peak: a smaller eval batch, predictions moved to the CPU."""
    ev = setup.eval
    if ev is None:
        return []
    out: list[_Candidate] = []
    if ev.batch_size > 1:
        # the training batch fits the training step's activations; below it, halve
        b = setup.batch_size if ev.batch_size > setup.batch_size else ev.batch_size // 2
        out.append(
            _Candidate(
                f"evaluation batch {b}",
                {"per_device_eval_batch_size": b},
                replace(setup, eval=replace(ev, batch_size=b)),
            )
        )
    gathers = ev.compute_accuracy or ev.predict_with_generate
    if gathers and not ev.prediction_loss_only and ev.accumulation_steps != 1:
        out.append(
            _Candidate(
                "move evaluation predictions to the CPU after every eval step",
                {"eval_accumulation_steps": 1},
                replace(setup, eval=replace(ev, accumulation_steps=1)),
            )
        )
    return out


def fit_changes(setup: TrainSetup, gpu_bytes: int) -> list[Change]:
    """Changes that bring the peak under gpu_bytes, each with its new total.

    First every single change that fits on its own; then one combination built greedily from the changes
    that keep the data whole (the one saving most first), with a shorter cutoff only as the last resort.
    """
    fits: list[Change] = []
    for description, overrides, changed in _candidates(setup, gpu_bytes):
        total = estimate(changed).total_bytes
        if total <= gpu_bytes:
            fits.append(Change(description, overrides, changed, total))
    current, steps, merged = setup, [], {}  # type: ignore[var-annotated]
    total = estimate(setup).total_bytes
    while total > gpu_bytes:
        options = [
            (estimate(c).total_bytes, d, o, c)
            for d, o, c in _candidates(current, gpu_bytes)
            if "cutoff_len" not in o
        ]
        options = [opt for opt in options if opt[0] < total]
        if not options:
            cut = max_cutoff(current, gpu_bytes)
            if cut <= 0:
                return fits
            current = replace(current, cutoff_len=cut)
            steps.append(f"cutoff_len {cut}")
            merged["cutoff_len"] = cut
            total = estimate(current).total_bytes
            break
        total, d, o, current = min(options, key=lambda item: item[0])
        steps.append(d)
        merged.update(o)
    if len(steps) > 1 and total <= gpu_bytes:
        fits.append(Change(" + ".join(steps), merged, current, total))
    return fits


def lora_vram_gib(model: str | None, cfg: dict[str, Any], cutoff: int) -> float | None:
    """LoRA VRAM at the cutoff (batch 1), or None when the model is unknown."""
    if not model:
        return None
    run = {"finetuning_type": "lora", "per_device_train_batch_size": 1, "bf16": True, **cfg}
    run.update(model_name_or_path=str(model), cutoff_len=cutoff)
    try:
        return float(estimate(setup_from_config(run)).total_gib)
    except LfTunerError:
        return None
