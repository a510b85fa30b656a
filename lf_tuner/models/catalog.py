"""The built-in catalog: LLaMA-Factory's model registry and config.json subsets of the families users pick most.

Two data files ship in the wheel beside this module:

- `registry.json`, GENERATED from the installed LLaMA-Factory (`python scripts/gen_model_registry.py`): every name
  LLaMA-Factory 0.9.5 registers with its Hub ids and template, and how it splits vision-language models. A test
  fails when the installed llamafactory registers something else.
- `configs.json`, written by hand from the checkpoints' published config.json files: for each, the config.json
  keys the architecture needs (read by the same code as a user's config.json), the other Hub ids and short names
  that share it, and the parameter count the checkpoint publishes (a test holds the computed count to it).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Registered:
    """One name of LLaMA-Factory's registry (`extras/constants.py` register_model_group)."""

    name: str
    hf: str | None
    ms: str | None  # ModelScope id
    om: str | None  # Modelers (openMind) id
    template: str | None  # the template its group registers
    chat: bool  # LLaMA-Factory defaults to the template (chat, instruct, distill, thinking and multimodal models)
    multimodal: bool


@dataclass(frozen=True)
class CatalogConfig:
    """A config.json subset shipped in the catalog."""

    key: str  # the Hub id it was copied from
    config: dict[str, Any]
    ids: tuple[str, ...] = ()  # every Hub id with these facts (key first)
    names: tuple[str, ...] = ()  # lf-tuner's short names for it (Qwen2.5-7B)
    published_params: int = 0
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


def _load(name: str) -> Any:
    # beside this module in a checkout and in the wheel (importlib.resources would cost `estimate` its tempfile,
    # shutil, bz2 and lzma imports)
    return json.loads((Path(__file__).parent / name).read_text(encoding="utf-8"))


@cache
def _registry_data() -> dict[str, Any]:
    data: dict[str, Any] = _load("registry.json")
    return data


@cache
def registry() -> dict[str, Registered]:
    """LLaMA-Factory's registered names, in its order."""
    return {name: Registered(name=name, **entry) for name, entry in _registry_data()["models"].items()}


def composite_keys(model_type: str) -> dict[str, list[str]] | None:
    """How LLaMA-Factory splits a vision-language model_type into vision tower, projector and language model."""
    entry = _registry_data()["composite"].get(model_type)
    return dict(entry) if entry else None


@cache
def configs() -> dict[str, CatalogConfig]:
    """Hub id (lower case) -> the catalog's config.json subset for it."""
    raw: dict[str, dict[str, Any]] = _load("configs.json")
    table: dict[str, CatalogConfig] = {}

    def build(key: str) -> CatalogConfig:
        entry = raw[key]
        config = dict(entry["config"])
        if "extends" in entry:
            base = build(entry["extends"])
            config = {**base.config, **config}
        return CatalogConfig(
            key=key,
            config=config,
            ids=(key, *entry.get("ids", ())),
            names=tuple(entry.get("names", ())),
            published_params=int(entry.get("published_params", 0)),
            note=str(entry.get("note", "")),
        )

    for key in raw:
        if key.startswith("_"):
            continue  # the file's own comment
        item = build(key)
        for hub_id in item.ids:
            table.setdefault(hub_id.lower(), item)
    return table


def entries() -> list[CatalogConfig]:
    """Each config subset once, in the file's order."""
    return list({item.key: item for item in configs().values()}.values())


_SUFFIXES = re.compile(r"-(instruct|chat|it|pt|base|hf)$")


def short_key(name: str) -> str:
    """Lower case, without the organisation and the chat/instruct suffixes: `Qwen/Qwen2.5-7B-Instruct` -> qwen2.5-7b."""
    key = name.strip().lower().rsplit("/", 1)[-1]
    while True:
        stripped = _SUFFIXES.sub("", key)
        if stripped == key:
            return key
        key = stripped


@dataclass(frozen=True)
class Known:
    """What the catalog knows about a name: its Hub id, LLaMA-Factory's registration and a config subset."""

    hf_id: str
    registered: Registered | None
    config: CatalogConfig | None

    @property
    def template(self) -> str | None:
        return self.registered.template if self.registered else None


