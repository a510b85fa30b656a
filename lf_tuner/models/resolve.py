"""What the user names a model by (`--model`, `model_name_or_path`, cutoff's tokenizer) -> its files and facts.

In the order LLaMA-Factory 0.9.5 loads a model (model/loader.py, extras/misc.py):

1. a local directory (or a config.json path), as given;
2. with USE_MODELSCOPE_HUB / USE_OPENMIND_HUB set, the ModelScope / Modelers cache (LLaMA-Factory downloads
   through their SDKs then);
3. the user's Hugging Face cache (HF_HOME, HF_HUB_CACHE, the revision refs/ points to);
4. lf-tuner's catalog, for a Hub id it ships the config.json facts of (the published config, so the download
   of step 5 would fetch the same file: skipping it keeps `estimate` offline and fast);
5. unless HF_HUB_OFFLINE is set: config.json alone (the tokenizer files for cutoff) from the Hub.

Short names (`Qwen2.5-7B`, LLaMA-Factory's `Qwen2.5-7B-Instruct`) stand for their Hub id.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lf_tuner.errors import LfTunerError
from lf_tuner.models import catalog, hub
from lf_tuner.models.arch import ModelArch
from lf_tuner.models.config import arch_from_config


@dataclass
class _Search:
    """Where a model was looked for, for the error that lists them."""

    spec: str
    tried: list[str] = field(default_factory=list)


def _is_pathlike(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or spec.endswith(".json") or spec.count("/") > 1 or "\\" in spec


def _hub_ids(spec: str) -> tuple[str | None, catalog.Known | None]:
    """The Hub id a spec names (itself when it has the org/name form), and what the catalog knows of it."""
    if "/" in spec and not _is_pathlike(spec):
        return spec, catalog.lookup(spec, exact_only=True)
    known = catalog.lookup(spec)
    return (known.hf_id if known else None), known


def options_from_config(cfg: Mapping[str, Any]) -> hub.HubOptions:
    """model_revision, hf_hub_token and cache_dir of a LLaMA-Factory config."""

    def text(key: str) -> str | None:
        value = cfg.get(key)
        return str(value) if value not in (None, "") else None

    revision = text("model_revision")
    return hub.HubOptions(
        revision=None if revision == "main" else revision,
        token=text("hf_hub_token"),
        cache_dir=text("cache_dir"),
    )


def resolve_config(cfg: Mapping[str, Any]) -> ModelArch:
    """The model of a LLaMA-Factory config (`model_name_or_path` with its revision, token and cache_dir)."""
    model = cfg.get("model_name_or_path")
    if not model:
        raise LfTunerError("model_name_or_path: missing; set it in the config or pass --model")
    return resolve_model(str(model), options_from_config(cfg))


def resolve_model(spec: str, opts: hub.HubOptions | None = None) -> ModelArch:
    """A local directory or config.json, a Hub id, or a catalog/registered name -> its architecture."""
    spec = str(spec).strip()
    opts = opts or hub.HubOptions()
    path = Path(spec).expanduser()
    if path.is_dir():
        config = path / hub.CONFIG
        if not config.is_file():
            raise LfTunerError(
                f"{path} has no config.json; pass the directory of a downloaded Hugging Face model "
                "(the one holding config.json) or a model name from `lf-tuner models`"
            )
        return _from_file(config, spec, None, f"local directory {path}")
    if path.suffix == ".json" or path.is_file():
        if not path.is_file():
            raise LfTunerError(f"{path} does not exist; pass an existing config.json or model directory")
        return _from_file(path, spec, None, f"config file {path}")

    search = _Search(spec)
    if "/" in spec:
        search.tried.append(f"a local directory `{spec}` (there is none)")
    hub_id, known = _hub_ids(spec)
    template = _template(hub_id, known)
    found = _find_cached(spec, hub_id, hub.CONFIG, opts, search)
    if found is not None:
        file, where = found
        return _from_file(file, spec, template, where, hub_id or "")
    if known is not None and known.config is not None:
        return arch_from_config(
            dict(known.config.config),
            spec,
            template=template,
            hf_id=known.hf_id,
            source=f"lf-tuner's catalog ({known.config.key})",
        )
    search.tried.append("lf-tuner's catalog (no config.json facts for it)")
    if hub_id is not None and _downloadable(search):
        try:
            file = hub.download(hub_id, hub.CONFIG, opts)
        except hub.HubError as exc:
            raise LfTunerError(f"model `{spec}`: {exc}") from None
        return _from_file(file, spec, template, f"downloaded from {hub.endpoint()}", hub_id)
    raise LfTunerError(_unknown(search, hub_id, known))


def _template(hub_id: str | None, known: catalog.Known | None) -> str | None:
    if known is not None and known.template:
        return known.template
    reg = catalog.registered(hub_id) if hub_id else None
    return reg.template if reg and reg.template else None


def _from_file(path: Path, name: str, template: str | None, where: str, hf_id: str = "") -> ModelArch:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LfTunerError(f"{path}: cannot read it as JSON ({exc}); pass a model's config.json") from None
    if not isinstance(raw, dict):
        raise LfTunerError(f"{path}: expected a JSON object; pass a model's config.json")
    return arch_from_config(raw, name, template=template, hf_id=hf_id, source=where)


def _other_hub_ids(spec: str, hub_id: str | None) -> tuple[str | None, str | None]:
    """The ModelScope and Modelers ids of a model: the spec itself, or what LLaMA-Factory registers for it."""
    reg = catalog.registered(hub_id) if hub_id else None
    if reg is None and "/" not in spec:
        reg = catalog.registry().get(spec)
    base = spec if "/" in spec and not _is_pathlike(spec) else None
    return (reg.ms if reg and reg.ms else base), (reg.om if reg and reg.om else base)


def _find_cached(
    spec: str, hub_id: str | None, filename: str, opts: hub.HubOptions, search: _Search
) -> tuple[Path, str] | None:
    """A file of the model in the caches LLaMA-Factory would use, in its order."""
    ms_id, om_id = _other_hub_ids(spec, hub_id)
    if hub.env_true("USE_MODELSCOPE_HUB") and ms_id:
        file = hub.in_modelscope_cache(ms_id, filename)
        if file is not None:
            return file, f"ModelScope cache ({file.parent})"
        roots = " or ".join(str(r) for r in hub.modelscope_cache_roots())
        search.tried.append(f"the ModelScope cache ({roots}: no {ms_id})")
    if hub.env_true("USE_OPENMIND_HUB") and om_id:
        file = hub.in_openmind_cache(om_id, filename, opts)
        if file is not None:
            return file, f"Modelers cache ({file.parent})"
        search.tried.append(f"the Modelers cache ({hub.openmind_cache_root()}: no {om_id})")
    if hub_id is None:
        return None
    file = hub.in_hf_cache(hub_id, filename, opts)
    if file is not None:
        return file, f"Hugging Face cache ({file.parent})"
    rev = f" at revision {opts.revision}" if opts.revision else ""
    search.tried.append(f"the Hugging Face cache ({hub.hf_cache_root(opts)}: no {hub_id}{rev})")
    return None


def _downloadable(search: _Search) -> bool:
    if hub.offline():
        search.tried.append("a download (skipped: HF_HUB_OFFLINE is set)")
        return False
    return True


def _unknown(search: _Search, hub_id: str | None, known: catalog.Known | None) -> str:
    tried = "; ".join(search.tried) or "nothing"
    if known is not None or (hub_id and catalog.registered(hub_id)):
        reg = (known.registered if known else None) or catalog.registered(hub_id or "")
        what = f"`{search.spec}` is a LLaMA-Factory model" + (
            f" (template {reg.template})" if reg and reg.template else ""
        )
        return (
            f"{what}, but its config.json was not found. Tried: {tried}. Unset HF_HUB_OFFLINE to download "
            "config.json (a few KB), or pass the model directory"
        )
    near = catalog.closest(search.spec)
    hint = f" Closest: {', '.join(near)}." if near else ""
    return (
        f"unknown model `{search.spec}`. Tried: {tried}.{hint} Pass a local model directory (with config.json), "
        "a Hub id (downloaded when online), or a name from `lf-tuner models`"
    )


def find_tokenizer_dir(spec: str, opts: hub.HubOptions | None = None) -> Path:
    """The folder holding a model's tokenizer files: its local directory, a cache snapshot, or a download."""
    spec = str(spec).strip()
    opts = opts or hub.HubOptions()
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    if path.is_file():
        return path.parent
    search = _Search(spec)
    if "/" in spec:
        search.tried.append(f"a local directory `{spec}` (there is none)")
    hub_id, _ = _hub_ids(spec)
    for i, filename in enumerate(("tokenizer.json", "tokenizer_config.json")):
        found = _find_cached(spec, hub_id, filename, opts, search if i == 0 else _Search(spec))
        if found is not None:
            return found[0].parent
    if hub_id is not None and _downloadable(search):
        try:
            return hub.download_tokenizer(hub_id, opts)
        except hub.HubError as exc:
            raise LfTunerError(f"tokenizer of `{spec}`: {exc}") from None
    tried = "; ".join(search.tried) or "nothing"
    raise LfTunerError(
        f"no tokenizer for `{spec}`. Tried: {tried}. Pass --tokenizer DIR (the model's own), unset "
        "HF_HUB_OFFLINE to download the tokenizer files, or use --tiktoken o200k_base (approximate)"
    )


def model_template(spec: str) -> str | None:
    """The chat template LLaMA-Factory registers for a model (no config.json needed); None when unknown."""
    hub_id, known = _hub_ids(str(spec).strip())
    return _template(hub_id, known)
