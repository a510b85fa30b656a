"""Regenerate `registry.json` from the installed LLaMA-Factory's model registry (`extras/constants.py`).

Run with the training stack installed:  python scripts/gen_model_registry.py
`tests/test_models_registry.py` checks that the checked-in registry still matches the installed llamafactory.

Every registered name with its Hub ids (Hugging Face, ModelScope, Modelers) and the chat template its group
registers. LLaMA-Factory only *defaults* to that template for chat models (names with -Chat, -Distill, -Instruct,
-Thinking, and multimodal ones: `chat: true`); `DEFAULT_TEMPLATE` holds those, and the group's template is read
from the source because base models are registered with it too.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

TARGET = Path(__file__).with_name("registry.json")


def _group_templates(source: str) -> dict[str, str | None]:
    """Registered name -> the `template=` of its `register_model_group` call (None when it names none)."""
    out: dict[str, str | None] = {}
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "register_model_group"):
            continue
        kwargs = {kw.arg: kw.value for kw in node.keywords}
        template = kwargs.get("template")
        name = (
            template.value if isinstance(template, ast.Constant) and isinstance(template.value, str) else None
        )
        models = kwargs.get("models")
        if not isinstance(models, ast.Dict):
            raise ValueError(f"register_model_group at line {node.lineno}: models is not a literal dict")
        for key in models.keys:
            if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
                raise ValueError(f"register_model_group at line {node.lineno}: a model name is not a string")
            out[key.value] = name
    return out


def snapshot() -> dict[str, Any]:
    """The installed LLaMA-Factory's model registry as plain data."""
    import llamafactory
    from llamafactory.extras import constants

    templates = _group_templates(Path(constants.__file__).read_text(encoding="utf-8"))
    models: dict[str, dict[str, Any]] = {}
    for name, paths in constants.SUPPORTED_MODELS.items():
        template = templates[name]
        chat = name in constants.DEFAULT_TEMPLATE
        if chat and constants.DEFAULT_TEMPLATE[name] != template:
            raise ValueError(
                f"{name}: DEFAULT_TEMPLATE says {constants.DEFAULT_TEMPLATE[name]}, the group {template}"
            )
        models[name] = {
            "hf": paths.get(constants.DownloadSource.DEFAULT) or None,
            "ms": paths.get(constants.DownloadSource.MODELSCOPE) or None,
            "om": paths.get(constants.DownloadSource.OPENMIND) or None,
            "template": template,
            "chat": chat,
            "multimodal": name in constants.MULTIMODAL_SUPPORTED_MODELS,
        }
    return {
        "llamafactory_version": llamafactory.__version__,
        "composite": composite_models(),
        "models": models,
    }


def composite_models() -> dict[str, dict[str, list[str]]]:
    """model_type -> how LLaMA-Factory splits a vision-language model (`model/model_utils/visual.py`): the name
    fragments of its vision tower, projector and language model, and the modules LoRA must not touch."""
    from llamafactory.model.model_utils.visual import COMPOSITE_MODELS

    return {
        model_type: {
            "vision": list(c.vision_model_keys),
            "projector": list(c.projector_keys),
            "language": list(c.language_model_keys),
            "lora_conflict": list(c.lora_conflict_keys),
        }
        for model_type, c in sorted(COMPOSITE_MODELS.items())
    }


def render() -> str:
    """One model a line, so a regeneration reads as a diff of the models that changed."""
    data = snapshot()
    rows = [f"  {json.dumps(name)}: {json.dumps(entry)}" for name, entry in data["models"].items()]
    composite = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in data["composite"].items()]
    head = json.dumps(data["llamafactory_version"])
    return (
        '{"llamafactory_version": ' + head + ',\n"composite": {\n' + ",\n".join(composite) + "\n},\n"
        '"models": {\n' + ",\n".join(rows) + "\n}}\n"
    )


def main() -> None:
    TARGET.write_text(render(), encoding="utf-8")
