"""`estimate` over every training config of LLaMA-Factory 0.9.5's examples/, with counts per stage.

Usage: python scripts/estimate_examples.py [--examples DIR] [--stand-ins]

DIR defaults to ../shared/llamafactory-0.9.5/examples beside the project. A config's model is resolved as
`lf-tuner estimate` resolves it; with --stand-ins, models it cannot resolve offline use the config.json fields in
tests/lf_examples.py. Each row gives the training peak, and the evaluation peak with the example's commented-out
`### eval` block switched on (per_device_eval_batch_size 1), or why the config is not estimated.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lf_tuner.config import load_mapping  # noqa: E402
from lf_tuner.errors import LfTunerError  # noqa: E402
from lf_tuner.memory import GIB, estimate, fsdp_from_accelerate, setup_from_config, unsupported  # noqa: E402
from lf_tuner.models import resolve_model  # noqa: E402
from tests import lf_examples  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--stand-ins", action="store_true", help="use tests/lf_examples.py for unknown models"
    )
    ns = parser.parse_args()
    if not lf_examples.EXAMPLES.is_dir():
        parser.error(f"{lf_examples.EXAMPLES} does not exist")
    done: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    print(f"{'config':58s} {'stage':5s} {'layout':22s} {'train':>8s} {'eval':>8s}  note")
    with tempfile.TemporaryDirectory() as tmp:
        for relative, cfg in lf_examples.training_configs():
            stage = str(cfg.get("stage"))
            model = str(cfg.get("model_name_or_path"))
            try:
                refusal = unsupported(cfg)
                if refusal:
                    raise LfTunerError(refusal)
                try:
                    arch = resolve_model(model)
                except LfTunerError:
                    if not (ns.stand_ins and model in lf_examples.STAND_INS):
                        raise
                    arch = resolve_model(
                        str(lf_examples.write_stand_in(model, Path(tmp) / model.replace("/", "--")))
                    )
                accelerate = lf_examples.accelerate_config(relative)
                fsdp = fsdp_from_accelerate(load_mapping(accelerate)) if accelerate else None
                setup = setup_from_config(cfg, arch, fsdp=fsdp, base_dir=lf_examples.LLAMAFACTORY)
                with_eval = setup_from_config(
                    lf_examples.with_eval_block(relative), arch, fsdp=fsdp, base_dir=lf_examples.LLAMAFACTORY
                )
            except LfTunerError as exc:
                skipped[stage] += 1
                print(f"{relative:58s} {stage:5s} {'':22s} {'-':>8s} {'-':>8s}  {exc.message[:70]}")
                continue
            est, ev = estimate(setup), estimate(with_eval)
            train = f"{est.train_bytes / GIB:8.2f}" if est.train is not None else f"{'-':>8s}"
            evaluation = f"{ev.eval.total_bytes / GIB:8.2f}" if ev.eval is not None else f"{'-':>8s}"
            note = "; ".join(setup.notes)[:70]
            print(f"{relative:58s} {stage:5s} {setup.layout:22s} {train} {evaluation}  {note}")
            done[stage] += 1
    print()
    for stage in sorted(set(done) | set(skipped)):
        print(f"stage {stage:4s} estimated {done[stage]:3d}   not estimated {skipped[stage]:3d}")
    print(f"total     estimated {sum(done.values()):3d}   not estimated {sum(skipped.values()):3d}")


if __name__ == "__main__":
    main()
