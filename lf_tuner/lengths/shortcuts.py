"""Exact shortcuts to a tokenizer's token counts: each distinct pre-token (byte-level BPE) or word (SentencePiece
BPE) goes through the BPE model once and is remembered; a text's count is the sum. Each shortcut is built only for
a pipeline it reproduces, and checked against `encode` on probes when built.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- the pre-token shortcut

# GPT-2's pre-tokenizer regex: what `ByteLevel(use_regex=True)` splits with (tokenizers `byte_level.rs`).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
_ASCII_IDENTITY_NORMALIZERS = {"NFC", "NFD", "NFKC", "NFKD"}
_BYTES = (1 << 32) - 1
_PRETOKEN_CACHE_MAX = 1_000_000  # distinct pre-tokens remembered (some 100 MB); forgotten when full
# Checked against `encode` when the shortcut is built: contractions, runs of blanks, digits, control characters.
BYTE_LEVEL_PROBES = (
    "Hello, world! It's 2024: naive   spacing\n\n\tTabs\r\nand CRLF.  x  ",
    "I'LL DO IT'S won't 'Tis  ?!... ---> __init__(self, x=1_000_000) # 3.14159e-10\n\n\n",
    " leading space\n  indented\n    code()\n\ttab\t\t end  \n",
    "a1b22c333d4444 12345678901234567890 $5.99 100% <b>html</b> http://x.io/a?b=c&d=e",
    " ",
    "\n",
    "\r\n\r\n  \t",
    "a\x0bb\x0c c\x1c'd\x1f e\x00\x7f \x1c\n\x0b\x0b x",
    "'s's 's ''' \"quoted\" ``` ```python\nprint('hi')\n```",
)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table, as the `ByteLevel` pre-tokenizer maps bytes."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


_ASCII_TO_BYTE_LEVEL = str.maketrans({chr(b): c for b, c in _bytes_to_unicode().items() if b < 128})
_MINOR_CATEGORIES = {
    "L": "ultmo",
    "M": "nce",
    "N": "dlo",
    "P": "cdsefio",
    "S": "mcko",
    "Z": "slp",
    "C": "cfson",
}
_CATEGORIES = {*_MINOR_CATEGORIES, *(m + c for m, minors in _MINOR_CATEGORIES.items() for c in minors)}


def _ascii_members(category: str) -> str | None:
    """The ASCII characters of a Unicode general category (`L`, `Lu`, `N`, ...), escaped for a `[...]`."""
    if category not in _CATEGORIES:
        return None
    codes = [c for c in range(128) if unicodedata.category(chr(c)).startswith(category)]
    runs: list[str] = []  # as ranges: `re` matches [A-Za-z] faster than the 52 letters listed
    while codes:
        end = 0
        while end + 1 < len(codes) and codes[end + 1] == codes[0] + end + 1:
            end += 1
        first, last = re.escape(chr(codes[0])), re.escape(chr(codes[end]))
        runs.append(first if end == 0 else f"{first}{last}" if end == 1 else f"{first}-{last}")
        codes = codes[end + 1 :]
    return "".join(runs)


def ascii_pattern(pattern: str) -> re.Pattern[bytes] | None:
    """An Oniguruma pre-tokenizer regex as a bytes `re` pattern that splits ASCII text the same way, or None.

    `\\p{X}` for a general category becomes its ASCII members: exact on ASCII input, the only input the
    shortcut gives it. A bytes pattern is faster than a str one and its `\\s` is ASCII's, as Oniguruma's is on
    ASCII (a str pattern also takes \\x1c-\\x1f for blanks). Anchors, back-references, nested classes, flags
    other than `(?i:`, capture groups (where the engines could differ, or `findall` would return groups) and
    non-ASCII characters give None.
    """
    out: list[str] = []
    i, n = 0, len(pattern)
    in_class = False
    while i < n:
        c = pattern[i]
        if c == "\\":
            nxt = pattern[i + 1 : i + 2]
            if nxt in ("p", "P"):
                end = pattern.find("}", i)
                members = _ascii_members(pattern[i + 3 : end]) if pattern[i + 2 : i + 3] == "{" else None
                if members is None or end < 0 or (nxt == "P" and in_class):
                    return None
                members = members or r"\x80"  # no ASCII member: \x80 never occurs in ASCII text
                out.append(members if in_class else f"[{'^' if nxt == 'P' else ''}{members}]")
                i = end + 1
                continue
            if not nxt or nxt in "AzZbBGKRXkghxuoc0123456789":
                return None  # anchors, back-references, code-point escapes: not worth proving equal
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            if c == "[" or pattern.startswith("&&", i):
                return None  # nested classes and intersections are Oniguruma's own
            in_class = c != "]"
        elif c == "[":
            first = i + 2 if pattern[i + 1 : i + 2] == "^" else i + 1
            if pattern[first : first + 1] in ("]", "["):
                return None
            in_class = True
            out.append(pattern[i:first])
            i = first
            continue
        elif c in "^$" or (c == "(" and pattern[i + 1 : i + 2] == "?" and not _plain_group(pattern, i)):
            return None
        out.append(c)
        i += 1
    try:
        compiled = re.compile("".join(out).encode("ascii"))
    except (re.error, UnicodeEncodeError):  # e.g. possessive quantifiers before Python 3.11
        return None
    return compiled if compiled.groups == 0 and not in_class else None


def _plain_group(pattern: str, i: int) -> bool:
    return pattern.startswith(("(?:", "(?=", "(?!", "(?<=", "(?<!", "(?>", "(?i:"), i)


def _splitter(literals: list[str]) -> Callable[[bytes], list[bytes]] | None:
    """`re.split` on any of the literals, the longest first: the leftmost-longest match added tokens get."""
    words = sorted({w.encode() for w in literals if w}, key=len, reverse=True)
    if not words:
        return None
    return re.compile(b"|".join(map(re.escape, words))).split


@dataclass
class PretokenCounter:
    """Exact lengths of ASCII text for a byte-level BPE tokenizer, one BPE call per distinct pre-token.

    `encode` cuts text at added tokens (the un-normalized ones, then the normalized ones in what is left),
    normalizes (the identity on ASCII for NFC/NFKC/NFD/NFKD), splits it with the pre-tokenizer regex, maps
    each piece's bytes to GPT-2's byte characters and runs BPE on each piece alone. This class makes the
    same cuts with `re` on ASCII text (as bytes) and remembers each pre-token's length.
    """

    model: Any
    split: Callable[[bytes], list[bytes]]
    added_raw: Callable[[bytes], list[bytes]] | None
    added_normalized: Callable[[bytes], list[bytes]] | None
    lengths: _PretokenLengths = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.lengths = _PretokenLengths(self.model)

    @classmethod
    def build(cls, tokenizer: Any) -> PretokenCounter | None:
        """The shortcut for this tokenizer, or None where its pipeline is not one this class reproduces."""
        try:
            spec = json.loads(tokenizer.to_str())
        except Exception:  # a tokenizer that cannot describe itself stays on encode
            return None
        pattern = _byte_level_pattern(spec.get("pre_tokenizer"))
        model = spec.get("model") or {}
        if (
            pattern is None
            or model.get("type") != "BPE"
            or model.get("dropout")
            or not _ascii_identity(spec.get("normalizer"))
            or getattr(tokenizer, "encode_special_tokens", False)
        ):
            return None
        compiled = ascii_pattern(pattern)
        if compiled is None:
            return None
        raw: list[str] = []
        normalized: list[str] = []
        for token in tokenizer.get_added_tokens_decoder().values():
            if token.lstrip or token.rstrip or token.single_word:
                return None
            (normalized if token.normalized else raw).append(token.content)
        counter = cls(tokenizer.model, compiled.findall, _splitter(raw), _splitter(normalized))
        probes = [*BYTE_LEVEL_PROBES, *(f"x{t}y {t} {t}{t}\n{t}" for t in raw + normalized)]
        expected = [len(e.ids) for e in tokenizer.encode_batch_fast(probes, add_special_tokens=False)]
        if list(map(counter.count, probes)) != expected:
            log.warning("tokenizer: the pre-token shortcut disagrees with encode on a probe; not using it")
            return None
        return counter

    def count(self, text: str) -> int:
        """The token count of `text`, or -1 where the text is not for the shortcut (not ASCII)."""
        if not text.isascii():
            return -1
        data = text.encode("ascii")
        parts = self.added_raw(data) if self.added_raw else [data]
        total = len(parts) - 1  # one token per added token
        if self.added_normalized:
            cut = [p for part in parts for p in self.added_normalized(part)]
            total += len(cut) - len(parts)
            parts = cut
        length = self.lengths.__getitem__
        for part in parts:
            if part:
                packed = sum(map(length, self.split(part)))
                if packed & _BYTES != len(part):
                    return -1  # the regex skipped characters (pre-tokens of their own): encode counts those
                total += packed >> 32
        return total


class _PretokenLengths(dict[bytes, int]):
    """Pre-token -> its token count << 32 | its length in bytes (one `sum` gives both; the length shows whether
    the regex covered the text). A pre-token not seen yet goes through the BPE model in `__missing__`, which
    `dict.__getitem__` calls: lookups stay in C, no second pass over a text's pre-tokens."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.tokenize = model.tokenize

    def __missing__(self, word: bytes) -> int:
        if len(self) >= _PRETOKEN_CACHE_MAX:
            self.clear()
        value = len(self.tokenize(word.decode("ascii").translate(_ASCII_TO_BYTE_LEVEL))) << 32 | len(word)
        self[word] = value
        return value


