"""The shipped registry (lf_tuner/models/registry.json) against the installed LLaMA-Factory (runs where it is)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import requires_llamafactory

pytestmark = [requires_llamafactory, pytest.mark.llamafactory]


def test_registry_matches_installed_llamafactory() -> None:
    from lf_tuner.models._generate import TARGET, snapshot

    shipped = json.loads(TARGET.read_text(encoding="utf-8"))
    installed = snapshot()
    missing = sorted(set(installed["models"]) - set(shipped["models"]))
    assert not missing, (
        f"{len(missing)} ids the catalog lacks; regenerate with: python scripts/gen_model_registry.py"
    )
    assert shipped == installed, "regenerate with: python scripts/gen_model_registry.py"


def test_every_registered_hub_id_has_the_template_llamafactory_defaults_to() -> None:
    from llamafactory.extras.constants import DEFAULT_TEMPLATE, SUPPORTED_MODELS, DownloadSource

    from lf_tuner.models import model_template

    for name, paths in SUPPORTED_MODELS.items():
        if name in DEFAULT_TEMPLATE:
            assert model_template(paths[DownloadSource.DEFAULT]) == DEFAULT_TEMPLATE[name], name
            assert model_template(name) == DEFAULT_TEMPLATE[name], name
