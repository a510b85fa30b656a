"""Token lengths of every sample, counted as LLaMA-Factory 0.9.5's dataset processors count them.

`LengthCounter.measure` streams the datasets, converts each row as LLaMA-Factory does, expands media
placeholders as the template's plugin does, templates the messages into *pieces* and counts them in batches:

- sft: `SupervisedDatasetProcessor`'s `len(input_ids)` with no truncation (prompt and response apart);
- rm / dpo: `PairwiseDatasetProcessor`'s chosen and rejected sequences (the longer is the sample's length);
- kto: `FeedbackDatasetProcessor`'s `input_ids` (the desired or undesired response);
- pt: `PretrainDatasetProcessor`'s text + eos without packing, and the texts LLaMA-Factory packs into blocks.

Pieces are counted by the injected `TokenCounter` (for a model's tokenizer: a pre-token shortcut that counts
each distinct word once, `encode_batch_fast` for the rest), each distinct piece once per batch; on big datasets
in worker processes while the next batches are read.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
from array import array
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lf_tuner.chat import ChatTemplate, Message, Piece, ToolError, get_template
from lf_tuner.data import DatasetAttr, Sample, convert, iter_rows, resolve_datasets
from lf_tuner.errors import LfTunerError
from lf_tuner.lengths.counters import TokenCounter, load_hf_tokenizer
from lf_tuner.lengths.media import MediaArgs, MediaCounter
from lf_tuner.lengths.stats import recommend

_PARALLEL_MIN_BYTES = 8 << 20  # smaller data is counted in this process: a pool costs more than it saves
_MAX_WORKERS = 8
_SLOTS = {"sft": 2, "kto": 2, "rm": 3, "dpo": 3, "pt": 2}  # counts per sample (see `_sample_pieces`)


@dataclass
class Measurement:
    """Lengths of the valid samples (in order) and what was skipped or approximated.

    `total` is a sample's sequence length: the longer of chosen and rejected for pairwise data (both are kept
    in `chosen` / `rejected`), the text + eos (+ bos where the tokenizer adds it) for pretraining; `packed` holds
    pretraining lengths as packing concatenates them (no bos).
    """

    stage: str = "sft"
    total: array[int] = field(default_factory=lambda: array("q"))
    prompt: array[int] = field(default_factory=lambda: array("q"))
    response: array[int] = field(default_factory=lambda: array("q"))
    chosen: array[int] = field(default_factory=lambda: array("q"))
    rejected: array[int] = field(default_factory=lambda: array("q"))
    packed: array[int] = field(default_factory=lambda: array("q"))
    rows: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    skipped_examples: list[tuple[str, str]] = field(default_factory=list)
    approximate_rows: int = 0  # rows whose count is not exact (see `approximate_reasons`)
    approximate_reasons: Counter[str] = field(default_factory=Counter)
    row_lengths: dict[str, array[int]] = field(default_factory=dict)  # per dataset: -1 for skipped rows

    @property
    def count(self) -> int:
        return len(self.total)


class LengthCounter:
    """Counts sample lengths with one tokenizer, one template and one stage's processor.

    Each distinct piece string of a batch (a template-only piece, a system prompt shared by many rows) is
    counted once. On big datasets, a counter that says so (`process_parallel`) counts in worker processes
    while this one reads the next batches.
    """

    def __init__(
        self,
        template: ChatTemplate,
        counter: TokenCounter,
        *,
        stage: str = "sft",
        media: MediaCounter | None = None,
        mask_history: bool = False,
        batch_size: int = 4096,
        workers: int | None = None,
    ) -> None:
        if stage not in _SLOTS:
            raise LfTunerError(f"stage: `{stage}` is not measured; use pt, sft, rm, dpo or kto")
        self.template = template
        self.counter = counter
        self.stage = stage
        self.media = media if media is not None else MediaCounter(template.plugin, None)
        self.discard_history_cot = mask_history and not template.preserve_thinking
        self.batch_size = batch_size
        self.workers = workers  # counting processes; None: one per CPU for big data (LF_TUNER_WORKERS)
        counter.prepare(template.stop_words, template.replace_eos)
        self._special = {
            "bos_token": 1 if counter.has_special("bos_token") else 0,
            "eos_token": 1 if counter.has_special("eos_token") else 0,
        }
        self._eos_tail: list[Piece] = [("token", "eos")] if template.efficient_eos else []
        # pretraining: `PretrainDatasetProcessor` appends eos as text ("<|end_of_text|>" for llama3)
        eos = "<|end_of_text|>" if template.name == "llama3" else counter.special_text("eos_token")
        self._pt_eos: Piece = eos if eos is not None else ("token", "eos")
        bos = counter.special_text("bos_token")
        self._pt_bos = bos if counter.add_bos_token and bos else ""

    def lengths(self, samples: list[Sample]) -> list[tuple[int, ...]]:
        """Per sample: (prompt, response) for sft and kto, (prompt, chosen, rejected) for rm/dpo, (length without
        packing, length when packed) for pt."""
        batch = self._pieces([("", s) for s in samples])
        return self._finish(batch, self.counter.count(batch.texts))

    def _sample_pieces(self, sample: Sample) -> list[list[Piece]]:
        """The pieces of each count of one sample (see `lengths`)."""
        t, stage = self.template, self.stage
        if stage == "pt":
            text = sample.prompt[0].content
            eos = self._pt_eos
            if isinstance(eos, str):
                return [[self._pt_bos + text + eos], [text + eos]]
            return [[self._pt_bos + text, eos], [text, eos]]
        media = self.media
        if stage == "sft":
            messages, prefix = self._expand(media, sample, sample.prompt + sample.response)
            source: list[Piece] = [("token", "media")] * prefix
            target: list[Piece] = []
            for s, r in t.encode(
                messages, sample.system, sample.tools, discard_history_cot=self.discard_history_cot
            ):
                source += s
                target += r
            return [source, target + self._eos_tail]
        if stage == "kto":
            first, second = sample.response[0], sample.response[1]
            messages, prefix = self._expand(
                media, sample, sample.prompt + [first if first.content else second]
            )
            prompt, response = t.encode_oneturn(messages, sample.system, sample.tools)
            return [[("token", "media")] * prefix + prompt, response + self._eos_tail]
        chosen, prefix = self._expand(media, sample, sample.prompt + [sample.response[0]])
        rejected, _ = self._expand(media, sample, sample.prompt + [sample.response[1]])
        prompt, chosen_ids = t.encode_oneturn(chosen, sample.system, sample.tools)
        _, rejected_ids = t.encode_oneturn(rejected, sample.system, sample.tools)
        return [
            [("token", "media")] * prefix + prompt,
            chosen_ids + self._eos_tail,
            rejected_ids + self._eos_tail,
        ]

    @staticmethod
    def _expand(
        media: MediaCounter | None, sample: Sample, messages: list[Message]
    ) -> tuple[list[Message], int]:
        if media is None:
            return messages, 0
        return media.expand(sample, messages)

    def _pieces(self, samples: list[tuple[str, Sample]]) -> _Pieces:
        """The batch's templated pieces: counts known without the tokenizer, and the texts left to count."""
        width = _SLOTS[self.stage]
        fixed = [0] * (width * len(samples))  # count j of sample i at width * i + j
        texts: list[str] = []
        index: dict[str, int] = {}
        slots: list[int] = []
        which: list[int] = []
        special = self._special
        for i, (location, sample) in enumerate(samples):
            try:
                parts = self._sample_pieces(sample)
            except (ToolError, LfTunerError) as exc:
                raise LfTunerError(f"{location}: {exc}") from None
            for j, pieces in enumerate(parts):
                slot = width * i + j
                for piece in pieces:
                    if isinstance(piece, str):
                        if not piece:
                            continue
                        if len(piece) > 200:  # a message's own text: seldom repeated, no dict entry for it
                            k = len(texts)
                            texts.append(piece)
                        else:
                            k = index.setdefault(piece, len(texts))
                            if k == len(texts):
                                texts.append(piece)
                        slots.append(slot)
                        which.append(k)
                    elif piece[0] == "token":
                        fixed[slot] += 1
                    else:
                        fixed[slot] += special[piece[0]]
        return _Pieces(width, fixed, texts, slots, which)

    def _finish(self, batch: _Pieces, counts: list[int]) -> list[tuple[int, ...]]:
        fixed = batch.fixed
        for slot, k in zip(batch.slots, batch.which, strict=True):
            fixed[slot] += counts[k]
        w = batch.width
        return [tuple(fixed[i : i + w]) for i in range(0, len(fixed), w)]

    def measure(
        self,
        attrs: list[DatasetAttr],
        *,
        max_samples: int | None = None,
        strict: bool = False,
        keep_rows: bool = False,
        examples: int = 3,
    ) -> Measurement:
        """Stream every dataset, convert rows as LLaMA-Factory does, count them in batches.

        Batches are counted in order; with workers, a few are in flight while the next ones are read.
        """
        m = Measurement(stage=self.stage)
        base_reason = self.counter.approximate_reason if self.counter.approximate else None
        with _frozen_gc(), _Counting(self.counter, self._worker_count(attrs, max_samples)) as counting:
            pending: deque[tuple[Callable[[], list[int]], _Pieces, list[int], array[int] | None]] = deque()
            for attr in attrs:
                rows = m.row_lengths.setdefault(attr.name, array("q")) if keep_rows else None
                first = (
                    self.batch_size // 8 if not m.rows else self.batch_size
                )  # counted here, before the workers
                for batch in _batches(_converted(attr, max_samples, self.stage), self.batch_size, first):
                    samples: list[tuple[str, Sample]] = []
                    slots: list[int] = []
                    for location, sample in batch:
                        m.rows += 1
                        if isinstance(sample, str):
                            if strict:
                                raise LfTunerError(
                                    f"{location}: {sample}; fix the row or drop --strict to skip it"
                                )
                            m.skipped[sample] += 1
                            if len(m.skipped_examples) < examples:
                                m.skipped_examples.append((location, sample))
                            if rows is not None:
                                rows.append(-1)
                            continue
                        reason = base_reason or self._approximate(sample)
                        if reason:
                            m.approximate_rows += 1
                            m.approximate_reasons[reason] += 1
                        slots.append(len(rows) if rows is not None else 0)
                        if rows is not None:
                            rows.append(0)
                        samples.append((location, sample))
                    pieces = self._pieces(samples)
                    pending.append((counting.submit(pieces.texts), pieces, slots, rows))
                    while len(pending) > counting.in_flight:
                        self._record(m, *pending.popleft())
            while pending:
                self._record(m, *pending.popleft())
        if m.rows == 0:
            raise LfTunerError("dataset: the dataset is empty; it holds no rows")
        if m.count == 0:
            reason, n = m.skipped.most_common(1)[0]
            raise LfTunerError(
                f"dataset: no valid samples ({n} rows skipped: {reason}); check the format "
                "(--format) and the columns in dataset_info.json"
            )
        return m

    def _approximate(self, sample: Sample) -> str | None:
        if sample.approximate:
            return sample.approximate
        if sample.has_media and self.media is not None:
            return self.media.approximate_reason(sample)
        return None

    def _record(
        self,
        m: Measurement,
        result: Callable[[], list[int]],
        pieces: _Pieces,
        slots: list[int],
        rows: array[int] | None,
    ) -> None:
        lengths = self._finish(pieces, result())
        totals = []
        for counts in lengths:
            if self.stage == "pt":
                total, packed = counts
                m.packed.append(packed)
                m.prompt.append(total)
                m.response.append(0)
            elif len(counts) == 3:
                p, c, r = counts
                m.chosen.append(p + c)
                m.rejected.append(p + r)
                m.prompt.append(p)
                m.response.append(max(c, r))
                total = p + max(c, r)
            else:
                p, r = counts
                m.prompt.append(p)
                m.response.append(r)
                total = p + r
            m.total.append(total)
            totals.append(total)
        if rows is not None:
            for slot, total in zip(slots, totals, strict=True):
                rows[slot] = total

    def _worker_count(self, attrs: list[DatasetAttr], max_samples: int | None) -> int:
        """Processes to count with: `workers`, else LF_TUNER_WORKERS, else one per CPU for big data."""
        if self.workers is not None:
            return max(1, self.workers)
        env = os.environ.get("LF_TUNER_WORKERS", "").strip()
        if env:
            try:
                return max(1, int(env))
            except ValueError:
                raise LfTunerError(f"LF_TUNER_WORKERS: `{env}` is not a number of processes") from None
        if not getattr(self.counter, "process_parallel", False) or sys.platform != "linux":
            return 1
        if max_samples is not None and max_samples * len(attrs) <= 2 * self.batch_size:
            return 1
        size = sum(f.stat().st_size for attr in attrs for f in attr.files if f.is_file())
        if size < _PARALLEL_MIN_BYTES:
            return 1
        return max(1, min(_cpu_count(), _MAX_WORKERS))


