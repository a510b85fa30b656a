"""Token counters: a model's own tokenizer (Hugging Face `tokenizers`) or a tiktoken approximation.

A counter only counts: `count(texts)` returns one length per text, encoded without special tokens added,
in Rust threads (`encode_batch`), the way LLaMA-Factory calls `tokenizer.encode(text, add_special_tokens=False)`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from lf_tuner.errors import LfTunerError

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

    def count(self, texts: list[str]) -> list[int]: ...

    def has_special(self, name: str) -> bool:
        """Whether the tokenizer has a `bos_token` / `eos_token` (after `prepare`)."""
        ...

    def prepare(self, stop_words: list[str], replace_eos: bool) -> None:
        """LLaMA-Factory's `Template.fix_special_tokens`: eos replacement and stop words as special tokens."""
        ...


def _token_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


@dataclass
class HFTokenCounter:
    """A Hugging Face fast tokenizer (`tokenizer.json`) through the `tokenizers` library."""

    tokenizer: Any
    label: str
    special: dict[str, str | None] = field(default_factory=dict)
    approximate: bool = False

    def count(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        encodings = self.tokenizer.encode_batch_fast(texts, add_special_tokens=False)
        return [len(e.ids) for e in encodings]

    def has_special(self, name: str) -> bool:
        return self.special.get(name) is not None

    def prepare(self, stop_words: list[str], replace_eos: bool) -> None:
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

    def _add(self, token: str | None, added_token: Any) -> None:
        if token is None:
            return
        existing = {t.content for t in self.tokenizer.get_added_tokens_decoder().values() if t.special}
        if token not in existing:
            self.tokenizer.add_special_tokens([added_token(token, special=True, normalized=False)])


def load_hf_tokenizer(directory: str | os.PathLike[str]) -> HFTokenCounter:
    """A tokenizer directory (or tokenizer.json file); bos/eos from tokenizer_config.json / special_tokens_map.json."""
    path = Path(directory)
    if path.is_file() and path.name.endswith(".json"):
        path = path.parent
    if not path.is_dir():
        raise LfTunerError(
            f"tokenizer: `{directory}` is not a directory; pass the model directory to --tokenizer"
        )
    config = _read_json(path / "tokenizer_config.json")
    smap = _read_json(path / "special_tokens_map.json")
    tok_file = path / "tokenizer.json"
    if tok_file.is_file():
        from tokenizers import Tokenizer

        try:
            tokenizer = Tokenizer.from_file(str(tok_file))
        except Exception as exc:  # the Rust error names the problem
            raise LfTunerError(f"tokenizer: cannot read {tok_file}: {exc}") from None
    else:
        tokenizer = _backend_from_transformers(path)
    special: dict[str, str | None] = {}
    for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
        special[name] = _token_text(config.get(name)) or _token_text(smap.get(name))
    _add_config_specials(tokenizer, special, config, smap)
    return HFTokenCounter(tokenizer=tokenizer, label=f"{path.name} (tokenizers)", special=special)


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


def _backend_from_transformers(path: Path) -> Any:
    has_files = any(path.glob("tokenizer*")) or (path / "vocab.json").is_file()
    if not has_files:
        raise LfTunerError(
            f"tokenizer: no tokenizer files (tokenizer.json, tokenizer_config.json) in {path}; pass the model "
            "directory that holds them to --tokenizer, or use --tiktoken o200k_base for an approximation"
        )
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise LfTunerError(
            f"tokenizer: {path} has no tokenizer.json; install transformers (pip install 'lf-tuner[train]') "
            "to convert it, or use --tiktoken o200k_base for an approximation"
        ) from None
    try:
        tok = AutoTokenizer.from_pretrained(str(path), use_fast=True)
    except Exception as exc:
        raise LfTunerError(f"tokenizer: transformers cannot load {path}: {exc}") from None
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        raise LfTunerError(f"tokenizer: {path} has no fast tokenizer; save one with tokenizer.json")
    return backend


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise LfTunerError(f"tokenizer: {path} is not valid JSON ({exc})") from None
    return data if isinstance(data, dict) else {}


@dataclass
class TiktokenCounter:
    """A tiktoken encoding: an approximation of the model's tokenizer (template tokens included as text)."""

    encoding: Any
    label: str
    approximate: bool = True

    def count(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        batches = self.encoding.encode_ordinary_batch(texts, num_threads=os.cpu_count() or 1)
        return [len(b) for b in batches]

    def has_special(self, name: str) -> bool:
        return True  # counted as one token: most chat models have both

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