@cache
def _index() -> tuple[dict[str, str], dict[str, str]]:
    """(exact lower-case name or Hub id -> Hub id, short key -> Hub id)."""
    exact: dict[str, str] = {}
    short: dict[str, str] = {}
    for item in configs().values():
        for alias in (*item.names, *item.ids):
            exact.setdefault(alias.lower(), item.key)
            short.setdefault(short_key(alias), item.key)
    for reg in registry().values():
        if reg.hf:
            for alias in (reg.name, reg.hf):
                exact.setdefault(alias.lower(), reg.hf)
                short.setdefault(short_key(alias), reg.hf)
    return exact, short


@cache
def _by_hub_id() -> dict[str, Registered]:
    table: dict[str, Registered] = {}
    for reg in registry().values():
        for hub_id in (reg.hf, reg.ms, reg.om):
            if hub_id:
                table.setdefault(hub_id.lower(), reg)
    return table


def registered(hub_id: str) -> Registered | None:
    """LLaMA-Factory's registration of a Hub id (Hugging Face, ModelScope or Modelers)."""
    return _by_hub_id().get(hub_id.lower())


def lookup(spec: str, exact_only: bool = False) -> Known | None:
    """A catalog name, registered name or Hub id (any case; without org or -Instruct unless `exact_only`)."""
    exact, short = _index()
    hub_id = exact.get(spec.strip().lower())
    if hub_id is None and not exact_only:
        hub_id = short.get(short_key(spec))
    if hub_id is None:
        return None
    cfg = configs().get(hub_id.lower())
    reg = registered(spec) if "/" in spec else None
    return Known(hf_id=hub_id, registered=reg or registered(hub_id) or _registered_name(spec), config=cfg)


def _registered_name(spec: str) -> Registered | None:
    for reg in registry().values():
        if reg.name.lower() == spec.strip().lower():
            return reg
    return None


# --------------------------------------------------------------------------------------------------------
# "Closest": the same family at the nearest size


_SIZE = re.compile(r"(?:^|[-_.])((?:\d+x)?\d+(?:\.\d+)?)([bm])(?=$|[-_.])", re.IGNORECASE)


def family_size(name: str) -> tuple[str, float]:
    """(family, size in billions) of a model name: `Qwen/Qwen3-4B-Instruct-2507` -> (qwen3, 4.0); size 0 if none."""
    base = name.strip().lower().rsplit("/", 1)[-1]
    match = _SIZE.search(base)
    if not match:
        return short_key(base), 0.0
    number, unit = match.group(1), match.group(2).lower()
    if "x" in number:
        n_experts, each = number.split("x")
        value = float(n_experts) * float(each)
    else:
        value = float(number)
    family = base[: match.start()].rstrip("-_.")
    return family, value / 1000 if unit == "m" else value


def closest(spec: str, n: int = 3) -> list[str]:
    """Registered or catalog names of the same family as `spec`, nearest in size first."""
    import difflib
    import math

    family, size = family_size(spec)
    candidates: dict[str, tuple[str, float]] = {}
    for reg in registry().values():
        if reg.hf:
            candidates[reg.hf] = family_size(reg.hf)
    for item in configs().values():
        candidates.setdefault(item.key, family_size(item.key))
    families = {fam for fam, _ in candidates.values()}
    if family not in families:
        near = difflib.get_close_matches(family, sorted(families), n=1, cutoff=0.6)
        if not near:
            return difflib.get_close_matches(short_key(spec), sorted({short_key(k) for k in candidates}), n=n)
        family = near[0]

    def distance(item: tuple[str, tuple[str, float]]) -> tuple[float, int, str]:
        hub_id, (_, other) = item
        gap = abs(math.log(other / size)) if size and other else 99.0
        return gap, len(hub_id), hub_id

    same = sorted(((k, v) for k, v in candidates.items() if v[0] == family), key=distance)
    picked: list[str] = []
    for hub_id, _ in same:
        if hub_id not in picked:
            picked.append(hub_id)
        if len(picked) == n:
            break
    return picked
