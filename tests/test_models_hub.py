"""Finding a model's files as LLaMA-Factory would: local folder, the user's caches, then the Hub.

The Hugging Face cache is written in huggingface_hub's layout (and read back by huggingface_hub's own
scan_cache_dir); the Hub is a local HTTP server reached through HF_ENDPOINT, so the real huggingface_hub client
makes the requests (download, offline flag, 401 for a gated repository, 404).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lf_tuner.errors import LfTunerError
from lf_tuner.models import HubOptions, find_tokenizer_dir, resolve_config, resolve_model
from tests.hf_cache import FakeHub, fake_hub, write_hf_cache

TINY = {
    "model_type": "llama", "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 4,
    "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000, "tie_word_embeddings": False,
    "max_position_embeddings": 2048,
}  # fmt: skip
TINY_PARAMS = 2 * 1000 * 256 + 4 * (256 * 256 * 2 + 256 * 128 * 2 + 3 * 256 * 512 + 2 * 256) + 256


@pytest.fixture
def hf_cache(tmp_path: Path) -> Path:
    """The test's Hugging Face hub cache (conftest points HF_HUB_CACHE at it)."""
    return tmp_path / "hf-home" / "hub"


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A Hub stand-in on localhost, with HF_HUB_OFFLINE unset (in the environment and in huggingface_hub)."""
    import huggingface_hub.constants

    hub = FakeHub()
    with fake_hub(hub):
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        yield hub


def test_the_cache_fixture_is_huggingface_hubs_layout(hf_cache: Path) -> None:
    from huggingface_hub import scan_cache_dir

    write_hf_cache(hf_cache, "acme/tiny", {"config.json": TINY})
    (repo,) = scan_cache_dir(hf_cache).repos
    (revision,) = repo.revisions
    assert repo.repo_id == "acme/tiny" and revision.refs == frozenset({"main"})
    assert {f.file_name for f in revision.files} == {"config.json"}


def test_a_hub_id_in_the_hf_cache(hf_cache: Path) -> None:
    write_hf_cache(hf_cache, "acme/tiny", {"config.json": TINY})
    arch = resolve_model("acme/tiny")
    assert arch.total_params == TINY_PARAMS
    assert arch.name == "acme/tiny" and arch.source.startswith("Hugging Face cache")


def test_the_cache_comes_before_the_catalog(hf_cache: Path) -> None:
    """LLaMA-Factory loads the user's copy: a cached config.json wins over the catalog's facts."""
    write_hf_cache(hf_cache, "Qwen/Qwen2.5-7B-Instruct", {"config.json": {**TINY, "model_type": "qwen2"}})
    assert resolve_model("Qwen/Qwen2.5-7B-Instruct").num_layers == 4
    assert resolve_model("Qwen/Qwen2.5-7B-Instruct").template == "qwen"  # the registry's template
    assert resolve_model("Qwen/Qwen2.5-7B").num_layers == 28  # another id: the catalog


def test_the_revision_refs_points_to_and_another_one(hf_cache: Path) -> None:
    old, new = "a" * 40, "b" * 40
    write_hf_cache(
        hf_cache, "acme/tiny", {"config.json": {**TINY, "num_hidden_layers": 2}}, commit=old, ref=None
    )
    write_hf_cache(hf_cache, "acme/tiny", {"config.json": TINY}, commit=new, ref="main")
    assert resolve_model("acme/tiny").num_layers == 4
    assert resolve_model("acme/tiny", HubOptions(revision=old)).num_layers == 2
    assert resolve_config({"model_name_or_path": "acme/tiny", "model_revision": old}).num_layers == 2


def test_a_configs_cache_dir(tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    write_hf_cache(other, "acme/tiny", {"config.json": TINY})
    with pytest.raises(LfTunerError, match="unknown model `acme/tiny`"):
        resolve_model("acme/tiny")
    assert resolve_config({"model_name_or_path": "acme/tiny", "cache_dir": str(other)}).num_layers == 4


def test_download_fetches_config_json_only_and_caches_it(
    online: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    online.repos["acme/new"] = {"config.json": TINY, "model.safetensors": "weights", "tokenizer.json": "{}"}
    arch = resolve_model("acme/new")
    assert arch.total_params == TINY_PARAMS and arch.source.startswith(f"downloaded from {online.url}")
    assert {path for _, path, _ in online.requests} == {"/acme/new/resolve/main/config.json"}
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the next run finds it in the cache, without the network
    online.requests.clear()
    assert resolve_model("acme/new").source.startswith("Hugging Face cache")
    assert online.requests == []


def test_the_offline_flag_skips_the_download(online: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    online.repos["acme/new"] = {"config.json": TINY}
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LfTunerError, match=r"a download \(skipped: HF_HUB_OFFLINE is set\)"):
        resolve_model("acme/new")
    assert online.requests == []


def test_a_gated_repository_says_to_log_in(online: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    online.repos["acme/gated"] = {"config.json": TINY}
    online.gated.add("acme/gated")
    with pytest.raises(LfTunerError) as info:
        resolve_model("acme/gated")
    assert str(info.value) == (
        f"model `acme/gated`: `acme/gated` is a gated repository: accept its license at {online.url}/acme/gated, "
        "then log in (`hf auth login`) or set HF_TOKEN; or pass a local model directory"
    )
    assert resolve_config({"model_name_or_path": "acme/gated", "hf_hub_token": online.token}).num_layers == 4
    assert online.requests[-1][2] == f"Bearer {online.token}"


def test_hf_token_from_the_environment(online: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    online.repos["acme/gated"] = {"config.json": TINY}
    online.gated.add("acme/gated")
    monkeypatch.setenv("HF_TOKEN", online.token)
    assert resolve_model("acme/gated").num_layers == 4


def test_a_missing_repository(online: FakeHub) -> None:
    with pytest.raises(
        LfTunerError, match=r"`acme/nothing` is not on http://127\.0\.0\.1:\d+ \(or it is private"
    ):
        resolve_model("acme/nothing")


def test_a_repository_without_config_json(online: FakeHub) -> None:
    online.repos["acme/data"] = {"README.md": "a dataset"}
    with pytest.raises(LfTunerError, match=r"`acme/data` has no config.json on http"):
        resolve_model("acme/data")


def test_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(LfTunerError, match=r"cannot download config.json of `acme/x` from http://127.0.0.1:\d+ "
                       r"\(.*\): check the network \(or set HF_ENDPOINT to a mirror\), or pass a local model"):  # fmt: skip
        resolve_model("acme/x")


def test_a_local_folder_that_is_not_there_is_named_in_the_error() -> None:
    with pytest.raises(LfTunerError, match=r"Tried: a local directory `models/Llama-2-7b` \(there is none\)"):
        resolve_model("models/Llama-2-7b")


# ------------------------------------------------------------------------------------------------ tokenizers


def _tokenizer_files(tmp_path: Path) -> dict[str, str]:
    from tests.tiny import build_tokenizer

    folder = build_tokenizer(tmp_path / "tok")
    return {p.name: p.read_text() for p in folder.iterdir()}


def test_tokenizer_from_the_cache(tmp_path: Path, hf_cache: Path) -> None:
    snapshot = write_hf_cache(hf_cache, "acme/tiny", {"config.json": TINY, **_tokenizer_files(tmp_path)})
    assert find_tokenizer_dir("acme/tiny") == snapshot


def test_tokenizer_download_for_cutoff(tmp_path: Path, online: FakeHub) -> None:
    from lf_tuner.lengths import token_counter

    online.repos["acme/tiny"] = {
        "config.json": TINY,
        "model.safetensors": "weights",
        **_tokenizer_files(tmp_path),
    }
    counter = token_counter(None, None, "acme/tiny")
    assert counter is not None and counter.count(["w1 w2 w3"]) == [3]
    fetched = {path.rsplit("/", 1)[-1] for method, path, _ in online.requests if method == "GET"}
    assert fetched == {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}


def test_no_tokenizer_offline_says_what_to_pass() -> None:
    with pytest.raises(LfTunerError, match=r"no tokenizer for `acme/tiny`\. Tried: .*Pass --tokenizer DIR"):
        find_tokenizer_dir("acme/tiny")


# ------------------------------------------------------------------------------------------- other hubs


@pytest.mark.parametrize(
    "layout", ["models/Qwen/Qwen2___5-7B-Instruct", "models/Qwen--Qwen2.5-7B-Instruct/snapshots/master", "Qwen/Qwen2.5-7B-Instruct"]
)  # fmt: skip
def test_modelscope_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str) -> None:
    folder = tmp_path / "ms" / layout
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({**TINY, "model_type": "qwen2"}))
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms"))
    assert resolve_model("Qwen/Qwen2.5-7B-Instruct").num_layers == 28  # without USE_MODELSCOPE_HUB: not read
    monkeypatch.setenv("USE_MODELSCOPE_HUB", "1")
    arch = resolve_model("Qwen/Qwen2.5-7B-Instruct")
    assert arch.num_layers == 4 and arch.source.startswith("ModelScope cache")
    assert resolve_model("Qwen2.5-7B-Instruct").num_layers == 4  # LLaMA-Factory's name -> its ModelScope id


def test_modelscope_cache_missing_is_listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms"))
    monkeypatch.setenv("USE_MODELSCOPE_HUB", "1")
    with pytest.raises(LfTunerError, match=r"Tried: .*the ModelScope cache \(.*ms: no acme/tiny\)"):
        resolve_model("acme/tiny")


def test_modelers_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    write_hf_cache(tmp_path / "xdg" / "openmind" / "hub", "acme/tiny", {"config.json": TINY})
    monkeypatch.setenv("USE_OPENMIND_HUB", "1")
    assert resolve_model("acme/tiny").source.startswith("Modelers cache")


# ---------------------------------------------------------------------------------------- the CLI, end to end


def test_estimate_downloads_through_hf_endpoint_in_a_fresh_process(tmp_path: Path) -> None:
    """The environment as users set it (HF_HOME, HF_ENDPOINT), read by huggingface_hub at import."""
    hub = FakeHub(repos={"acme/tiny": {"config.json": TINY}})
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE")
    }
    env.update(HF_HOME=str(tmp_path / "home"), LF_TUNER_HOME=str(tmp_path / "lf"))
    cmd = [sys.executable, "-m", "lf_tuner", "estimate", "--model", "acme/tiny", "--json"]
    with fake_hub(hub):
        env["HF_ENDPOINT"] = hub.url
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["model"] == "acme/tiny" and result["params"] == TINY_PARAMS
    assert (tmp_path / "home" / "hub" / "models--acme--tiny" / "refs" / "main").is_file()
