"""Estimator error against measured peak GPU memory (nvidia-smi view of the training process).

Usage: python scripts/bench_estimate.py [FILE.jsonl ...]
Default files: ../shared/calibration/vram_h100.jsonl (beside the project) and calibration/*.jsonl.
Prints one row per measurement and the summary: mean absolute % error, max, under-estimates beyond 3%.
Also times `lf-tuner estimate` end to end (wall clock, fresh process).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lf_tuner.memory import calibration_files, read_calibration  # noqa: E402
from lf_tuner.models import resolve_model  # noqa: E402


def readme_rule_gb(cfg: dict[str, Any], params_b: float) -> float:
    """LLaMA-Factory README's "Hardware Requirement" table: GB by method and bits, ignoring sequence length."""
    if cfg.get("finetuning_type") == "full":
        return (8 if cfg.get("pure_bf16") else 18) * params_b
    bits = cfg.get("quantization_bit")
    return {None: 2.0, 8: 1.0, 4: 0.5}.get(bits, 2.0) * params_b


def per_1k_rule_gb(cfg: dict[str, Any], params_b: float) -> float:
    """A common rule of thumb: the README's weight term plus 2.5 GB per 1K tokens of the micro-batch."""
    tokens = cfg["cutoff_len"] * cfg.get("per_device_train_batch_size", 1)
    return readme_rule_gb(cfg, params_b) + 2.5 * tokens / 1000


def summary(errors: list[float]) -> tuple[float, float, int]:
    """(mean |error|, the largest error with its sign, under-estimates beyond 3%), errors in percent."""
    return sum(abs(e) for e in errors) / len(errors), max(errors, key=abs), sum(1 for e in errors if e < -3)


def main() -> None:
    args = [Path(a) for a in sys.argv[1:]] or calibration_files(ROOT)
    data = read_calibration(args)
    errors, baselines = [], {"README rule": [], "2.5 GB/1K tokens": []}
    print(f"{'id':28s} {'file':28s} {'measured':>9s} {'estimate':>9s} {'error':>8s}  phase")
    for row in data:
        errors.append(row.error_pct)
        measured_gb = row.measured_bytes / 1e9
        params_b = resolve_model(row.model).total_params / 1e9
        for name, rule in (("README rule", readme_rule_gb), ("2.5 GB/1K tokens", per_1k_rule_gb)):
            baselines[name].append((rule(row.config, params_b) - measured_gb) / measured_gb * 100)
        print(
            f"{row.id:28s} {row.file:28s} {row.measured_gib:9.2f} {row.estimated_gib:9.2f} "
            f"{row.error_pct:+7.1f}%  {row.phase}"
        )
    if errors:
        mean, worst, under = summary(errors)
        print(
            f"\nrows {len(errors)}  mean |error| {mean:.2f}%  max |error| {abs(worst):.2f}% ({worst:+.1f}%)  "
            f"under-estimates beyond 3%: {under}"
        )
        for name, errs in baselines.items():
            mean_b, worst_b, under_b = summary(errs)
            print(
                f"baseline {name:17s} mean |error| {mean_b:.1f}%  max |error| {abs(worst_b):.0f}% ({worst_b:+.0f}%)  "
                f"under-estimates beyond 3%: {under_b}"
            )
    cli = [
        sys.executable,
        "-m",
        "lf_tuner",
        "estimate",
        "--model",
        "Qwen2.5-7B",
        "--cutoff",
        "4096",
        "--json",
    ]
    walls = []
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run(cli, check=True, capture_output=True, cwd=ROOT)
        walls.append(time.perf_counter() - t0)
    print(f"`lf-tuner estimate` wall time: best {min(walls):.3f} s, median {sorted(walls)[2]:.3f} s (5 runs)")


if __name__ == "__main__":
    main()
