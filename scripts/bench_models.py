"""`lf-tuner estimate` wall time by where the model's facts come from (fresh process each run, median of 5).

Usage: python scripts/bench_models.py
- fast path, catalog: a catalog model (no torch import);
- fast path, HF cache: a Hub id whose config.json sits in a Hugging Face cache (huggingface_hub's cache API);
- meta device, cold: a model_type outside the fast path, derived with transformers on the meta device
  (the per-config cache under LF_TUNER_HOME emptied before each run);
- meta device, cached: the same model once its derivation is cached.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.hf_cache import write_hf_cache  # noqa: E402

RUNS = 5
LLAMA = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
         "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": False}  # fmt: skip
STARCODER2 = {"model_type": "starcoder2", "hidden_size": 3072, "intermediate_size": 12288, "num_hidden_layers": 30,
              "num_attention_heads": 24, "num_key_value_heads": 2, "vocab_size": 49152, "use_bias": True}  # fmt: skip


def timed(model: str, env: dict[str, str], before: object = None) -> float:
    times = []
    for _ in range(RUNS):
        if callable(before):
            before()
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "lf_tuner", "estimate", "--model", model, "--json"],
            capture_output=True, text=True, env=env, cwd=ROOT,
        )  # fmt: skip
        times.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise SystemExit(f"{model}: {proc.stderr}")
    return statistics.median(times)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home, lf_home = Path(tmp) / "hf", Path(tmp) / "lf"
        write_hf_cache(home / "hub", "acme/llama-8b", {"config.json": LLAMA})
        local = Path(tmp) / "starcoder2"
        local.mkdir()
        (local / "config.json").write_text(json.dumps(STARCODER2))
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(home), "LF_TUNER_HOME": str(lf_home),
               "PYTHONPATH": str(ROOT)}  # fmt: skip
        env.pop("HF_HUB_CACHE", None)
        rows = [
            ("fast path, catalog (Qwen2.5-7B)", timed("Qwen2.5-7B", env)),
            ("fast path, HF cache (acme/llama-8b)", timed("acme/llama-8b", env)),
            (
                "meta device, cold (starcoder2 dir)",
                timed(str(local), env, lambda: shutil.rmtree(lf_home, True)),
            ),
            ("meta device, cached (starcoder2 dir)", timed(str(local), env)),
        ]
    print(f"{'lf-tuner estimate --model ...':40} {'median of ' + str(RUNS):>12}")
    for label, seconds in rows:
        print(f"{label:40} {seconds:>10.3f} s")


if __name__ == "__main__":
    main()
