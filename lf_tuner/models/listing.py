"""`lf-tuner models`: every model the catalog names, and whether it works offline, from the cache or online."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from lf_tuner.errors import LfTunerError
from lf_tuner.models import catalog, hub
from lf_tuner.models.config import FAMILIES, arch_from_config


@dataclass(frozen=True)
class ModelRow:
    name: str  # LLaMA-Factory's registered name, else lf-tuner's short name
    hf_id: str
    template: str | None
    available: (
        str  # "catalog": offline from lf-tuner's catalog; "cache": in the Hugging Face cache; "download"
    )
    model_type: str | None = None
    params: int | None = None  # None where counting needs transformers (a family outside the fast path)
    multimodal: bool = False
    registered: bool = True  # LLaMA-Factory 0.9.5 registers it
    ms_id: str | None = None
    om_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _facts(item: catalog.CatalogConfig) -> tuple[str | None, int | None, str | None]:
    """(model_type, parameters, template) of a catalog entry; no count or template outside the fast path."""
    model_type = str(item.config.get("model_type") or "") or None
    if model_type not in FAMILIES:
        return model_type, None, None  # counting it means building it with transformers: `estimate` does
    try:
        arch = arch_from_config(dict(item.config), item.key)
    except LfTunerError:
        return model_type, None, None
    return model_type, arch.total_params, arch.template


def list_models(query: str | None = None) -> list[ModelRow]:
    """LLaMA-Factory's registry, then the catalog's own ids, filtered by a case-insensitive substring."""
    rows: list[ModelRow] = []
    seen: set[str] = set()
    needle = (query or "").lower()
    root = hub.hf_cache_root()

    def available(hub_id: str, known: catalog.CatalogConfig | None) -> str:
        if known is not None:
            return "catalog"
        return "cache" if hub.repo_folder(root, hub_id).is_dir() else "download"

    for reg in catalog.registry().values():
        hub_id = reg.hf or ""
        if needle and needle not in reg.name.lower() and needle not in hub_id.lower():
            continue
        known = catalog.configs().get(hub_id.lower())
        model_type, params, _ = _facts(known) if known else (None, None, None)
        rows.append(
            ModelRow(
                reg.name,
                hub_id,
                reg.template,
                available(hub_id, known),
                model_type,
                params,
                reg.multimodal,
                True,
                reg.ms,
                reg.om,
            )  # fmt: skip
        )
        seen.add(hub_id.lower())
    for item in catalog.entries():
        facts = None  # the same for every id of the entry: computed once, when one is listed
        for hub_id in item.ids:
            if hub_id.lower() in seen or (needle and needle not in hub_id.lower()):
                continue
            seen.add(hub_id.lower())
            model_type, params, template = facts = facts or _facts(item)
            name = item.names[0] if item.names and hub_id == item.key else hub_id.rsplit("/", 1)[-1]
            rows.append(ModelRow(name, hub_id, template, "catalog", model_type, params, registered=False))
    return rows
