"""Fit checks shared by estimate and run's preflight: budgets per GPU, verdicts, changes that fit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lf_tuner.memory import GIB, Change, Estimate, TrainSetup


def targets(gpu_memory_gib: float | None) -> list[dict[str, Any]]:
    """What to check against: --gpu-memory, else every detected GPU's free memory."""
    if gpu_memory_gib is not None:
        return [{"name": f"{gpu_memory_gib:g} GiB GPU", "budget_bytes": int(gpu_memory_gib * GIB)}]
    from lf_tuner.gpus import detect_gpus

    return [
        {"name": f"GPU {g.index} ({g.name}, {g.free_bytes / GIB:.1f} GiB free)", "budget_bytes": g.free_bytes}
        for g in detect_gpus()
    ]


def report_fit(
    est: Estimate, gpus: list[dict[str, Any]], fit_changes: Callable[[TrainSetup, int], list[Change]]
) -> dict[str, Any]:
    """Per GPU: fits or not with headroom; for the tightest, the changes that make it fit."""
    total = est.total_bytes
    lines, checks = [], []
    for gpu in gpus:
        headroom = gpu["budget_bytes"] - total
        fits = headroom >= 0
        checks.append({"gpu": gpu["name"], "fits": fits, "headroom_gib": round(headroom / GIB, 2)})
        verdict = (
            f"fits, headroom {headroom / GIB:.2f} GiB"
            if fits
            else f"does NOT fit: short by {-headroom / GIB:.2f} GiB"
        )
        lines.append(f"{gpu['name']}: {verdict}")
    tightest = min(gpus, key=lambda g: g["budget_bytes"])
    changes: list[dict[str, Any]] = []
    if total > tightest["budget_bytes"]:
        found = fit_changes(est.setup, tightest["budget_bytes"])
        if found:
            lines.append("changes that fit:")
        else:
            lines.append(
                "no change lf-tuner knows makes it fit: use more GPUs with ZeRO-3, or a smaller model"
            )
        for change in found:
            changes.append(
                {
                    "change": change.description,
                    "overrides": change.overrides,
                    "total_gib": round(change.total_gib, 2),
                }
            )
            keys = ", ".join(f"{k}: {v}" for k, v in change.overrides.items())
            lines.append(f"  - {change.description} -> {change.total_gib:.2f} GiB  ({keys})")
    return {"fits": all(c["fits"] for c in checks), "gpus": checks, "changes": changes, "lines": lines}
