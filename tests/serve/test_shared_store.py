"""Two `mmgen serve` processes on one PostgreSQL database and one shared workspace folder (the
deployment of the README's *Past one machine*): both answer as the same workspace on SQLite does,
a search recorded by one is in the other's history, and what `mmgen index` adds meanwhile reaches
both."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mmgen.data.sources import open_sources
from mmgen.indexer import Indexer, IndexOptions
from mmgen.store.db import open_store
from mmgen.workspace import Workspace

pytestmark = pytest.mark.postgres
QUERIES = ("a red circle", "a blue square", "a green triangle, drawing 2", "yellow")


@pytest.fixture()
def pg_url(pg_server_url: str) -> Iterator[str]:
    with sys.modules["mmgen_tests_pgserver"].fresh_database(pg_server_url) as url:
        yield url


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _call(url: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url + path, data=data, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


class Server:
    """`python -m mmgen serve` as its own process, on a free loopback port."""

    def __init__(self, ws: Workspace, log: Path) -> None:
        self.url = f"http://127.0.0.1:{(port := _free_port())}"
        self.log = log.open("wb")
        env = {**os.environ, "MMGEN_THREADS": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mmgen", "serve", "--workspace", str(ws.root), "--db", ws.db_url,
             "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        self.log_path = log

    def wait(self) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.log_path.read_text(errors='replace')[-2000:]}")
            try:
                _call(self.url, "/healthz")
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.2)
        raise AssertionError(f"server did not start: {self.log_path.read_text(errors='replace')[-2000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _hits(url: str, text: str) -> list[tuple[str, float]]:
    out = _call(url, "/api/search", {"text": text, "k": 8})
    return [(h["key"], round(h["score"], 5)) for h in out["hits"]]


def _build(root: Path, db: str | None, encoder: Any, corpus: Path) -> Workspace:
    ws = Workspace.resolve(root, db)
    with open_store(ws.db_url) as store:
        Indexer(ws, store, encoder, IndexOptions(progress=False)).run(open_sources(str(corpus)))
    return ws


def test_two_servers_on_one_postgres_answer_as_sqlite_and_share_records(
    tmp_path: Path, tiny_encoder: Any, build_tiny_workspace: Any, pg_url: str
) -> None:
    from PIL import Image

    reference, manifest = build_tiny_workspace(tmp_path / "sqlite", tiny_encoder)
    shared = _build(tmp_path / "shared", pg_url, tiny_encoder, manifest)
    servers = [Server(ws, tmp_path / f"{name}.log") for ws, name in ((shared, "a"), (shared, "b"), (reference, "s"))]
    try:
        for s in servers:
            s.wait()
        a, b, lite = servers
        for text in QUERIES:
            expected = _hits(lite.url, text)
            assert expected and _hits(a.url, text) == expected == _hits(b.url, text), text

        made = _call(a.url, "/api/search", {"text": "a red square, as asked on server a", "k": 3})["prompt_id"]
        seen = _call(b.url, "/api/history?kind=search&n=50")
        assert made in [p["id"] for p in seen["prompts"]]
        shown = _call(b.url, f"/api/prompts/{made}")
        assert shown["text"] == "a red square, as asked on server a" and len(shown["retrievals"]) == 3

        folder = tmp_path / "more"
        folder.mkdir()
        Image.new("RGB", (40, 40), (120, 0, 160)).save(folder / "purple.png")
        (folder / "purple.txt").write_text("a purple triangle", encoding="utf-8")
        with open_store(shared.db_url) as store:  # a third process's indexer, on the same database and folder
            Indexer(shared, store, tiny_encoder, IndexOptions(progress=False)).run(open_sources(str(folder)))
        for server in (a, b):
            deadline = time.monotonic() + 60  # each server re-checks SQL at most once a second
            while not any(k.startswith("purple") for k, _ in _hits(server.url, "a purple triangle")):
                assert time.monotonic() < deadline, f"{server.url} never saw the new item"
                time.sleep(0.3)
        assert _hits(a.url, "a purple triangle") == _hits(b.url, "a purple triangle")
    finally:
        for s in servers:
            s.stop()