def _byte_level_pattern(pre: Any) -> str | None:
    """The split regex of a byte-level pre-tokenizer this module reproduces, else None."""
    if not isinstance(pre, dict):
        return None
    if pre.get("type") == "ByteLevel":
        return GPT2_PATTERN if pre.get("use_regex", True) and not pre.get("add_prefix_space") else None
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else None
    if not isinstance(steps, list) or len(steps) != 2:
        return None
    split, byte_level = steps
    pattern = split.get("pattern") if split.get("type") == "Split" else None
    if (
        not isinstance(pattern, dict)
        or not isinstance(pattern.get("Regex"), str)
        or split.get("behavior") != "Isolated"
        or split.get("invert")
        or byte_level.get("type") != "ByteLevel"
        or byte_level.get("use_regex", True)
        or byte_level.get("add_prefix_space")
    ):
        return None
    return str(pattern["Regex"])


def _ascii_identity(normalizer: Any) -> bool:
    """Whether the normalizer leaves ASCII text as it is (none, or Unicode normal forms)."""
    if normalizer is None:
        return True
    if not isinstance(normalizer, dict):
        return False
    if normalizer.get("type") == "Sequence":
        return all(_ascii_identity(n) for n in normalizer.get("normalizers") or [])
    return normalizer.get("type") in _ASCII_IDENTITY_NORMALIZERS


