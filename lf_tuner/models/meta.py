"""Any architecture: build the model with transformers' own class on the meta device and read its parameters.

For a `model_type` the fast path (`models.config`) does not know. The model is built the way LLaMA-Factory
0.9.5 loads it (`model/loader.py`: AutoModelForImageTextToText for image-text configs, else AutoModelForCausalLM)
but on the meta device, so no memory is allocated and no weights are read. Parameter shapes, linear layers,
experts (3-D parameters) and tied embeddings come from the model itself; the vision tower and projector are
split with LLaMA-Factory's own name fragments (COMPOSITE_MODELS, snapshotted in registry.json).

torch and transformers are imported here only, and the result is cached per config (a JSON file under
$LF_TUNER_HOME/cache/models, else ~/.cache/lf-tuner/models), so the next estimate of the same config is fast.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from collections import Counter
from dataclasses import fields
from importlib import metadata
from pathlib import Path
from typing import Any

from lf_tuner.errors import LfTunerError
from lf_tuner.models.arch import Linear, ModelArch, VisionTower

CACHE_VERSION = 1
# keys of a config.json that do not change the architecture, or that from_config must not see
_IGNORED_KEYS = ("quantization_config", "auto_map", "architectures", "transformers_version", "_name_or_path")


def cache_dir() -> Path:
    """Where derived architectures are kept: $LF_TUNER_HOME/cache/models, else the user cache directory."""
    home = os.environ.get("LF_TUNER_HOME")
    if home:
        return Path(home).expanduser() / "cache" / "models"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "lf-tuner" / "models"


def _transformers_version() -> str:
    """The installed transformers' version, from its dist-info folder's name (importlib.metadata scans every
    distribution: 50 ms, a sixth of the time `estimate` may take)."""
    spec = importlib.util.find_spec("transformers")
    if spec is None or spec.origin is None:
        return ""
    found = sorted(Path(spec.origin).parent.parent.glob("transformers-*.dist-info"))
    if found:
        return found[-1].name[len("transformers-") : -len(".dist-info")]
    try:
        return metadata.version("transformers")
    except metadata.PackageNotFoundError:
        return ""


def cache_path(raw: dict[str, Any]) -> Path:
    """The cache file of one config (and transformers version: a new release may change a model's layout)."""
    arch_part = {k: v for k, v in raw.items() if k not in _IGNORED_KEYS}
    blob = json.dumps([CACHE_VERSION, _transformers_version(), arch_part], sort_keys=True, default=str)
    return cache_dir() / f"{hashlib.sha256(blob.encode()).hexdigest()[:24]}.json"


def arch_from_transformers(raw: dict[str, Any], name: str) -> ModelArch:
    """The architecture of any config transformers knows, from the model it builds on the meta device."""
    path = cache_path(raw)
    facts = _read_cache(path)
    when = "now"
    if facts is None:
        facts = derive(raw, name)
        _write_cache(path, facts)
    else:
        when = "earlier"
    note = (
        f"architecture derived {when} from transformers' {facts['class']} on the meta device (cache: {path})"
    )
    return _arch(facts, name, note)


def _read_cache(path: Path) -> dict[str, Any] | None:
    try:
        facts = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return facts if isinstance(facts, dict) and facts.get("version") == CACHE_VERSION else None


def _write_cache(path: Path, facts: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(facts, indent=1), encoding="utf-8")
        tmp.replace(path)
    except OSError:
        pass  # a read-only home only costs the next run the derivation again


# the facts a cache file holds as ModelArch holds them (the linears and the vision tower are rebuilt)
_AS_THEY_ARE = {f.name for f in fields(ModelArch)} - {"name", "layer_linears", "vision"}


def _arch(facts: dict[str, Any], name: str, note: str) -> ModelArch:
    vision = facts.get("vision")
    return ModelArch(
        name=name,
        **{key: value for key, value in facts.items() if key in _AS_THEY_ARE},
        layer_linears=tuple(Linear(*row) for row in facts["layer_linears"]),
        vision=None
        if vision is None
        else VisionTower(**{**vision, "linears": tuple(Linear(*row) for row in vision["linears"])}),
        derived_by="transformers",
        notes=(note,),
    )


# --------------------------------------------------------------------------------------------------------
# The derivation (torch and transformers from here on)


def _load_transformers(name: str, model_type: str) -> Any:
    try:
        import torch  # noqa: F401
        import transformers
    except ImportError:
        raise LfTunerError(
            f"{name}: model_type `{model_type}` is not one lf-tuner's fast path knows, and transformers is not "
            "installed to derive it from the model's own class; install the training stack "
            "(pip install 'lf-tuner[train]') or pass a model of a known family (`lf-tuner models`)"
        ) from None
    return transformers


def build_on_meta(raw: dict[str, Any], name: str) -> Any:
    """The model LLaMA-Factory would load for this config, built on the meta device (no memory, no weights)."""
    model_type = str(raw.get("model_type") or "")
    transformers = _load_transformers(name, model_type)
    import torch
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        raise LfTunerError(
            f"{name}: model_type `{model_type or '?'}` is unknown to transformers {transformers.__version__}: the "
            "checkpoint needs its own modeling code (trust_remote_code), which lf-tuner does not run; "
            "estimate a model of a known family instead (`lf-tuner models`)"
        )
    kwargs = {k: v for k, v in raw.items() if k not in (*_IGNORED_KEYS, "model_type")}
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        config = AutoConfig.for_model(model_type, **kwargs)
        with torch.device("meta"):
            model = _model_class(config).from_config(config)
    except LfTunerError:
        raise
    except Exception as exc:  # transformers names what it could not build
        raise LfTunerError(
            f"{name}: transformers cannot build `{model_type}` from this config.json ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else exc}); check the config, or pass a known model"
        ) from None
    finally:
        transformers.logging.set_verbosity(verbosity)
    return model


def _model_class(config: Any) -> Any:
    """The auto class LLaMA-Factory 0.9.5 picks (model/loader.py load_model)."""
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
        AutoModelForSeq2SeqLM,
        AutoModelForTextToWaveform,
    )

    for auto in (AutoModelForImageTextToText, AutoModelForSeq2SeqLM, AutoModelForTextToWaveform):
        if type(config) in auto._model_mapping:
            return auto
    return AutoModelForCausalLM


