"""A Hugging Face hub cache written in huggingface_hub's own layout, and a local stand-in for the Hub's HTTP API.

Layout (huggingface_hub's cache guide): models--{org}--{name}/blobs/{etag}, snapshots/{commit}/{file} -> the
blob (a relative symlink), refs/{revision} holding the commit. The server answers the two requests
`hf_hub_download` makes (HEAD, then GET of /{repo}/resolve/{revision}/{file}) with the headers the real Hub
sends, including its error codes (X-Error-Code: GatedRepo, RepoNotFound, EntryNotFound).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def write_hf_cache(
    root: Path, repo_id: str, files: dict[str, Any], *, commit: str | None = None, ref: str | None = "main"
) -> Path:
    """Files of one repository at one commit (dicts are written as JSON); its snapshot folder."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    blobs = {name: (json.dumps(v) if isinstance(v, dict) else v) for name, v in files.items()}
    commit = commit or hashlib.sha1(json.dumps(sorted(blobs.items())).encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    for name, text in blobs.items():
        data = text.encode() if isinstance(text, str) else text
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    if ref:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return snapshot


@dataclass
class FakeHub:
    """Repositories by id: {file: content}; `gated` ids answer 401 unless the request carries `token`."""

    repos: dict[str, dict[str, Any]] = field(default_factory=dict)
    gated: set[str] = field(default_factory=set)
    token: str = "hf_secret"
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, authorization)
    url: str = ""


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub

    def log_message(self, *args: Any) -> None:  # keep the test output clean
        pass

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _error(self, status: int, code: str) -> None:
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _answer(self, body: bool) -> None:
        hub = self.hub
        auth = self.headers.get("Authorization")
        hub.requests.append((self.command, self.path, auth))
        parts = self.path.split("?")[0].strip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return self._error(404, "RepoNotFound")
        repo_id, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        if repo_id not in hub.repos:
            return self._error(404, "RepoNotFound")
        if repo_id in hub.gated and auth != f"Bearer {hub.token}":
            return self._error(401, "GatedRepo")
        files = hub.repos[repo_id]
        if filename not in files:
            return self._error(404, "EntryNotFound")
        value = files[filename]
        data = (json.dumps(value) if isinstance(value, dict) else value).encode()
        commit = hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
        self.send_response(200)
        self.send_header("X-Repo-Commit", commit)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)


@contextmanager
def fake_hub(hub: FakeHub) -> Iterator[FakeHub]:
    handler = type("Handler", (_Handler,), {"hub": hub})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