# ---------------------------------------------------------------- the SentencePiece (Metaspace) shortcut

METASPACE = "\u2581"
# Checked against `encode` when the shortcut is built: runs of spaces, leading/trailing spaces, non-ASCII text.
SENTENCEPIECE_PROBES = (
    "Hello, world! It's 2024:  double  spaces   and\ttabs\nnew lines.\n\n  indented\n",
    " leading space", "trailing space ", "   ", "", "a", "\u00fcber caf\u00e9 na\u00efve \u6771\u4eac \U0001f600 emoji",
    "def f(x):\n    return x * 2  # comment\n", "x" * 40 + " " + "y" * 3,
    "Single spaces: words, punctuation. Numbers 123 4567! (brackets) [x] {y} end \u2581marker",
    "a b", "x\ny z\n\nw", "tail ", "\u00e9t\u00e9 d\u00e9j\u00e0 vu",
)  # fmt: skip


@dataclass
class MetaspaceCounter:
    """Exact lengths for a SentencePiece-style BPE tokenizer (`Metaspace` pre-tokenizer with `split=False`, or
    the older `Prepend("\u2581")` + `Replace(" ", "\u2581")` normalizer), one BPE call per distinct chunk.

    Such a tokenizer runs BPE over a whole section of text (between added tokens) with spaces as "\u2581". A
    merge can only join two symbols into a vocabulary token, so where no token holds "c\u2581" for a character
    c other than "\u2581", no token ever spans a "\u2581" that follows such a c: the section splits there into
    chunks that BPE encodes alone to the same tokens. Each distinct chunk goes through the model once.
    """

    model: Any
    added: Callable[[str], list[str]] | None
    prepend: str  # "always", "first" (the text's first section only), "never", or "normalizer" (old layout)
    chunks: Callable[[str], list[str]]
    simple: bool = False  # no token holds "c\u2581" for a c other than "\u2581": chunks are words
    barriers: str = ""  # characters no merge touches: a chunk splits around them (see `_barriers`)
    lengths: _ChunkLengths = field(init=False, repr=False)
    spaced: _ChunkLengths = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.lengths = lengths = _ChunkLengths(self.model, "", self.barriers)
        self.spaced = lengths.spaced = _ChunkLengths(self.model, METASPACE, self.barriers, lengths)
        self.spaced.marks = "\n" in self.barriers

    @classmethod
    def build(cls, tokenizer: Any) -> MetaspaceCounter | None:
        """The shortcut for this tokenizer, or None where its pipeline is not one this class reproduces."""
        try:
            spec = json.loads(tokenizer.to_str())
        except Exception:
            return None
        model = spec.get("model") or {}
        if (
            model.get("type") != "BPE"
            or model.get("dropout")
            or model.get("continuing_subword_prefix")
            or model.get("end_of_word_suffix")
            or getattr(tokenizer, "encode_special_tokens", False)
        ):
            return None
        prepend = _metaspace_scheme(spec.get("normalizer"), spec.get("pre_tokenizer"))
        if prepend is None:
            return None
        added: list[str] = []
        for token in tokenizer.get_added_tokens_decoder().values():
            if token.lstrip or token.rstrip or token.single_word:
                return None
            added.append(token.content)
        vocab = tokenizer.get_vocab(with_added_tokens=False)
        before = {tok[i - 1] for tok in vocab for i in range(1, len(tok)) if tok[i] == METASPACE}
        before.discard(METASPACE)
        joiners = "".join(re.escape(c) for c in sorted(before))
        m = METASPACE
        barriers = _barriers(vocab, model)
        b = re.escape(barriers)
        # chunks: runs of "\u2581" and what follows them up to the next "\u2581"; each barrier is one of its own
        pattern = f"{m}*(?:[^{m}{joiners}{b}]|[{joiners}]{m}*)+|{m}+" if joiners else f"{m}*[^{m}{b}]+|{m}+"
        if barriers:
            pattern += f"|[{b}]"
        words = sorted({w for w in added if w}, key=len, reverse=True)
        split = re.compile("|".join(map(re.escape, words))).split if words else None
        counter = cls(
            tokenizer.model,
            split,
            prepend,
            re.compile(pattern).findall,
            simple=not joiners,
            barriers=barriers,
        )
        probes = [
            *SENTENCEPIECE_PROBES,
            *(f"x{t}y {t} {t}{t}\n{t} z" for t in added),
            *(f"{t} lead" for t in added),
        ]
        expected = [len(e.ids) for e in tokenizer.encode_batch_fast(probes, add_special_tokens=False)]
        if list(map(counter.count, probes)) != expected:
            log.warning(
                "tokenizer: the SentencePiece shortcut disagrees with encode on a probe; not using it"
            )
            return None
        return counter

    def count(self, text: str) -> int:
        parts = self.added(text) if self.added else [text]
        total = len(parts) - 1
        length = self.lengths.__getitem__
        chunks = self.chunks
        newline = self.spaced.marks
        for i, part in enumerate(parts):
            if not part:
                continue
            prefix = self.prepend == "normalizer" or (
                not part.startswith((" ", METASPACE))
                and (self.prepend == "always" or (self.prepend == "first" and i == 0))
            )
            if (
                self.simple
                and "  " not in part
                and METASPACE not in part
                and not (prefix and part[0] == " ")
                and not (newline and _MARK in part)  # the tables read a leading _MARK as a line break's
            ):
                # no two spaces in a row: "\u2581" + each word is a chunk (str.split is C, a regex is not); a
                # leading space gives an empty first word (no prefix then: the section starts with "\u2581").
                # Where no merge touches "\n", each becomes a word of its own, and the word after it is marked
                # as one without the "\u2581" (`_ChunkLengths`): "a.\n\nB" -> "a.", "\n", "", "\n", "B" unmarked
                if newline and "\n" in part:
                    part = part.replace("\n", _NEWLINE_WORDS)
                first, *rest = part.split(" ")
                total += length(METASPACE + first if prefix else first) + sum(
                    map(self.spaced.__getitem__, rest)
                )
                continue
            section = part.replace(" ", METASPACE)
            total += sum(map(length, chunks(METASPACE + section if prefix else section)))
        return total