def _first_int(obj: Any, *keys: str, default: int = 0) -> int:
    for key in keys:
        value = getattr(obj, key, None)
        if isinstance(value, list | tuple) and value:
            value = value[0]
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return default


def _leaf(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _linear_shape(module: Any) -> tuple[int, int, bool] | None:
    """(in, out, bias) of a linear module: nn.Linear and its subclasses, and GPT-2's Conv1D."""
    kind = type(module).__name__
    weight = getattr(module, "weight", None)
    if weight is None or weight.dim() != 2 or "Embedding" in kind:
        return None
    bias = getattr(module, "bias", None) is not None
    if "Linear" in kind:
        return int(weight.shape[1]), int(weight.shape[0]), bias
    if kind == "Conv1D":
        return int(weight.shape[0]), int(weight.shape[1]), bias
    return None


def _rows(counter: Counter[tuple[str, int, int, bool, bool]]) -> list[list[Any]]:
    return [[n, i, o, b, e, count] for (n, i, o, b, e), count in sorted(counter.items())]


def derive(raw: dict[str, Any], name: str) -> dict[str, Any]:
    """The parameter inventory and text facts of the model transformers builds for this config."""
    from lf_tuner.models.catalog import composite_keys

    model = build_on_meta(raw, name)
    config = model.config
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    model_type = str(raw.get("model_type"))
    keys = composite_keys(model_type)

    def part(param_name: str) -> str:
        if keys and any(k in param_name for k in keys["projector"]):
            return "projector"
        if keys and any(k in param_name for k in keys["vision"]):
            return "vision"
        return "language"

    params = dict(model.named_parameters())  # tied weights listed once
    sizes = {n: int(p.numel()) for n, p in params.items()}
    by_part = Counter({"language": 0, "vision": 0, "projector": 0})
    for n, size in sizes.items():
        by_part[part(n)] += size

    layers = _first_int(text, "num_hidden_layers", "num_layers", "n_layer")
    prefix = _decoder_prefix(model, layers, part)
    if prefix is None:
        raise LfTunerError(
            f"{name}: cannot find the {layers} decoder layers in transformers' {type(model).__name__}"
        )

    embed = model.get_input_embeddings()
    out = model.get_output_embeddings()
    tied = out is None or getattr(out, "weight", None) is getattr(embed, "weight", None)
    lm_head = 0 if tied else sum(int(p.numel()) for p in out.parameters())
    embedding = sum(
        size
        for n, size in sizes.items()
        if part(n) == "language" and not n.startswith(prefix + ".") and _is_embedding(model, n)
    )

    linears: Counter[tuple[str, int, int, bool, bool]] = Counter()
    in_linears = 0
    pattern = re.compile(re.escape(prefix) + r"\.\d+\.")
    for mod_name, module in model.named_modules():
        if not pattern.match(mod_name + ".") or part(mod_name + ".") != "language":
            continue
        shape = _linear_shape(module)
        if shape is not None:
            linears[(_leaf(mod_name), *shape, False)] += 1
            in_linears += sum(int(p.numel()) for p in module.parameters(recurse=False))
    experts = _first_int(text, "num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")
    in_layers = 0
    for n, size in sizes.items():
        if not pattern.match(n):
            continue
        in_layers += size
        p = params[n]
        if p.dim() == 3 and experts and int(p.shape[0]) == experts and part(n) == "language":
            linears[(_leaf(n), int(p.shape[2]), int(p.shape[1]), False, True)] += 1
            in_linears += size

    hidden = _first_int(text, "hidden_size", "d_model", "n_embd")
    heads = _first_int(text, "num_attention_heads", "n_head")
    dense = [(i, o) for (n, i, o, b, e) in linears if not e and i == hidden]
    facts: dict[str, Any] = {
        "version": CACHE_VERSION,
        "class": type(model).__name__,
        "model_type": model_type,
        "hidden_size": hidden,
        "intermediate_size": _first_int(text, "intermediate_size", "ffn_hidden_size", "n_inner")
        or max((o for _, o in dense), default=4 * hidden),
        "num_layers": layers,
        "num_heads": heads,
        "num_kv_heads": _first_int(text, "num_key_value_heads", "num_kv_heads", default=heads),
        "head_dim": _first_int(text, "head_dim") or hidden // max(heads, 1),
        "vocab_size": _first_int(text, "vocab_size"),
        "tie_embeddings": bool(tied),
        "max_positions": _first_int(text, "max_position_embeddings", "n_positions", "seq_length"),
        "layer_linears": _rows(linears),
        "embedding_params": embedding,
        "lm_head_params": lm_head,
        "layer_other_params": in_layers - in_linears,
        "other_params": by_part["language"] - embedding - lm_head - in_layers,
        "num_experts": experts,
        "experts_per_token": _first_int(text, "num_experts_per_tok", "moe_topk", "moe_k", "top_k")
        if experts
        else 0,
        "moe_intermediate_size": _first_int(text, "moe_intermediate_size", "intermediate_size")
        if experts
        else 0,
        "logit_softcap": bool(getattr(text, "final_logit_softcapping", None)),
        "vision": _vision_facts(model, config, part, by_part)
        if by_part["vision"] + by_part["projector"]
        else None,
    }
    return facts


def _is_embedding(model: Any, param_name: str) -> bool:
    module_name = param_name.rsplit(".", 1)[0]
    module = model.get_submodule(module_name)
    return "Embedding" in type(module).__name__


def _decoder_prefix(model: Any, layers: int, part: Any) -> str | None:
    """The name of the language model's ModuleList of decoder layers."""
    import torch

    found = [
        n
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.ModuleList) and len(m) == layers and part(n + ".0.") == "language"
    ]
    return min(found, key=len) if found else None


