"""The fast path against transformers' model on the meta device, per architecture (needs the train extra).

Usage: python scripts/models_meta_table.py
For every model_type of the fast path, every catalog model of that type: its parameter count from the fast path
(config.json numbers, no torch) and from the model transformers builds on the meta device, and whether the
linear layers (name, in, out, bias, copies) are the same. tests/test_models_meta.py asserts the same in CI.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lf_tuner.models import FAMILIES, ModelArch  # noqa: E402
from lf_tuner.models.catalog import entries  # noqa: E402
from lf_tuner.models.config import _fast_path  # noqa: E402
from lf_tuner.models.meta import _arch, derive  # noqa: E402


def _linears(arch: ModelArch) -> Counter[tuple[str, int, int, bool, bool]]:
    out: Counter[tuple[str, int, int, bool, bool]] = Counter()
    for lin in (*arch.layer_linears, *(arch.vision.linears if arch.vision else ())):
        copies = (
            arch.instances(lin) // (arch.num_experts if lin.per_expert else 1)
            if lin in arch.layer_linears
            else lin.layers or 1
        )
        out[(lin.name, lin.in_features, lin.out_features, lin.bias, lin.per_expert)] += copies
    return out


def main() -> None:
    seen: set[str] = set()
    print(f"{'architecture':14} {'model':44} {'fast path':>17} {'transformers':>17} {'linears':>8}")
    for item in entries():
        config = {
            k: v
            for k, v in item.config.items()
            if k not in ("quantization_config", "max_position_embeddings")
        }
        key = repr(sorted(config.items()))
        if config.get("model_type") not in FAMILIES or key in seen:
            continue
        seen.add(key)
        fast = _fast_path(config, item.key, FAMILIES[config["model_type"]])
        meta = _arch(derive(config, item.key), item.key, "")
        same = "equal" if _linears(fast) == _linears(meta) else "DIFFER"
        print(
            f"{config['model_type']:14} {item.key:44} {fast.total_params:>17,} {meta.total_params:>17,} {same:>8}"
        )


if __name__ == "__main__":
    main()