@dataclass
class _Pieces:
    """One batch: the counts known so far (`width` per sample), the texts left to count, and for each
    occurrence of those texts the slot it adds to (`slots`) and which text it is (`which`)."""

    width: int
    fixed: list[int]
    texts: list[str]
    slots: list[int]
    which: list[int]


_WORKER_COUNTER: TokenCounter | None = None


def _worker_init(counter: TokenCounter) -> None:
    global _WORKER_COUNTER
    _WORKER_COUNTER = counter


def _worker_counts(texts: list[str]) -> list[int]:
    assert _WORKER_COUNTER is not None
    return _WORKER_COUNTER.count(texts)


class _Counting:
    """Counts texts here, or in forked worker processes (a few batches in flight, results in order).

    The first batch is counted here; the workers are forked after it, so they start with the word caches it
    filled (the most frequent words of the data) instead of each filling its own. They get the counter's
    `for_worker` copy (the `tokenizers` backend and the shortcut, without the transformers object).
    """

    def __init__(self, counter: TokenCounter, workers: int) -> None:
        import multiprocessing

        self.counter = counter
        self.pool: Any = None
        self.in_flight = 0
        self.workers = workers if "fork" in multiprocessing.get_all_start_methods() else 1
        self.copy = counter.for_worker() if self.workers > 1 else None

    def _start(self) -> None:
        import multiprocessing

        # Forked workers inherit the tokenizer; Rust threads are not carried over a fork, so each worker
        # counts on one thread (TOKENIZERS_PARALLELISM=false also silences tokenizers' fork warning).
        saved = os.environ.get("TOKENIZERS_PARALLELISM")
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        try:
            self.pool = multiprocessing.get_context("fork").Pool(self.workers, _worker_init, (self.copy,))
        finally:
            if saved is None:
                os.environ.pop("TOKENIZERS_PARALLELISM", None)
            else:
                os.environ["TOKENIZERS_PARALLELISM"] = saved
        self.in_flight = 2 * self.workers

    def submit(self, texts: list[str]) -> Callable[[], list[int]]:
        if self.pool is None:
            counts = self.counter.count(texts)
            if self.copy is not None:
                self._start()  # after the first batch: the workers inherit its caches
            return lambda: counts
        return self.pool.apply_async(_worker_counts, (texts,)).get  # type: ignore[no-any-return]

    def __enter__(self) -> _Counting:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()


