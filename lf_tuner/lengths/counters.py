"""Token counters: a model's own tokenizer (Hugging Face `tokenizers`) or a tiktoken approximation.

A counter only counts: `count(texts)` returns one length per text, encoded without special tokens added,
the way LLaMA-Factory calls `tokenizer.encode(text, add_special_tokens=False)`.

The tokenizer is loaded as LLaMA-Factory's `load_tokenizer` loads it when transformers is installed (transformers
5 rebuilds some layouts, e.g. a Llama-2 SentencePiece tokenizer.json); the `tokenizers` object it holds counts,
checked against its `encode` on probes. Without transformers, tokenizer.json is read directly, and a layout
transformers would rebuild is rebuilt the same way and marked approximate.

Two exact shortcuts (`lengths.shortcuts`) count without an `Encoding` per text, checked against `encode` when built:
- a byte-level BPE tokenizer (GPT-2, Llama 3, Qwen: `ByteLevel`, or `Split` + `ByteLevel`) counts ASCII text
  with `PretokenCounter`: the text is cut where the tokenizer cuts it (added tokens, then its own pre-tokenizer
  regex, run by `re`) and each distinct pre-token goes through the BPE model once;
- a SentencePiece-style BPE tokenizer (Metaspace, or the old Prepend normalizer) counts with `MetaspaceCounter`:
  each distinct word goes through the BPE model once, where the vocabulary proves no token crosses a space.
Everything else (non-ASCII text for byte-level BPE, other tokenizers) goes through `encode_batch_fast`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NoReturn, Protocol

from lf_tuner.errors import LfTunerError
from lf_tuner.lengths.shortcuts import (
    BYTE_LEVEL_PROBES,
    METASPACE,
    SENTENCEPIECE_PROBES,
    MetaspaceCounter,
    PretokenCounter,
    old_llama_normalizer,
)

log = logging.getLogger(__name__)

TIKTOKEN_NAMES = ("o200k_base", "cl100k_base")
_CL100K_PAT = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|"""
    r"""\s+(?!\S)|\s"""
)
_O200K_PAT = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)


class TokenCounter(Protocol):
    """What `lengths` needs from a tokenizer."""

    label: str
    approximate: bool
    approximate_reason: str | None  # why counts are approximate, for the report

    def count(self, texts: list[str]) -> list[int]: ...

    def has_special(self, name: str) -> bool:
        """Whether the tokenizer has a `bos_token` / `eos_token` (after `prepare`)."""
        ...

    def special_text(self, name: str) -> str | None:
        """The text of `bos_token` / `eos_token` (after `prepare`), None when the tokenizer has none."""
        ...

    @property
    def add_bos_token(self) -> bool:
        """The tokenizer's `add_bos_token` (LLaMA-Factory's pretraining processor prepends bos when set)."""
        ...

    def prepare(self, stop_words: list[str], replace_eos: bool) -> None:
        """LLaMA-Factory's `Template.fix_special_tokens`: eos replacement and stop words as special tokens."""
        ...

    def for_worker(self) -> TokenCounter | None:
        """A copy that counts the same in a worker process (after `prepare`), or None where there is none."""
        ...


def _token_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


class _Shortcut(Protocol):
    def count(self, text: str) -> int: ...