_MARK = "\x01"  # marks a word that follows a line break (text that holds this character is not rewritten)
_NEWLINE_WORDS = f" \n {_MARK}"


class _ChunkLengths(dict[str, int]):
    """Chunk -> its token count (of `prefix` + chunk), through the BPE model on first sight.

    A chunk that holds barrier characters (no merge touches them) is the sum of its parts: the text before the
    first barrier (with the prefix), each barrier, and the text between and after them (counted in `plain`,
    without the prefix). Words joined by line breaks ("end.\n\nNext") then cost lookups, not a BPE call.
    The two tables of a counter share their work: "\u2581word" without a prefix is "word" with it (`spaced`).
    """

    spaced: dict[str, int] | None = None
    marks = False  # the table of words after a space, in text where each "\n" is a word (`MetaspaceCounter`)

    def __init__(
        self, model: Any, prefix: str = "", barriers: str = "", plain: dict[str, int] | None = None
    ) -> None:
        super().__init__()
        self.tokenize = model.tokenize
        self.prefix = prefix
        self.plain = self if plain is None else plain
        self.cut = re.compile(f"([{re.escape(barriers)}])").split if barriers else None
        self.barrier_counts = {c: len(model.tokenize(c)) for c in barriers}

    def __missing__(self, chunk: str) -> int:
        if self.marks and chunk[:1] in ("\n", _MARK):
            # a line break of its own, or the word after one: no "\u2581" before either
            value = self[chunk] = self.barrier_counts["\n"] if chunk == "\n" else self.plain[chunk[1:]]
            return value
        if len(self) >= _PRETOKEN_CACHE_MAX:
            self.clear()
        parts = self.cut(chunk) if self.cut is not None else None
        if parts is not None and len(parts) > 1:
            # parts: text, barrier, text, barrier, ..., text
            value = self[parts[0]] + sum(map(self.barrier_counts.__getitem__, parts[1::2]))
            value += sum(map(self.plain.__getitem__, parts[2::2]))
        elif self.spaced is not None and chunk[:1] == METASPACE and chunk[1:2] not in ("", METASPACE, _MARK):
            value = self.spaced[chunk[1:]]
        else:
            value = len(self.tokenize(self.prefix + chunk)) if chunk or self.prefix else 0
        self[chunk] = value
        return value


