"""The two statements every search runs (its hit join and its record), on the raw driver where the store is SQLite.

For these tiny statements SQLAlchemy's Core costs more than the statement itself: in a warm loop
over a 20,000-item index, the join took 0.21 ms through Core against 0.07 ms as the same SQL on
the pooled sqlite3 connection, and the record 0.27 against 0.22 ms. In `benchmarks/duel_stages.py`'s
duel, where caches are cold, the join went from 0.92 to 0.48 ms and the record from 0.87 to 0.39 ms.
On PostgreSQL the Core statements of `mmgen.store.repo` run unchanged (`hit_rows`, `record_search`).
On SQLite the SQL below states the same statements with sqlite3's `?` parameters, and
`tests/store/test_hotpath.py` checks that both paths read the same rows and write the same records.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from mmgen.errors import StoreError

_JOIN = (
    "SELECT index_rows.row_id, items.id, items.text, items.uri, items.meta, items.key, items.corpus_id, items.group_key "
    "FROM index_rows JOIN items ON index_rows.item_id = items.id "
    "WHERE index_rows.index_id = ? AND index_rows.modality = ? AND index_rows.row_id IN ({marks})"
)
_PROMPT = 'INSERT INTO prompts (kind, text, image_uri, params, "user") VALUES (?, ?, ?, ?, ?)'
_RETRIEVAL = "INSERT INTO retrievals (prompt_id, rank, item_id, score, modality) VALUES (?, ?, ?, ?, ?)"
_OUTPUT = "INSERT INTO outputs (prompt_id, scores, latency_ms, model_id) VALUES (?, ?, ?, ?)"


class HitRow(NamedTuple):
    """The fields of an item a search hit shows, keyed by its FAISS row (as `mmgen.store.repo.hit_rows`)."""

    row_id: int
    id: int
    text: str | None
    uri: str | None
    meta: dict[str, Any]
    key: str
    corpus_id: int
    group_key: str | None


class QueryPath:
    """A store's search join and search record: raw sqlite3 on SQLite, SQLAlchemy Core elsewhere."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.raw = engine.dialect.name == "sqlite"

    def hit_rows(self, index_id: int, modality: str, row_ids: Iterable[int]) -> dict[int, Any]:
        """FAISS row id -> its item's hit fields, for one index and modality; ids < 0 (FAISS's padding) skipped."""
        if not self.raw:
            from mmgen.store.repo import hit_rows

            with self.engine.connect() as conn:
                return hit_rows(conn, index_id, modality, row_ids)
        wanted = sorted({int(r) for r in row_ids if int(r) >= 0})
        if not wanted:
            return {}
        sql = _JOIN.format(marks=", ".join("?" * len(wanted)))
        with self._driver("read the hits of a search") as db:
            rows = db.execute(sql, (int(index_id), modality, *wanted)).fetchall()
        return {int(r[0]): HitRow(r[0], r[1], r[2], r[3], json.loads(r[4]) if r[4] else {}, *r[5:]) for r in rows}

    def record_search(
        self,
        *,
        text: str | None,
        image_uri: str | None,
        params: Mapping[str, Any],
        hits: Sequence[tuple[int, float, str]],
        latency_ms: float,
        user: str | None,
        model_id: int | None = None,
    ) -> int:
        """Record one search (prompt, a retrieval per hit, an output) in one transaction; returns the prompt id."""
        if not self.raw:
            from mmgen.store.repo import record_search

            try:
                with self.engine.begin() as conn:
                    return record_search(conn, text=text, image_uri=image_uri, params=params, hits=hits,
                                         latency_ms=latency_ms, user=user, model_id=model_id)  # fmt: skip
            except DBAPIError as exc:
                raise StoreError(f"cannot record a search in {self._where()}: {exc.orig}") from exc
        top = float(hits[0][1]) if hits else None
        with self._driver("record a search") as db:
            db.execute("BEGIN")  # a failure here (the database busy past the timeout) leaves nothing to undo
            try:
                prompt_id = int(db.execute(_PROMPT, ("search", text, image_uri, json.dumps(dict(params)), user)).lastrowid)
                db.executemany(_RETRIEVAL, [(prompt_id, rank, int(item), float(score), str(modality))
                                            for rank, (item, score, modality) in enumerate(hits, start=1)])  # fmt: skip
                db.execute(_OUTPUT, (prompt_id, json.dumps({"k": len(hits), "top": top}), float(latency_ms), model_id))
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        return prompt_id

    @contextmanager
    def _driver(self, action: str) -> Iterator[sqlite3.Connection]:
        """A pooled connection's sqlite3 handle (the store's pragmas applied) for one block; driver errors
        become StoreError."""
        fairy = self.engine.raw_connection()
        try:
            yield fairy.driver_connection
        except sqlite3.Error as exc:
            raise StoreError(f"cannot {action} in {self._where()}: {exc}") from exc
        finally:
            fairy.close()  # back to the pool

    def _where(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)