@dataclass
class HFTokenCounter:
    """A Hugging Face fast tokenizer through the `tokenizers` library.

    `hf` is the transformers tokenizer when the tokenizer was loaded the way LLaMA-Factory loads it: special
    tokens are then added through it (`prepare`), and the backend `tokenizers` object it holds counts.
    """

    tokenizer: Any
    label: str
    special: dict[str, str | None] = field(default_factory=dict)
    approximate: bool = False
    approximate_reason: str | None = None
    shortcut: bool = True  # count with a pre-token shortcut where the tokenizer allows it
    hf: Any = None
    bos_on_pt: bool = False  # `add_bos_token` as the pretraining processor reads it
    # `count` is mostly Python (the shortcut): worker processes, not threads, make it faster.
    process_parallel: ClassVar[bool] = True
    _pretokens: _Shortcut | None = field(default=None, init=False, repr=False)
    _pretokens_ready: bool = field(default=False, init=False, repr=False)
    _via_hf: bool | None = field(default=None, init=False, repr=False)  # the backend disagrees with `hf`

    def count(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        if self.hf is not None and self._backend_differs():
            return [len(self.hf.encode(t, add_special_tokens=False)) for t in texts]
        fast = self.pretoken_counter()
        if fast is None:
            return self.encode_counts(texts)
        counts = list(map(fast.count, texts))
        rest = [i for i, n in enumerate(counts) if n < 0]
        if rest:
            for i, n in zip(rest, self.encode_counts([texts[i] for i in rest]), strict=True):
                counts[i] = n
        return counts

    def encode_counts(self, texts: list[str]) -> list[int]:
        """Lengths from the tokenizer's own `encode_batch_fast` (Rust threads): the reference path."""
        if not texts:
            return []
        encodings = self.tokenizer.encode_batch_fast(texts, add_special_tokens=False)
        return [len(e.ids) for e in encodings]

    def for_worker(self) -> HFTokenCounter | None:
        """The backend `tokenizers` object and the special tokens, without the transformers object: None where
        the backend does not encode as the transformers tokenizer does (counting needs that object then)."""
        if self.hf is not None and self._backend_differs():
            return None
        copy = HFTokenCounter(
            tokenizer=self.tokenizer,
            label=self.label,
            special=dict(self.special),
            approximate=self.approximate,
            approximate_reason=self.approximate_reason,
            shortcut=self.shortcut,
            bos_on_pt=self.bos_on_pt,
        )
        copy._pretokens, copy._pretokens_ready = self.pretoken_counter(), True  # built and checked once
        return copy

    def _backend_differs(self) -> bool:
        """Whether the transformers tokenizer encodes differently from its backend (checked on probes once)."""
        if self._via_hf is None:
            self._via_hf = self.tokenizer is None or not _backend_matches(self.hf, self.tokenizer)
            if self._via_hf:
                log.warning("tokenizer: counting with transformers' encode (its backend encodes differently)")
        return self._via_hf

    def pretoken_counter(self) -> _Shortcut | None:
        """The shortcut, built on first use (and again after `prepare` adds tokens)."""
        if not self._pretokens_ready:
            shortcut: _Shortcut | None = None
            if self.shortcut:
                shortcut = PretokenCounter.build(self.tokenizer) or MetaspaceCounter.build(self.tokenizer)
            self._pretokens = shortcut
            self._pretokens_ready = True
        return self._pretokens

    def has_special(self, name: str) -> bool:
        return self.special.get(name) is not None

    def special_text(self, name: str) -> str | None:
        return self.special.get(name)

    @property
    def add_bos_token(self) -> bool:
        return self.bos_on_pt

    def prepare(self, stop_words: list[str], replace_eos: bool) -> None:
        if self.hf is not None:
            self._prepare_transformers(stop_words, replace_eos)
            return
        from tokenizers import AddedToken

        words = list(stop_words)
        if replace_eos and words:
            self.special["eos_token"] = words.pop(0)
            self._add(self.special["eos_token"], AddedToken)
        if self.special.get("eos_token") is None:
            self.special["eos_token"] = "<|endoftext|>"
            self._add("<|endoftext|>", AddedToken)
        for word in words:
            self._add(word, AddedToken)

    def _prepare_transformers(self, stop_words: list[str], replace_eos: bool) -> None:
        """`Template.fix_special_tokens` on the transformers tokenizer, call for call."""
        hf = self.hf
        words = list(stop_words)
        if replace_eos:
            if not words:
                raise LfTunerError("template: stop words are required to replace the EOS token")
            if hf.eos_token != words[0]:
                hf.add_special_tokens({"eos_token": words[0]})
            words = words[1:]
        if hf.eos_token_id is None and hf.eos_token != "<|endoftext|>":
            hf.add_special_tokens({"eos_token": "<|endoftext|>"})
        if hf.pad_token_id is None:
            hf.pad_token = hf.eos_token
        if words:
            try:
                hf.add_special_tokens(
                    dict(additional_special_tokens=words), replace_additional_special_tokens=False
                )
            except TypeError:
                hf.add_special_tokens(dict(additional_special_tokens=words))
        self.tokenizer = getattr(hf, "backend_tokenizer", None)
        self.special.update(_transformers_specials(hf))
        self._pretokens_ready = False
        self._via_hf = None

    def _add(self, token: str | None, added_token: Any) -> None:
        if token is None:
            return
        existing = {t.content for t in self.tokenizer.get_added_tokens_decoder().values() if t.special}
        if token not in existing:
            self.tokenizer.add_special_tokens([added_token(token, special=True, normalized=False)])
            self._pretokens_ready = False  # added tokens cut text: the shortcut is rebuilt with them


# ---------------------------------------------------------------- loading


_LLAMA_CLASSES = {"LlamaTokenizer", "LlamaTokenizerFast", "CodeLlamaTokenizer", "CodeLlamaTokenizerFast"}
_REBUILT = (
    "transformers is not installed: this Llama SentencePiece tokenizer.json (prepend normalizer) was rebuilt "
    "the way transformers 5 rebuilds it; install transformers (pip install 'lf-tuner[train]') for exact counts"
)


def load_hf_tokenizer(
    directory: str | os.PathLike[str],
    *,
    use_transformers: bool | None = None,
    trust_remote_code: bool = False,
) -> HFTokenCounter:
    """A tokenizer directory (or tokenizer.json file), loaded the way LLaMA-Factory's `load_tokenizer` loads it
    when transformers is installed (`use_transformers=None`: when it can be imported).

    Without transformers, tokenizer.json is read with `tokenizers` and bos/eos come from tokenizer_config.json /
    special_tokens_map.json; a Llama SentencePiece layout that transformers 5 rebuilds is rebuilt the same way
    and the counts are marked approximate.
    """
    path = Path(directory)
    if path.is_file() and path.name.endswith(".json"):
        path = path.parent
    if not path.is_dir():
        raise LfTunerError(
            f"tokenizer: `{directory}` is not a directory; pass the model directory to --tokenizer"
        )
    if use_transformers is None:
        import importlib.util

        use_transformers = importlib.util.find_spec("transformers") is not None
    if use_transformers:
        return _load_transformers(path, trust_remote_code)
    config = read_json_object(path / "tokenizer_config.json", "tokenizer")
    smap = read_json_object(path / "special_tokens_map.json", "tokenizer")
    tok_file = path / "tokenizer.json"
    if not tok_file.is_file():
        _no_tokenizer_json(path)
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(tok_file))
    except Exception as exc:  # the Rust error names the problem
        raise LfTunerError(f"tokenizer: cannot read {tok_file}: {exc}") from None
    special: dict[str, str | None] = {}
    for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
        special[name] = _token_text(config.get(name)) or _token_text(smap.get(name))
    _add_config_specials(tokenizer, special, config, smap)
    reason = None
    if config.get("tokenizer_class") in _LLAMA_CLASSES and old_llama_normalizer(
        json.loads(tokenizer.to_str()).get("normalizer")
    ):
        _rebuild_llama(tokenizer, config)
        reason = _REBUILT
    tokenizer.no_truncation()  # as transformers' `encode` without max_length: a tokenizer.json may carry
    tokenizer.no_padding()  # its training-time truncation or padding
    return HFTokenCounter(
        tokenizer=tokenizer,
        label=f"{path.name} (tokenizers{', approximate' if reason else ''})",
        special=special,
        approximate=reason is not None,
        approximate_reason=reason,
        bos_on_pt=False,  # transformers 5 ignores add_bos_token where tokenizer.json exists
    )


