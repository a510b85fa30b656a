"""Benchmark `lf-tuner cutoff` against LLaMA-Factory's own length pipeline on distinct rows, for a byte-level BPE
and a SentencePiece tokenizer.

    python scripts/bench_cutoff.py                       # 100,000 sharegpt samples, both tokenizers
    python scripts/bench_cutoff.py --samples 20000 --tokenizer sentencepiece
    python scripts/bench_cutoff.py --samples 20000 --skip-llamafactory

Everything is generated here, nothing is downloaded: instruction-like conversations (a vocabulary of 20,000
English-like words drawn with a Zipf law; sentences, paragraphs, lists and code blocks; 1 to 6 turns, lognormal
turn lengths with long outliers; system prompts, most of them from a small shared pool). Every row is distinct
(the script counts them and says so). The tokenizers: a byte-level BPE trained here on such text (vocab 32k,
Qwen2's pre-tokenizer and special tokens), and Mistral 7B v0.1's SentencePiece model (as the mistral-common
package ships it) saved in the Llama-2 tokenizer.json layout, which transformers 5 rebuilds when it loads it (both
built by tests/lf_data.py, as the tests build theirs).

Each side runs in its own process, one after the other, on the same data: lf-tuner's `LengthCounter.measure`
(what `lf-tuner cutoff` runs, tokenizer loaded through transformers as LLaMA-Factory loads it) and LLaMA-Factory's
`get_dataset` with the template and no truncation (what its scripts/stat_utils/length_cdf.py runs;
`preprocessing_num_workers` = --workers). Seconds are each side's pipeline, tokenizer load to lengths (imports apart:
llamafactory's on one side, lf_tuner's and transformers' on the other); peak MiB is the largest sum of the PSS of
the side's processes (its workers included, shared pages counted once), read from /proc. The lengths are compared
sample by sample. LLaMA-Factory starts with an empty datasets cache each time (its JSON -> Arrow step is not skipped).

With --workdir, the tokenizers and the data files are kept there and reused by the next run.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.lf_data: the tests' tokenizer builders

# ---------------------------------------------------------------- text that reads like instruction data

_COMMON = (
    "the of and to a in is that for it as was with be by on not he this are or his from at which but have an "
    "they you were her she there been one all we their has would when if so no will more can out up into do "
    "any your what some about them other than then how its only also these two may first new use could very "
    "over time like our well most just each people make such way even through where after because should "
    "work data model example using value function file between number result system user code need help "
    "question answer step here following information different important write list"
)
COMMON = _COMMON.split()
_ONSETS = "b c d f g h l m n p r s t v w st tr pr ch sh th br cl gr pl sp"
ONSETS = ["", "", *_ONSETS.split()]
NUCLEI = ["a", "e", "i", "o", "u", "a", "e", "ea", "ou", "ai", "io", "y"]
CODAS = ["", "", "", "", "n", "r", "s", "t", "l", "nd", "st", "ng", "ck", "m", "rt", "nt"]
SUFFIXES = [""] * 8 + ["ing", "ed", "er", "ly", "tion", "s", "ment", "ness", "able", "al", "ive", "ize"]
VOCABULARY = 20_000  # words the data draws from
LEXICON = 40_000  # words the tokenizer is trained on (the data's 6,000 are the most frequent)
ADDED = ["<tool_call>", "</tool_call>", "<think>", "</think>"]


def lexicon(n: int, rnd: random.Random) -> list[str]:
    """English function words first, then made-up words of 1-4 syllables, shorter ones more frequent."""
    made: dict[str, None] = dict.fromkeys(COMMON)
    while len(made) < n:
        syllables = rnd.choices([1, 2, 3, 4], [40, 40, 17, 3])[0]
        word = "".join(rnd.choice(ONSETS) + rnd.choice(NUCLEI) + rnd.choice(CODAS) for _ in range(syllables))
        word += rnd.choice(SUFFIXES)
        if 2 <= len(word) <= 16:
            made.setdefault(word)
    rest = list(made)[len(COMMON) :]
    rest.sort(key=lambda w: len(w) + rnd.gauss(0, 2.5))
    return COMMON + rest


class Corpus:
    """Conversations from a word list drawn with a Zipf law (numpy draws the words, in blocks)."""

    def __init__(self, words: list[str], seed: int, exponent: float = 1.05) -> None:
        import numpy as np

        weights = 1 / (np.arange(len(words)) + 2.7) ** exponent
        self.p = weights / weights.sum()
        self.words = words
        self.np = np.random.default_rng(seed)
        self.rnd = random.Random(seed)
        self.buf: list[str] = []
        self.pos = 0
        self.systems = [self.prose(self.rnd.randint(8, 60)) for _ in range(12)]

    def pick(self, k: int) -> list[str]:
        if self.pos + k > len(self.buf):
            idx = self.np.choice(len(self.words), size=max(k, 1 << 18), p=self.p)
            self.buf = [self.words[i] for i in idx.tolist()]
            self.pos = 0
        self.pos += k
        return self.buf[self.pos - k : self.pos]

    def sentence(self, k: int) -> str:
        rnd = self.rnd
        ws = self.pick(k)
        ws[0] = ws[0].capitalize()
        if k > 7 and rnd.random() < 0.5:
            ws[rnd.randrange(2, k - 2)] += ","
        if rnd.random() < 0.12:
            ws[rnd.randrange(k)] = str(rnd.choice([rnd.randint(0, 99), rnd.randint(100, 99999)]))
        if rnd.random() < 0.04:
            i = rnd.randrange(k)
            ws[i] = f"**{ws[i]}**" if rnd.random() < 0.5 else f"({ws[i]})"
        return " ".join(ws) + rnd.choices(".?!:", [85, 8, 3, 4])[0]

    def prose(self, n: int) -> str:
        rnd = self.rnd
        sentences = []
        while n > 0:
            k = min(n, max(3, int(rnd.lognormvariate(2.5, 0.45))))
            sentences.append(self.sentence(k) if k > 2 else " ".join(self.pick(k)))
            n -= k
        paragraphs, i = [], 0
        while i < len(sentences):
            j = i + rnd.randint(2, 6)
            paragraphs.append(" ".join(sentences[i:j]))
            i = j
        return "\n\n".join(paragraphs)

    def bullets(self, n: int) -> str:
        rnd = self.rnd
        numbered = rnd.random() < 0.5
        items = []
        while n > 0:
            k = min(n, rnd.randint(4, 20))
            items.append(self.sentence(k))
            n -= k
        return "\n".join((f"{i + 1}. " if numbered else "- ") + s for i, s in enumerate(items))

    def code(self, n: int) -> str:
        rnd = self.rnd
        lines = [f"def {'_'.join(self.pick(2))}({', '.join(self.pick(rnd.randint(1, 3)))}):"]
        depth = 1
        while n > 0:
            a, b, c = self.pick(3)
            kind = rnd.random()
            if kind < 0.15:
                line = f"for {a} in {b}:"
            elif kind < 0.25:
                line = f"if {a} > {rnd.randint(0, 100)}:"
            elif kind < 0.35:
                line = f"return {a}"
            else:
                line = f"{a} = {b}({c}, {rnd.randint(0, 9)})"
            lines.append("    " * depth + line)
            depth = depth + 1 if line.endswith(":") else max(1, depth - (rnd.random() < 0.3))
            n -= 4
        return "```python\n" + "\n".join(lines) + "\n```"

    def reply(self, n: int) -> str:
        """Prose, or (for longer turns, half the time) a mix of paragraphs, lists and code blocks."""
        rnd = self.rnd
        if n < 40 or rnd.random() < 0.5:
            return self.prose(n)
        parts = []
        while n > 0:
            k = min(n, rnd.randint(20, 120))
            r = rnd.random()
            parts.append(self.code(k) if r < 0.12 else self.bullets(k) if r < 0.35 else self.prose(k))
            n -= k
        return "\n\n".join(parts)

    def turn_words(self, median: float, sigma: float) -> int:
        n = int(self.rnd.lognormvariate(math.log(median), sigma)) + 2
        if self.rnd.random() < 0.02:  # pasted documents, long answers
            n *= self.rnd.randint(5, 15)
        return min(n, 8000)

    def sample(self) -> dict[str, Any]:
        rnd = self.rnd
        msgs = []
        r = rnd.random()
        if r < 0.2:
            msgs.append({"from": "system", "value": rnd.choice(self.systems)})
        elif r < 0.3:
            msgs.append({"from": "system", "value": self.prose(rnd.randint(8, 80))})
        for _ in range(rnd.choices([1, 2, 3, 4, 6], [65, 18, 9, 5, 3])[0]):
            msgs.append({"from": "human", "value": self.reply(self.turn_words(30, 0.9))})
            msgs.append({"from": "gpt", "value": self.reply(self.turn_words(120, 0.85))})
        return {"conversations": msgs}


_WORDS: list[str] = []


def _chunk(args: tuple[int, int]) -> str:
    """JSON lines for one chunk of rows, from its own seed (the same rows whatever the process count)."""
    seed, n = args
    corpus = Corpus(_WORDS[:VOCABULARY], seed)
    return "".join(json.dumps(corpus.sample()) + "\n" for _ in range(n))


def write_rows(path: Path, n: int, words: list[str], seed: int, *, as_array: bool) -> None:
    """n rows as JSON lines or one JSON array, generated in chunks on every CPU (renamed into place when done)."""
    global _WORDS
    _WORDS = words
    size = 2_000
    jobs = [(seed * 1_000_003 + i, min(size, n - start)) for i, start in enumerate(range(0, n, size))]
    part = path.with_name(path.name + ".part")
    with part.open("w") as fh, multiprocessing.get_context("fork").Pool(os.cpu_count() or 1) as pool:
        fh.write("[\n" if as_array else "")
        first = True
        for lines in pool.imap(_chunk, jobs):
            if as_array:
                body = lines.rstrip("\n").replace("\n", ",\n")
                lines = ("" if first else ",\n") + body
            fh.write(lines)
            first = False
        fh.write("\n]\n" if as_array else "")
    part.replace(path)


def build_tokenizer(directory: Path, words: list[str], vocab: int) -> Path:
    """A byte-level BPE with Qwen2's pre-tokenizer and special tokens, trained on the bench's own kind of text."""
    from tokenizers import AddedToken

    from tests.lf_data import build_qwen2_bpe_tokenizer

    corpus = Corpus(words, seed=1)  # all 40,000 words: the data's words become whole tokens, rarer ones split
    return build_qwen2_bpe_tokenizer(
        directory, (corpus.reply(200) for _ in range(20_000)), vocab_size=vocab,
        added=[AddedToken(t, special=False, normalized=False) for t in ADDED],
        config={"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": None, "eos_token": "<|im_end|>",
                "pad_token": "<|endoftext|>", "model_max_length": 32768, "clean_up_tokenization_spaces": False},
    )  # fmt: skip


# ---------------------------------------------------------------- the two sides, each in its own process


def side_lftuner(tok: Path, data: Path, template: str) -> tuple[list[int], float]:
    t0 = time.perf_counter()
    from lf_tuner.chat import get_template
    from lf_tuner.data import resolve_datasets
    from lf_tuner.lengths import LengthCounter, load_hf_tokenizer

    with contextlib.suppress(ImportError):  # as llamafactory's import brings it on the other side
        from transformers import AutoTokenizer  # noqa: F401

    imports = time.perf_counter() - t0
    counter = LengthCounter(get_template(template), load_hf_tokenizer(tok))
    return list(counter.measure(resolve_datasets(["bench"], data)).total), imports


def side_llamafactory(
    tok: Path, data: Path, template: str, workers: int, work: Path
) -> tuple[list[int], float]:
    """What scripts/stat_utils/length_cdf.py runs: the SFT dataset pipeline, lengths of input_ids."""
    os.environ.setdefault("DISABLE_VERSION_CHECK", "1")
    os.environ["HF_DATASETS_CACHE"] = str(work / "hf-cache")
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    t0 = time.perf_counter()
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    imports = time.perf_counter() - t0
    model_args, data_args, training_args, _, _ = get_train_args(dict(
        stage="sft", model_name_or_path=str(tok), dataset="bench", dataset_dir=str(data), template=template,
        cutoff_len=1_000_000, preprocessing_num_workers=workers, output_dir=str(work / "dummy_dir"),
        overwrite_cache=True, do_train=True, report_to="none",
    ))  # fmt: skip
    tokenizer_module = load_tokenizer(model_args)
    tpl = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    module = get_dataset(tpl, model_args, data_args, training_args, "sft", **tokenizer_module)
    return [len(x) for x in module["train_dataset"]["input_ids"]], imports


def run_side(args: argparse.Namespace) -> None:
    """The child: one side's lengths to `out` (int64) and its timings to `out`.json."""
    t0 = time.perf_counter()
    if args.side == "lf-tuner":
        lengths, imports = side_lftuner(args.tok, args.data, args.template)
    else:
        lengths, imports = side_llamafactory(args.tok, args.data, args.template, args.workers, args.work)
    seconds = time.perf_counter() - t0 - imports
    args.out.write_bytes(array("q", lengths).tobytes())
    args.out.with_suffix(".json").write_text(json.dumps({"imports": imports, "pipeline": seconds}))