@contextlib.contextmanager
def _frozen_gc() -> Iterator[None]:
    """The objects alive before counting (modules, the tokenizer, templates) left out of the cyclic garbage
    collector while it runs: its full collections, triggered by the many short-lived objects of the rows,
    then no longer walk them again and again (and forked workers do not touch, thus copy, their pages)."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _converted(attr: DatasetAttr, max_samples: int | None, stage: str) -> Iterator[tuple[str, Sample | str]]:
    for n, (location, row) in enumerate(iter_rows(attr)):
        if max_samples is not None and n >= max_samples:
            return
        yield location, convert(row, attr, stage)


def _batches(items: Iterator[Any], size: int, first: int | None = None) -> Iterator[list[Any]]:
    """Lists of `size` items (the first of `first`)."""
    batch: list[Any] = []
    limit = first or size
    for item in items:
        batch.append(item)
        if len(batch) >= limit:
            yield batch
            batch = []
            limit = size
    if batch:
        yield batch


# ---------------------------------------------------------------- from a LLaMA-Factory config


def config_stage(cfg: dict[str, Any], stage: str | None = None) -> str:
    """The config's `stage` (LLaMA-Factory's default: sft), or `stage` when given."""
    value = str(stage or cfg.get("stage") or "sft")
    if value not in _SLOTS:
        raise LfTunerError(f"stage: `{value}` is not one cutoff measures; use pt, sft, rm, dpo or kto")
    return value


def config_datasets(cfg: dict[str, Any]) -> tuple[list[str], str]:
    """The `dataset` names (comma string or list) and `dataset_dir` (default `data`) of a train config."""
    raw = cfg.get("dataset")
    if raw is None:
        raise LfTunerError("config: no `dataset` key; add `dataset: NAME` (registered in dataset_info.json)")
    names = [n.strip() for n in raw.split(",")] if isinstance(raw, str) else [str(n).strip() for n in raw]
    names = [n for n in names if n]
    if not names:
        raise LfTunerError("config: `dataset` is empty; add `dataset: NAME`")
    return names, str(cfg.get("dataset_dir", "data"))


def config_template(cfg: dict[str, Any], model_template: str | None = None) -> ChatTemplate:
    """The config's template with `get_template_and_fix_tokenizer`'s overrides (tool_format, default_system,
    enable_thinking, preserve_thinking)."""
    name = cfg.get("template") or model_template
    if not name:
        raise LfTunerError("config: no `template` key; add `template: NAME` (e.g. qwen3, llama3)")
    default_system = cfg.get("default_system")
    return get_template(
        str(name),
        enable_thinking=cfg.get("enable_thinking", True),
        preserve_thinking=bool(cfg.get("preserve_thinking", False)),
        tool_format=str(cfg["tool_format"]) if cfg.get("tool_format") else None,
        default_system=str(default_system) if default_system is not None else None,
    )


def config_counter(
    cfg: dict[str, Any], template: ChatTemplate, counter: TokenCounter, model_dir: Path | None, stage: str
) -> LengthCounter:
    """The LengthCounter a train config describes: its stage, template, media arguments and mask_history."""
    media = MediaCounter(template.plugin, model_dir, MediaArgs.from_config(cfg))
    return LengthCounter(
        template, counter, stage=stage, media=media, mask_history=bool(cfg.get("mask_history", False))
    )


def model_max_positions(spec: str | None) -> int | None:
    """The model's max positions when lf-tuner can resolve it (catalog name or local config.json)."""
    if not spec:
        return None
    try:
        from lf_tuner.models import resolve_model

        return int(resolve_model(spec).max_positions) or None
    except Exception:  # an unknown model only loses the cap
        return None


