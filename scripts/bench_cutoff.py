"""Benchmark `lf-tuner cutoff` against LLaMA-Factory's own length pipeline (scripts/stat_utils/length_cdf.py).

    python scripts/bench_cutoff.py                 # 100,000 sharegpt samples + 1,000,000-row JSONL RSS check
    python scripts/bench_cutoff.py --samples 20000 --rss-samples 200000 --skip-llamafactory

Everything is generated here (data and a 32k byte-level BPE tokenizer trained in the script); nothing is
downloaded. Needs the training stack (llamafactory) for the comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def make_words(n: int, rnd: random.Random) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rnd.choice(letters) for _ in range(rnd.randint(2, 10))) for _ in range(n)]


def sentence(rnd: random.Random, words: list[str], n: int) -> str:
    out = []
    for i in range(n):
        w = rnd.choice(words)
        out.append(w.capitalize() if i == 0 or rnd.random() < 0.05 else w)
        if rnd.random() < 0.08:
            out[-1] += rnd.choice([",", ".", "?", "!", ":"])
        if rnd.random() < 0.02:
            out[-1] += "\n" + str(rnd.randint(0, 9999))
    return " ".join(out)


def sample(rnd: random.Random, words: list[str]) -> dict[str, object]:
    msgs = []
    if rnd.random() < 0.3:
        msgs.append({"from": "system", "value": sentence(rnd, words, rnd.randint(5, 30))})
    for _ in range(rnd.choice([1, 1, 1, 2, 3])):
        msgs.append({"from": "human", "value": sentence(rnd, words, int(rnd.lognormvariate(3.5, 0.8)) + 1)})
        msgs.append({"from": "gpt", "value": sentence(rnd, words, int(rnd.lognormvariate(4.5, 0.9)) + 1)})
    return {"conversations": msgs}


def build_tokenizer(directory: Path, words: list[str], rnd: random.Random, vocab: int) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    directory.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )  # fmt: skip
    tok.train_from_iterator((sentence(rnd, words, 200) for _ in range(20_000)), trainer=trainer)
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
        "model_max_length": 32768,
    }))  # fmt: skip
    return directory


def llamafactory_lengths(tok: Path, data: Path, template: str, workers: int, work: Path) -> list[int]:
    os.environ.setdefault("DISABLE_VERSION_CHECK", "1")
    os.environ["HF_DATASETS_CACHE"] = str(work / "hf-cache")
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    model_args, data_args, training_args, _, _ = get_train_args(dict(
        stage="sft", model_name_or_path=str(tok), dataset="bench", dataset_dir=str(data), template=template,
        cutoff_len=1_000_000, preprocessing_num_workers=workers, output_dir=str(work / "dummy_dir"),
        overwrite_cache=True, do_train=True, report_to="none",
    ))  # fmt: skip
    tokenizer_module = load_tokenizer(model_args)
    tpl = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    module = get_dataset(tpl, model_args, data_args, training_args, "sft", **tokenizer_module)
    return [len(x) for x in module["train_dataset"]["input_ids"]]


def lftuner_lengths(tok: Path, data: Path, template: str) -> list[int]:
    from lf_tuner.chat import get_template
    from lf_tuner.datasets import resolve_datasets
    from lf_tuner.lengths import LengthCounter
    from lf_tuner.tokenize import load_hf_tokenizer

    counter = LengthCounter(get_template(template), load_hf_tokenizer(tok))
    return list(counter.measure(resolve_datasets(["bench"], data)).total)


def run_with_peak_rss(cmd: list[str]) -> tuple[str, float]:
    """Run a command; its stdout and its own peak RSS in MiB (os.wait4, not the other children's)."""
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            raise SystemExit(f"{cmd} failed with exit code {proc.returncode}")
        out.seek(0)
        return out.read().decode(), usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--rss-samples", type=int, default=1_000_000)
    ap.add_argument("--vocab", type=int, default=32_000)
    ap.add_argument("--template", default="qwen")
    ap.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="LLaMA-Factory preprocessing workers"
    )
    ap.add_argument("--skip-llamafactory", action="store_true")
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-cutoff-"))
    rnd = random.Random(0)
    words = make_words(30_000, rnd)
    t0 = time.perf_counter()
    tok = build_tokenizer(work / "tok", words, rnd, args.vocab)
    print(
        f"tokenizer: byte-level BPE, vocab {args.vocab}, trained in {time.perf_counter() - t0:.1f}s",
        flush=True,
    )
    data = work / "data"
    data.mkdir(exist_ok=True)
    with (data / "bench.json").open("w") as fh:
        json.dump([sample(rnd, words) for _ in range(args.samples)], fh)
    (data / "dataset_info.json").write_text(
        json.dumps({"bench": {"file_name": "bench.json", "formatting": "sharegpt"}})
    )
    print(
        f"data: {args.samples} sharegpt samples, {(data / 'bench.json').stat().st_size / 2**20:.0f} MiB",
        flush=True,
    )

    t0 = time.perf_counter()
    ours = lftuner_lengths(tok, data, args.template)
    t_ours = time.perf_counter() - t0
    print(f"lf-tuner:      {t_ours:7.2f}s  ({len(ours) / t_ours:,.0f} samples/s)", flush=True)
    if not args.skip_llamafactory:
        t0 = time.perf_counter()
        theirs = llamafactory_lengths(tok, data, args.template, args.workers, work)
        t_lf = time.perf_counter() - t0
        print(f"LLaMA-Factory: {t_lf:7.2f}s  ({len(theirs) / t_lf:,.0f} samples/s, {args.workers} workers)")
        print(f"speed-up: {t_lf / t_ours:.1f}x")
        same = ours == theirs
        print(f"lengths identical: {same} ({len(ours)} vs {len(theirs)} samples)")
        if not same:
            diff = sum(a != b for a, b in zip(ours, theirs, strict=False))
            print(f"  {diff} samples differ")

    if args.rss_samples:
        big = work / "big.jsonl"
        with big.open("w") as fh:
            for _ in range(args.rss_samples):
                fh.write(json.dumps(sample(rnd, words)) + "\n")
        size = big.stat().st_size / 2**20
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "lf_tuner", "cutoff", str(big), "--tokenizer", str(tok), "--template",
               args.template, "--json"]  # fmt: skip
        out, rss = run_with_peak_rss(cmd)
        print(f"{args.rss_samples:,}-row JSONL ({size:.0f} MiB): {time.perf_counter() - t0:.1f}s, "
              f"peak RSS {rss:.0f} MiB, count {json.loads(out)['count']}")  # fmt: skip


if __name__ == "__main__":
    main()