def timed(cmd: list[str], log: Path | None = None) -> dict[str, Any]:
    """Run a process: its stdout, wall and CPU seconds (reaped children included) and memory in MiB.

    Memory comes from /proc every 0.1 s: `rss` is the process's own peak (VmHWM, which exec resets; the
    kernel's ru_maxrss would include this big parent's RSS at fork), `worker_rss` the largest peak among its
    child processes, `tree_rss` the largest sum of their PSS (shared pages counted once).
    """
    peaks: dict[int, float] = {}
    tree = [0.0]
    done = threading.Event()

    def sample(pid: int) -> None:
        while not done.wait(0.1):
            total = 0.0
            for p, (rss, hwm) in _tree_memory(pid).items():
                peaks[p] = max(peaks.get(p, 0.0), hwm)
                total += rss
            tree[0] = max(tree[0], total)

    with tempfile.TemporaryFile() as out, open(log or os.devnull, "w") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err if log else None)
        sampler = threading.Thread(target=sample, args=(proc.pid,), daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        done.set()
        sampler.join()
        code = os.waitstatus_to_exitcode(status)
        if code:
            raise SystemExit(f"{' '.join(cmd)} failed with exit code {code}")
        out.seek(0)
        text = out.read().decode()
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss": peaks.get(proc.pid, 0.0),
        "worker_rss": max((v for p, v in peaks.items() if p != proc.pid), default=0.0),
        "tree_rss": tree[0],
        "out": text,
    }


