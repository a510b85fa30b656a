"""The measured peaks the estimate is held to: rows of calibration/*.jsonl (and the shared vram_h100.jsonl).

Each row is a real LLaMA-Factory 0.9.5 run (calibration/README.md says how it was measured): the row's own keys
override the base arguments of calibration/measure_vram.py, and `nvml_process_peak` is what nvidia-smi showed for
the process. `scripts/bench_estimate.py` prints the table; tests/test_calibration.py keeps every row in the band
the README states. This module reads files; the estimate it runs is pure.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lf_tuner.memory.model import GIB, estimate
from lf_tuner.memory.setup import setup_from_config
from lf_tuner.models import resolve_model

# The band the README states for every row: no under-estimate beyond 3%, no over-estimate beyond 10%.
UNDER_LIMIT_PCT = -3.0
OVER_LIMIT_PCT = 10.0

# Row `model` names of the calibration files -> catalog names.
ALIASES = {
    "qwen2.5-0.5b": "Qwen2.5-0.5B",
    "qwen2.5-1.5b": "Qwen2.5-1.5B",
    "qwen2.5-3b": "Qwen2.5-3B",
    "qwen2.5-7b": "Qwen2.5-7B",
    "qwen2.5-14b": "Qwen2.5-14B",
    "llama3.1-8b": "Llama-3.1-8B",
    "qwen3-4b": "Qwen3-4B",
    "mistral-7b-v0.3": "Mistral-7B-v0.3",
    "gemma-2-2b": "gemma-2-2b",
    "phi-3.5-mini": "Phi-3.5-mini",
    "gemma-3-1b": "gemma-3-1b",
    "llama3.2-1b": "Llama-3.2-1B",
}
# The base arguments of measure_vram.py (a row's own fields override them).
BASE: dict[str, Any] = {
    "stage": "sft",
    "finetuning_type": "lora",
    "lora_target": "all",
    "lora_rank": 8,
    "per_device_train_batch_size": 1,
    "gradient_accumulation_steps": 1,
    "bf16": True,
}
META = {
    "id", "model", "max_allocated", "max_reserved", "nvml_process_peak", "nvml_device_peak", "ok", "error",
    "mem_by_step", "step_times", "wall", "source", "template",
}  # fmt: skip


@dataclass(frozen=True)
class CalibrationRow:
    """One measured run and what `estimate` says of it."""

    id: str
    file: str
    model: str
    config: dict[str, Any]
    measured_bytes: int
    estimated_bytes: int
    phase: str

    @property
    def error_pct(self) -> float:
        return (self.estimated_bytes - self.measured_bytes) / self.measured_bytes * 100

    @property
    def measured_gib(self) -> float:
        return self.measured_bytes / GIB

    @property
    def estimated_gib(self) -> float:
        return self.estimated_bytes / GIB


def calibration_files(root: Path) -> list[Path]:
    """The shared file beside the project (../shared/calibration/vram_h100.jsonl) if present, then the project's."""
    shared = root.parent / "shared" / "calibration" / "vram_h100.jsonl"
    return ([shared] if shared.is_file() else []) + sorted((root / "calibration").glob("*.jsonl"))


def read_calibration(paths: Iterable[Path]) -> list[CalibrationRow]:
    """Every successful row with an NVML peak, estimated."""
    rows = []
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            raw = json.loads(line)
            if not raw.get("ok", True) or not raw.get("nvml_process_peak"):
                continue
            cfg = {**BASE, **{k: v for k, v in raw.items() if k not in META}}
            arch = resolve_model(ALIASES.get(raw["model"], raw["model"]))
            est = estimate(setup_from_config(cfg, arch))
            rows.append(
                CalibrationRow(
                    id=str(raw["id"]),
                    file=path.name,
                    model=arch.name,
                    config=cfg,
                    measured_bytes=int(raw["nvml_process_peak"]),
                    estimated_bytes=est.total_bytes,
                    phase=est.phase,
                )
            )
    return rows
