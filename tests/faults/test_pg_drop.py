"""A PostgreSQL connection terminated in the middle of `mmgen index` (`pg_terminate_backend`, as an
administrator or a failover does): one clear error, the committed batches kept, and the same command
resumes to a complete index with no lost and no duplicate item."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import event, func, select
from typer.testing import CliRunner

from mmgen.cli import app
from mmgen.data.sources import open_sources
from mmgen.errors import ConnectionLostError
from mmgen.index import IndexFolder
from mmgen.indexer import IndexOptions, Indexer
from mmgen.store.db import open_store
from mmgen.store.models import IndexRow, Item
from mmgen.workspace import Workspace

pytestmark = pytest.mark.postgres
BATCH = 8  # 32 records: four batches
runner = CliRunner()


@pytest.fixture()
def pg_url(pg_server_url: str) -> Any:
    import sys

    with sys.modules["mmgen_tests_pgserver"].fresh_database(pg_server_url) as url:
        yield url


def _terminate(server_url: str, pid: int) -> None:
    import psycopg

    conninfo = server_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_connection_terminated_mid_run_then_the_rerun_completes(
    tmp_path: Path, small_corpus: Path, tiny_encoder: Any, tiny_clip: Any, pg_url: str, pg_server_url: str
) -> None:
    ws = Workspace.resolve(tmp_path / "ws", pg_url)
    keys = [json.loads(line)["id"] for line in small_corpus.read_text(encoding="utf-8").splitlines()]
    store = open_store(ws.db_url)
    batches = {"n": 0}
    try:
        @event.listens_for(store.engine, "before_cursor_execute")
        def _drop(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if statement.lstrip().upper().startswith("INSERT INTO ITEMS"):
                batches["n"] += 1
                if batches["n"] == 3:  # the third batch's commit: two batches are in
                    _terminate(pg_server_url, conn.connection.dbapi_connection.info.backend_pid)

        indexer = Indexer(ws, store, tiny_encoder, IndexOptions(batch_size=BATCH, progress=False))
        with pytest.raises(ConnectionLostError, match="connection to the SQL store .* was lost .* run the same command"):
            indexer.run(open_sources(str(small_corpus)))
    finally:
        store.close()
    with open_store(ws.db_url) as store, store.session() as s:
        assert s.scalar(select(func.count(Item.id))) == 2 * BATCH  # the two committed batches, nothing torn

    argv = ["index", str(small_corpus), "--workspace", str(ws.root), "--db", pg_url, "--encoder",
            tiny_clip.dir_name, "--batch-size", str(BATCH), "--quiet", "--json"]  # fmt: skip
    res = runner.invoke(app, argv, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["added"] == len(keys) - 2 * BATCH
    with open_store(ws.db_url) as store, store.session() as s:
        assert sorted(s.scalars(select(Item.key))) == sorted(keys)
        rows = s.execute(select(IndexRow.modality, IndexRow.item_id, IndexRow.row_id)).all()
    pairs = [(m, i) for m, i, _ in rows]
    assert len(pairs) == len(set(pairs)) == 2 * len(keys)
    folder = IndexFolder.open(ws.index_dir("default"))
    for modality in ("image", "text"):
        ids = np.array(sorted(r for m, _, r in rows if m == modality), dtype=np.int64)
        assert np.isfinite(folder.vectors(modality).get(ids)).all()
    res = runner.invoke(app, ["check", "--workspace", str(ws.root), "--db", pg_url, "--json"], catch_exceptions=False)
    assert res.exit_code == 0 and json.loads(res.stdout)["ok"], res.output