def _rebuild_llama(tokenizer: Any, config: dict[str, Any]) -> None:
    """What transformers 5's `LlamaTokenizer.__init__` builds: no normalizer, a Metaspace pre-tokenizer."""
    from tokenizers import pre_tokenizers

    add_prefix_space = config.get("add_prefix_space")
    add_prefix_space = True if add_prefix_space is None else bool(add_prefix_space)
    scheme = ("always" if config.get("legacy", False) else "first") if add_prefix_space else "never"
    tokenizer.normalizer = None
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement=METASPACE, prepend_scheme=scheme, split=False
    )


def _transformers_specials(hf: Any) -> dict[str, str | None]:
    """bos/eos as LLaMA-Factory sees them: a token whose id is None does not exist."""
    out: dict[str, str | None] = {}
    for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
        token_id = getattr(hf, f"{name}_id", None)
        out[name] = str(getattr(hf, name)) if token_id is not None else None
    return out


def _load_transformers(path: Path, trust_remote_code: bool) -> HFTokenCounter:
    """`llamafactory.model.loader.load_tokenizer`'s AutoTokenizer call (use_fast, split_special_tokens off,
    padding right); the backend `tokenizers` object counts where it encodes as the transformers object does."""
    has_files = any(path.glob("tokenizer*")) or (path / "vocab.json").is_file()
    if not has_files:
        _no_tokenizer_json(path)
    from transformers import AutoTokenizer

    kwargs: dict[str, Any] = {"padding_side": "right", "trust_remote_code": trust_remote_code}
    try:
        try:
            hf = AutoTokenizer.from_pretrained(str(path), use_fast=True, split_special_tokens=False, **kwargs)
        except ValueError:  # LLaMA-Factory tries the other kind
            hf = AutoTokenizer.from_pretrained(str(path), use_fast=False, **kwargs)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LfTunerError(f"tokenizer: transformers cannot load {path}: {first}") from None
    backend = getattr(hf, "backend_tokenizer", None)
    counter = HFTokenCounter(
        tokenizer=backend,
        label=f"{path.name} (transformers)",
        special=_transformers_specials(hf),
        hf=hf,
        bos_on_pt=bool(getattr(hf, "add_bos_token", False)),
    )
    return counter