def _vision_facts(model: Any, config: Any, part: Any, by_part: Counter[str]) -> dict[str, Any]:
    """The vision tower's linears and the facts its activations need."""
    linears: Counter[tuple[str, int, int, bool, bool]] = Counter()
    for mod_name, module in model.named_modules():
        if part(mod_name + ".") != "vision":
            continue
        shape = _linear_shape(module)
        if shape is not None:
            linears[(_leaf(mod_name), *shape, False)] += 1
    vc = getattr(config, "vision_config", None) or config
    hidden = _first_int(vc, "hidden_size", "embed_dim", "width")
    if getattr(vc, "embed_dim", None) and getattr(vc, "hidden_size", None) and vc.embed_dim != vc.hidden_size:
        hidden = int(vc.embed_dim)  # Qwen2-VL: hidden_size is the language model's width
    return {
        "params": by_part["vision"],
        "projector_params": by_part["projector"],
        "linears": _rows(linears),
        "hidden_size": hidden,
        "depth": _first_int(vc, "depth", "num_hidden_layers", "num_layers"),
        "intermediate_size": _first_int(vc, "intermediate_size")
        or hidden * _first_int(vc, "mlp_ratio", default=4),
        "patch_size": _first_int(vc, "patch_size", default=14),
        "merge_size": _first_int(vc, "spatial_merge_size", default=1),
        "temporal_patch_size": _first_int(vc, "temporal_patch_size", default=1),
        "image_size": _first_int(vc, "image_size"),
        "tokens_per_image": _first_int(config, "mm_tokens_per_image"),
    }
