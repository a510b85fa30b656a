"""The user's model caches (Hugging Face, ModelScope, Modelers) and downloading single files from the Hub.

The Hugging Face cache is read through huggingface_hub's own cache API (`try_to_load_from_cache`: HF_HOME,
HF_HUB_CACHE, the revision `refs/` points to). Importing that API costs about 0.2 s, so a cheap look for the
repository's folder (`models--org--name`, huggingface_hub's documented layout) comes first and the API is only
loaded when the folder is there. Downloads go through `hf_hub_download` (HF_TOKEN or the stored login,
HF_ENDPOINT, the revision) and fetch only the files named, never weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lf_tuner.errors import LfTunerError

CONFIG = "config.json"
# What a tokenizer needs: tokenizer.json (fast tokenizers), else the sentencepiece or BPE vocabulary files.
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "special_tokens_map.json")
TOKENIZER_VOCABS = ("tokenizer.model", "vocab.json", "merges.txt")


@dataclass(frozen=True)
class HubOptions:
    """LLaMA-Factory's model arguments that decide where a model comes from."""

    revision: str | None = None  # model_revision (default main)
    token: str | None = None  # hf_hub_token (default: HF_TOKEN or the stored login)
    cache_dir: str | None = None  # cache_dir (default: HF_HUB_CACHE)


class HubError(LfTunerError):
    """A download that failed for a reason the user can fix: `kind` is gated, missing, no_file, revision, network."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on", "y")


def offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE), read when asked, as huggingface_hub reads it at import."""
    return env_true("HF_HUB_OFFLINE") or env_true("TRANSFORMERS_OFFLINE")


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


# --------------------------------------------------------------------------------------------------------
# Caches


def hf_cache_root(opts: HubOptions | None = None) -> Path:
    """The Hugging Face hub cache: the config's cache_dir, else huggingface_hub's HF_HUB_CACHE."""
    if opts is not None and opts.cache_dir:
        return Path(opts.cache_dir).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def repo_folder(root: Path, repo_id: str) -> Path:
    """Where huggingface_hub keeps a model repository in the cache at `root`."""
    return root / ("models--" + repo_id.replace("/", "--"))


def in_hf_cache(repo_id: str, filename: str = CONFIG, opts: HubOptions | None = None) -> Path | None:
    """The cached file of `repo_id` at the revision asked (main: the commit refs/main points to), or None."""
    return _cached(hf_cache_root(opts), repo_id, filename, opts)


def _cached(root: Path, repo_id: str, filename: str, opts: HubOptions | None) -> Path | None:
    if "/" not in repo_id or not repo_folder(root, repo_id).is_dir():
        return None
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(
            repo_id, filename, cache_dir=root, revision=(opts.revision if opts else None) or None
        )
    except ValueError:  # an id huggingface_hub rejects
        return None
    return Path(found) if isinstance(found, str) else None


def modelscope_cache_roots() -> list[Path]:
    """ModelScope's cache: MODELSCOPE_CACHE, else ~/.cache/modelscope (its SDK has used both root and hub/)."""
    env = os.environ.get("MODELSCOPE_CACHE")
    if env:
        return [Path(env).expanduser()]
    base = Path.home() / ".cache" / "modelscope"
    return [base, base / "hub"]


def in_modelscope_cache(repo_id: str, filename: str = CONFIG) -> Path | None:
    """A file of `repo_id` in the ModelScope cache, in any layout its SDK has written.

    modelscope's own lookup (`model_file_download(..., local_files_only=True)`) still asks the server for the
    revision (15 s of retries without a network), so the layouts its `find_reusable_legacy_repo_dir` lists are
    read directly: models/{org}--{name}/snapshots/{rev}/, models/{org}/{name with . as ___}/, {org}/{name}/.
    """
    if "/" not in repo_id:
        return None
    org, name = repo_id.split("/", 1)
    safe = name.replace(".", "___")
    for root in modelscope_cache_roots():
        snapshots = root / "models" / f"{org}--{name}" / "snapshots"
        if snapshots.is_dir():
            revisions = sorted(
                (p for p in snapshots.iterdir() if p.is_dir()), key=lambda p: p.name != "master"
            )
            for rev in revisions:
                if (rev / filename).is_file():
                    return rev / filename
        for folder in (
            root / "models" / org / safe,
            root / "models" / org / name,
            root / org / name,
            root / org / safe,
        ):
            if (folder / filename).is_file():
                return folder / filename
    return None


