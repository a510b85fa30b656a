"""Shared test setup: every test gets its own LF_TUNER_HOME; golden files refresh only on request."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from hypothesis import settings

# Property tests draw the same examples on every run (CI must not fail on a draw no earlier run made), with no
# time limit per example (CI machines are busy). `HYPOTHESIS_PROFILE=explore` draws new examples, for hunting.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("explore", deadline=None, max_examples=2000, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

HAS_LLAMAFACTORY = importlib.util.find_spec("llamafactory") is not None
HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden", action="store_true", help="rewrite tests/golden/ from the current output"
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "lf-tuner-home"
    monkeypatch.setenv("LF_TUNER_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    # An empty Hugging Face cache of the test's own: the developer's cache never answers for a model.
    # huggingface_hub reads HF_HUB_CACHE once, at import, so the module's value is replaced too.
    import huggingface_hub.constants

    hub_cache = tmp_path / "hf-home" / "hub"
    monkeypatch.setenv("HF_HOME", str(hub_cache.parent))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.delenv("USE_MODELSCOPE_HUB", raising=False)
    monkeypatch.delenv("USE_OPENMIND_HUB", raising=False)
    return home


@pytest.fixture
def fake_lf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The llamafactory-cli stand-in first on PATH (curve mode), in the test's folder; the file logging its starts."""
    from tests.sweep_helpers import install_stub

    return install_stub(tmp_path, monkeypatch)


requires_llamafactory = pytest.mark.skipif(not HAS_LLAMAFACTORY, reason="llamafactory is not installed")
