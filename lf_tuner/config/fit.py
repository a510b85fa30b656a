"""One fit check for `render --fit` and `run --fit`: a config's estimate against GPU budgets, and the change
that makes it fit (both on `memory.report_fit`, whose changes come from `memory.fit_changes`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lf_tuner.memory import Budget, Change, Estimate, FitReport, Fsdp, estimate, report_fit, setup_from_config
from lf_tuner.models import ModelArch


@dataclass(frozen=True)
class Fit:
    """A config's estimate and, when there are budgets to check it against, the verdict per GPU."""

    estimate: Estimate
    report: FitReport | None  # None without a budget (a CPU run, or only the estimate was asked for)

    @property
    def fits(self) -> bool:
        return self.report is None or self.report.fits

    @property
    def change(self) -> Change | None:
        """The first change that makes it fit (on the tightest budget), when it does not fit as is."""
        if self.report is None or self.report.fits or not self.report.changes:
            return None
        return self.report.changes[0]


def check_fit(
    cfg: Mapping[str, Any],
    budgets: Sequence[Budget],
    *,
    gpus: int,
    arch: ModelArch | None = None,
    fsdp: Fsdp | None = None,
) -> Fit:
    """The estimate of `cfg` on `gpus` GPUs, checked against each budget (LfTunerError when the model or a
    key cannot be estimated). `arch` spares resolving the model again when the caller has it; `fsdp` is the
    layout of the accelerate config the run is launched with."""
    est = estimate(setup_from_config(cfg, arch, gpus, fsdp=fsdp))
    return Fit(est, report_fit(est, list(budgets)) if budgets else None)