def _barriers(vocab: dict[str, int], model: dict[str, Any]) -> str:
    """ASCII characters that no BPE merge touches: in no vocabulary token longer than one character (a merge
    makes a token of its two sides), and one token of their own or, with byte fallback, a byte token that no
    merge touches either. BPE on "a" + c + "b" is then BPE("a"), c's token, BPE("b"): no pair crosses c.
    None where the model takes a whole word from the vocabulary before merging (`ignore_merges`)."""
    if model.get("ignore_merges"):
        return ""
    long_tokens = [t for t in vocab if len(t) > 1]
    merged = set().union(*long_tokens)
    found = []
    for code in range(128):
        c = chr(code)
        if c == " " or c in merged:
            continue
        byte = f"<0x{code:02X}>"
        if c in vocab or (
            model.get("byte_fallback")
            and byte in vocab
            and not any(byte in t for t in long_tokens if t != byte)
        ):
            found.append(c)
    return "".join(found)


def _metaspace_scheme(normalizer: Any, pre: Any) -> str | None:
    """How a SentencePiece-style tokenizer prepends "\u2581", or None where it is not one this module knows."""
    if normalizer is None and isinstance(pre, dict) and pre.get("type") == "Metaspace":
        if pre.get("replacement") != METASPACE or pre.get("split", True):
            return None
        scheme = pre.get("prepend_scheme", "always" if pre.get("add_prefix_space", True) else "never")
        return str(scheme) if scheme in ("always", "first", "never") else None
    if pre is None and old_llama_normalizer(normalizer):
        return "normalizer"
    return None


def old_llama_normalizer(normalizer: Any) -> bool:
    """`Sequence([Prepend("\u2581"), Replace(" ", "\u2581")])`: the Llama-2 tokenizer.json of transformers 4."""
    if not isinstance(normalizer, dict) or normalizer.get("type") != "Sequence":
        return False
    steps = normalizer.get("normalizers") or []
    return (
        len(steps) == 2
        and steps[0].get("type") == "Prepend"
        and steps[0].get("prepend") == METASPACE
        and steps[1].get("type") == "Replace"
        and steps[1].get("pattern") == {"String": " "}
        and steps[1].get("content") == METASPACE
    )