def _backend_matches(hf: Any, backend: Any) -> bool:
    specials = [str(t) for t in getattr(hf, "all_special_tokens", [])][:50]
    probes = [*BYTE_LEVEL_PROBES, *SENTENCEPIECE_PROBES, *(f"x{t}y {t} {t}{t}\n{t}" for t in specials)]
    try:
        ours = [len(e.ids) for e in backend.encode_batch_fast(probes, add_special_tokens=False)]
        return ours == [len(hf.encode(p, add_special_tokens=False)) for p in probes]
    except Exception:  # a backend that cannot encode these is not one to count with
        return False


def _no_tokenizer_json(path: Path) -> NoReturn:
    has_files = any(path.glob("tokenizer*")) or (path / "vocab.json").is_file()
    if not has_files:
        raise LfTunerError(
            f"tokenizer: no tokenizer files (tokenizer.json, tokenizer_config.json) in {path}; pass the model "
            "directory that holds them to --tokenizer, or use --tiktoken o200k_base for an approximation"
        )
    raise LfTunerError(
        f"tokenizer: {path} has no tokenizer.json; install transformers (pip install 'lf-tuner[train]') "
        "to convert it, or use --tiktoken o200k_base for an approximation"
    )


def _add_config_specials(tokenizer: Any, special: dict[str, str | None], *configs: dict[str, Any]) -> None:
    """Special tokens named in the configs but missing from tokenizer.json, as transformers adds them."""
    from tokenizers import AddedToken

    names = [v for v in special.values() if v]
    for cfg in configs:
        for key in ("additional_special_tokens", "extra_special_tokens"):
            extra = cfg.get(key)
            if isinstance(extra, list):
                names += [t for t in (_token_text(x) for x in extra) if t]
    existing = {t.content for t in tokenizer.get_added_tokens_decoder().values()}
    missing = [n for n in dict.fromkeys(names) if n not in existing]
    if missing:
        tokenizer.add_special_tokens([AddedToken(n, special=True, normalized=False) for n in missing])


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """A model folder's JSON settings file (tokenizer or processor config): {} when absent or not an object;
    invalid JSON is an LfTunerError naming `what` the file is for."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise LfTunerError(f"{what}: {path} is not valid JSON ({exc})") from None
    return data if isinstance(data, dict) else {}


@dataclass
class TiktokenCounter:
    """A tiktoken encoding: an approximation of the model's tokenizer (template tokens included as text)."""

    encoding: Any
    label: str
    approximate: bool = True
    approximate_reason: str | None = "counted with a tiktoken encoding, not the model's tokenizer"
    add_bos_token: bool = False

    def count(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        batches = self.encoding.encode_ordinary_batch(texts, num_threads=os.cpu_count() or 1)
        return [len(b) for b in batches]

    def has_special(self, name: str) -> bool:
        return True  # counted as one token: most chat models have both

    def special_text(self, name: str) -> str | None:
        return None  # no text: counted as one token

    def for_worker(self) -> TiktokenCounter | None:
        return None  # tiktoken counts in its own threads

    def prepare(self, stop_words: list[str], replace_eos: bool) -> None:
        return None


def load_tiktoken(spec: str) -> TiktokenCounter:
    """`o200k_base` / `cl100k_base` (cached by tiktoken) or a local `.tiktoken` file."""
    import tiktoken

    path = Path(spec)
    if path.suffix == ".tiktoken" or path.is_file():
        if not path.is_file():
            raise LfTunerError(f"tiktoken: file {spec} not found")
        from tiktoken.load import load_tiktoken_bpe

        try:
            ranks = load_tiktoken_bpe(str(path))
        except Exception as exc:
            raise LfTunerError(f"tiktoken: cannot read {spec}: {exc}") from None
        pat = _O200K_PAT if "o200k" in path.name else _CL100K_PAT
        enc = tiktoken.Encoding(name=path.stem, pat_str=pat, mergeable_ranks=ranks, special_tokens={})
        return TiktokenCounter(encoding=enc, label=f"{path.name} (tiktoken, approximate)")
    if spec not in TIKTOKEN_NAMES:
        raise LfTunerError(
            f"tiktoken: unknown encoding `{spec}`; use o200k_base, cl100k_base or a .tiktoken file"
        )
    if not _tiktoken_cached(spec) and _offline():
        raise LfTunerError(
            f"tiktoken: encoding `{spec}` is not cached and the machine is offline; pass the model's "
            f"own tokenizer with --tokenizer DIR, or a local file with --tiktoken PATH/{spec}.tiktoken"
        )
    try:
        enc = tiktoken.get_encoding(spec)
    except Exception:
        raise LfTunerError(
            f"tiktoken: encoding `{spec}` is not cached and cannot be downloaded (offline?); pass the model's "
            f"own tokenizer with --tokenizer DIR, or a local file with --tiktoken PATH/{spec}.tiktoken"
        ) from None
    return TiktokenCounter(encoding=enc, label=f"{spec} (tiktoken, approximate)")


def _offline() -> bool:
    return any(os.environ.get(v, "") not in ("", "0") for v in ("HF_HUB_OFFLINE", "LF_TUNER_OFFLINE"))


def _tiktoken_cached(spec: str) -> bool:
    """Whether tiktoken's own cache holds the encoding (the path `tiktoken.load.read_file_cached` uses)."""
    import hashlib
    import tempfile

    url = f"https://openaipublic.blob.core.windows.net/encodings/{spec}.tiktoken"
    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    if cache_dir is None:
        cache_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    if cache_dir == "":
        return False
    return os.path.isfile(os.path.join(cache_dir, hashlib.sha1(url.encode()).hexdigest()))