def openmind_cache_root() -> Path:
    """Modelers' (openMind) cache, laid out as huggingface_hub's: openmind_hub's OM_HUB_CACHE when installed."""
    try:
        from openmind_hub import OM_HUB_CACHE  # type: ignore[import-not-found]

        return Path(OM_HUB_CACHE)
    except ImportError:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(base).expanduser() / "openmind" / "hub"


def in_openmind_cache(repo_id: str, filename: str = CONFIG, opts: HubOptions | None = None) -> Path | None:
    return _cached(openmind_cache_root(), repo_id, filename, opts)


# --------------------------------------------------------------------------------------------------------
# Downloads


def download(repo_id: str, filename: str, opts: HubOptions | None = None) -> Path:
    """One file of a Hub repository, into the Hugging Face cache; HubError says what to do when it fails.

    A HEAD request without retries comes first: `hf_hub_download` retries a refused connection five times
    (about 25 s) before it gives up, which is too long to wait for a "no network" line.
    """
    import httpx
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    opts = opts or HubOptions()
    url = f"{endpoint()}/{repo_id}"
    revision, token = opts.revision or None, opts.token or None
    try:
        get_hf_file_metadata(
            hf_hub_url(repo_id, filename, revision=revision, endpoint=endpoint()), token=token, timeout=10
        )
        path = hf_hub_download(
            repo_id,
            filename,
            revision=revision,
            token=token,
            cache_dir=opts.cache_dir or None,
            endpoint=os.environ.get("HF_ENDPOINT") or None,
        )
    except GatedRepoError:
        raise HubError(
            f"`{repo_id}` is a gated repository: accept its license at {url}, then log in (`hf auth login`) or "
            "set HF_TOKEN; or pass a local model directory",
            "gated",
        ) from None
    except RepositoryNotFoundError:
        raise HubError(
            f"`{repo_id}` is not on {endpoint()} (or it is private: log in with `hf auth login` or set "
            "HF_TOKEN); check the id, or pass a local model directory",
            "missing",
        ) from None
    except RevisionNotFoundError:
        raise HubError(
            f"`{repo_id}` has no revision `{opts.revision}`; fix model_revision, or pass a local model directory",
            "revision",
        ) from None
    except RemoteEntryNotFoundError:
        raise HubError(f"`{repo_id}` has no {filename} on {endpoint()}", "no_file") from None
    except (httpx.HTTPError, OfflineModeIsEnabled, LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        raise HubError(
            f"cannot download {filename} of `{repo_id}` from {endpoint()} ({_reason(exc)}): check the network "
            "(or set HF_ENDPOINT to a mirror), or pass a local model directory",
            "network",
        ) from None
    return Path(path)


def _reason(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    text = str(cause or exc).strip().splitlines()
    return (type(cause or exc).__name__ + (f": {text[0]}" if text else ""))[:160]


def download_tokenizer(repo_id: str, opts: HubOptions | None = None) -> Path:
    """The tokenizer files of a Hub repository (only those it has); their snapshot folder."""
    folder: Path | None = None
    for filename in (*TOKENIZER_FILES, *TOKENIZER_VOCABS):
        if folder is not None and filename in TOKENIZER_VOCABS and (folder / "tokenizer.json").is_file():
            break  # tokenizer.json is all the fast tokenizer needs
        try:
            folder = download(repo_id, filename, opts).parent
        except HubError as exc:
            if exc.kind != "no_file":
                raise
    if folder is None or not any((folder / f).is_file() for f in ("tokenizer.json", *TOKENIZER_VOCABS)):
        raise HubError(
            f"`{repo_id}` has no tokenizer files (tokenizer.json, tokenizer.model or vocab.json); pass --tokenizer "
            "DIR, or --tiktoken o200k_base for an approximation",
            "no_file",
        )
    return folder
