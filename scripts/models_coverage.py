"""How many of LLaMA-Factory's registered models lf-tuner resolves with no cache and no network.

Usage: python scripts/models_coverage.py
Runs every Hub id of LLaMA-Factory 0.9.5's registry (lf_tuner/models/registry.json) through `resolve_model` with
HF_HUB_OFFLINE=1 and an empty Hugging Face cache, and counts, per family of the id: resolved by the fast path,
resolved with transformers on the meta device (needs the train extra), not resolved (needs the cache or a
download); and how many come with the template LLaMA-Factory registers for them.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.update(
            HF_HUB_OFFLINE="1", HF_HOME=f"{tmp}/hf", HF_HUB_CACHE=f"{tmp}/hf/hub", LF_TUNER_HOME=f"{tmp}/lf"
        )
        from lf_tuner.errors import LfTunerError
        from lf_tuner.models import model_template, registry, resolve_model

        rows: Counter[tuple[str, str]] = Counter()
        templates = 0
        for reg in registry().values():
            hub_id = reg.hf or ""
            family = hub_id.split("/")[0]
            try:
                how = "fast path" if resolve_model(hub_id).derived_by == "config" else "transformers"
            except LfTunerError:
                how = "unresolved"
            rows[(family, how)] += 1
            templates += model_template(hub_id) is not None
    total = len(registry())
    by_how = Counter()
    for (_, how), n in rows.items():
        by_how[how] += n
    print(f"LLaMA-Factory 0.9.5 registered Hub ids: {total}")
    print(f"{'resolved offline, fast path':40} {by_how['fast path']:5}")
    print(f"{'resolved offline, transformers (meta)':40} {by_how['transformers']:5}")
    print(f"{'resolved offline, total':40} {by_how['fast path'] + by_how['transformers']:5}")
    print(f"{'need the cache or a download':40} {by_how['unresolved']:5}")
    print(f"{'with the template LLaMA-Factory registers':40} {templates:5}")
    print()
    print(f"{'organisation':28} {'fast':>5} {'meta':>5} {'none':>5}")
    for org in sorted({org for org, _ in rows}):
        cells = [rows[(org, how)] for how in ("fast path", "transformers", "unresolved")]
        print(f"{org:28} {cells[0]:5} {cells[1]:5} {cells[2]:5}")


if __name__ == "__main__":
    main()