def _pss(pid: int) -> float:
    """The process's proportional set size in MiB: its shared pages (a forked worker's, the parent's) divided
    among the processes that share them, so that a sum over processes counts each page once."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    raise KeyError("Pss")


def _tree_memory(pid: int) -> dict[int, tuple[float, float]]:
    """(PSS, VmHWM) in MiB of a process and its descendants, from /proc (empty where it is not there)."""
    found: dict[int, tuple[float, float]] = {}
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            fields = dict(
                line.split(":", 1)
                for line in Path(f"/proc/{p}/status").read_text().splitlines()
                if ":" in line
            )
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
            found[p] = (_pss(p), int(fields["VmHWM"].split()[0]) / 1024)
        except (OSError, KeyError, ValueError):  # gone meanwhile, or a zombie
            continue
    return found


def distinct_rows(path: Path) -> tuple[int, int]:
    """(distinct rows, rows) of a JSON array written one row a line (as write_rows writes it)."""
    seen: set[bytes] = set()
    rows = 0
    with path.open("rb") as fh:
        for line in fh:
            line = line.strip().rstrip(b",")
            if line in (b"[", b"]", b""):
                continue
            rows += 1
            seen.add(hashlib.blake2b(line, digest_size=16).digest())
    return len(seen), rows


def compare(
    args: argparse.Namespace, kind: str, tok: Path, template: str, data: Path, work: Path
) -> dict[str, Any]:
    """Both sides on one tokenizer: their timings, peak RSS and lengths."""
    sides = ["lf-tuner"] + ([] if args.skip_llamafactory else ["LLaMA-Factory"])
    result: dict[str, Any] = {"kind": kind, "template": template}
    for side in sides:
        out = work / f"{kind}-{side}.lengths"
        cmd = [sys.executable, __file__, "--side", side, "--tok", str(tok), "--data", str(data),
               "--template", template, "--workers", str(args.workers), "--work", str(work), "--out", str(out)]  # fmt: skip
        log = work / f"{kind}-{side}.log"
        shutil.rmtree(work / "hf-cache", ignore_errors=True)
        print(f"running {side} with the {kind} tokenizer (its log: {log}) ...", file=sys.stderr, flush=True)
        os.environ["LF_TUNER_WORKERS"] = str(args.workers)  # lf-tuner's counting processes: as many
        r = timed(cmd, log)
        r.update(json.loads(out.with_suffix(".json").read_text()))
        r["lengths"] = array("q", out.read_bytes())
        result[side] = r
    return result


def print_table(results: list[dict[str, Any]], args: argparse.Namespace, data: Path) -> None:
    distinct, rows = distinct_rows(data / "bench.json")
    print(f"\n{rows:,} rows, {distinct:,} of them distinct; {(data / 'bench.json').stat().st_size / 2**20:.0f} MiB "
          f"JSON; {os.cpu_count()} CPUs (load average before the run: {args.load:.2f})")  # fmt: skip
    head = (
        f"{'tokenizer':<16}{'side':<28}{'samples':>9}{'tokens':>13}{'seconds':>9}{'ratio':>7}{'peak MiB':>10}"
        f"{'process s':>11}"
    )
    print(head)
    for r in results:
        ours = r["lf-tuner"]
        for side in ("lf-tuner", "LLaMA-Factory"):
            if side not in r:
                continue
            x = r[side]
            label = f"{side} ({args.workers} workers)"
            ratio = r["LLaMA-Factory"]["pipeline"] / x["pipeline"] if "LLaMA-Factory" in r else float("nan")
            print(f"{r['kind']:<16}{label:<28}{len(x['lengths']):>9,}{sum(x['lengths']):>13,}{x['pipeline']:>9.1f}"
                  f"{ratio:>6.1f}x{x['tree_rss']:>10.0f}{x['wall']:>11.1f}")  # fmt: skip
        if "LLaMA-Factory" in r:
            lf = r["LLaMA-Factory"]
            diff = sum(a != b for a, b in zip(ours["lengths"], lf["lengths"], strict=False))
            same = diff == 0 and len(ours["lengths"]) == len(lf["lengths"])
            print(f"{'':<16}lengths identical: {'yes' if same else 'NO'} ({diff} of {len(lf['lengths']):,} differ); "
                  f"template {r['template']}")  # fmt: skip


def rss(args: argparse.Namespace, tok: Path, work: Path, words: list[str]) -> None:
    big = work / f"rows-{args.rss_samples}.jsonl"
    if not big.is_file():
        t0 = time.perf_counter()
        write_rows(big, args.rss_samples, words, seed=2, as_array=False)
        print(f"generated {args.rss_samples:,} rows in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    cmd = [sys.executable, "-m", "lf_tuner", "cutoff", str(big), "--tokenizer", str(tok), "--template",
           args.template, "--json"]  # fmt: skip
    print(f"running {' '.join(cmd[1:])} ...", file=sys.stderr, flush=True)
    r = timed(cmd)
    report = json.loads(r["out"])
    size = big.stat().st_size / 2**30
    print(f"{args.rss_samples:,}-row JSONL ({size:.1f} GiB): lf-tuner cutoff --json {r['wall']:.0f}s, "
          f"{report['count']:,} samples, {report['tokens']:,} tokens")  # fmt: skip
    print(f"peak memory: {r['rss']:.0f} MiB main process (RSS), {r['worker_rss']:.0f} MiB largest worker (RSS), "
          f"{r['tree_rss']:.0f} MiB all processes together (PSS)")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=100_000, help="samples in the comparison [100,000]")
    ap.add_argument(
        "--rss-samples", type=int, default=0, help="rows of a JSONL for lf-tuner's RSS alone [0: none]"
    )
    ap.add_argument("--vocab", type=int, default=32_000)
    ap.add_argument("--tokenizer", choices=["bpe", "sentencepiece"], action="append",
                    help="which tokenizers [both]")  # fmt: skip
    ap.add_argument("--workers", type=int, default=2, help="LLaMA-Factory's preprocessing workers [2]")
    ap.add_argument("--skip-llamafactory", action="store_true")
    ap.add_argument("--workdir", type=Path, help="keep data and tokenizers here (reused when present)")
    ap.add_argument("--side", choices=["lf-tuner", "LLaMA-Factory"], help=argparse.SUPPRESS)
    ap.add_argument("--template", help=argparse.SUPPRESS)
    for hidden in ("--tok", "--data", "--work", "--out"):  # the child's arguments
        ap.add_argument(hidden, type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        run_side(args)
        return

    args.load = os.getloadavg()[0]
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-cutoff-"))
    work.mkdir(parents=True, exist_ok=True)
    from tests.lf_data import build_sentencepiece_tokenizer

    words = lexicon(LEXICON, random.Random(0))
    tokenizers = {}
    for kind in args.tokenizer or ["bpe", "sentencepiece"]:
        tok = work / ("tok" if kind == "bpe" else "sp")
        if not (tok / "tokenizer.json").is_file():
            t0 = time.perf_counter()
            build_tokenizer(tok, words, args.vocab) if kind == "bpe" else build_sentencepiece_tokenizer(tok)
            print(f"tokenizer {kind}: built in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
        tokenizers[kind] = (tok, "qwen" if kind == "bpe" else "mistral")
    if args.samples:
        data = work / f"data-{args.samples}"
        if not (data / "dataset_info.json").is_file():
            data.mkdir(exist_ok=True)
            write_rows(data / "bench.json", args.samples, words, seed=1, as_array=True)
            (data / "dataset_info.json").write_text(
                json.dumps({"bench": {"file_name": "bench.json", "formatting": "sharegpt"}})
            )
        results = [compare(args, kind, tok, tpl, data, work) for kind, (tok, tpl) in tokenizers.items()]
        print_table(results, args, data)
    if args.rss_samples:
        tok, template = next(iter(tokenizers.values()))
        args.template = template
        rss(args, tok, work, words)


if __name__ == "__main__":
    main()