def measure_config_cutoff(cfg: dict[str, Any], *, percentile: float = 95.0, multiple: int = 128) -> int:
    """The recommended cutoff_len for a LLaMA-Factory train config (for `render --cutoff auto`).

    Reads `stage`, `dataset`, `dataset_dir`, `media_dir`, `template`, `model_name_or_path` (its tokenizer and
    processor), `max_samples` and the template and media overrides. Raises LfTunerError when something is missing.
    """
    model = cfg.get("model_name_or_path")
    if not model or not Path(str(model)).is_dir():
        raise LfTunerError(
            f"model_name_or_path: `{model}` is not a local model directory; the tokenizer is read from it "
            "(run `lf-tuner cutoff --tokenizer DIR` to measure with another one)"
        )
    stage = config_stage(cfg)
    names, dataset_dir = config_datasets(cfg)
    template = config_template(cfg)
    tokenizer = load_hf_tokenizer(str(model), trust_remote_code=bool(cfg.get("trust_remote_code", False)))
    counter = config_counter(cfg, template, tokenizer, Path(str(model)), stage)
    attrs = resolve_datasets(names, dataset_dir, stage=stage, media_dir=cfg.get("media_dir"))
    m = counter.measure(attrs, max_samples=cfg.get("max_samples"))
    rec = recommend(
        list(m.total), percentile_=percentile, multiple=multiple, max_positions=model_max_positions(model)
    )
    return rec.cutoff
