"""Keyword search in the store: SQLite FTS5 ranked by BM25, PostgreSQL `tsvector` ranked by `ts_rank_cd`.

The index itself is made by migration 0003 and kept in step by the database (FTS5 triggers on
`items`; a generated column on PostgreSQL), so every insert, update, re-embedding and `--prune`
reaches it in the same transaction as the item.

Query syntax (`syntax=`):
- `plain` (default): the words of the query, any of them may match (OR), each one quoted, so no
  character of the user's text is read as an operator;
- `fts`: the backend's own syntax, for users who want it: an FTS5 MATCH expression on SQLite
  (`"red apple" OR pear*`, `NEAR(...)`), a `to_tsquery` expression on PostgreSQL (`red & apple | pear:*`).
  A malformed expression becomes a ConfigError that says so.

The query text is always a bound parameter.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import Float, bindparam, column, func, literal_column, select, table, text
from sqlalchemy.exc import DBAPIError

from mmgen.errors import ConfigError
from mmgen.store.filters import Filters, filter_items_by_meta
from mmgen.store.models import IndexRow, Item

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

SYNTAXES = ("plain", "fts")
# what the keyword index adds to the schema outside the ORM (Alembic comparisons leave it out)
KEYWORD_TABLES = ("items_fts", "items_fts_data", "items_fts_idx", "items_fts_content", "items_fts_docsize",
                  "items_fts_config")  # fmt: skip
KEYWORD_COLUMN = "search_tsv"
_WORD = re.compile(r"\w+", re.UNICODE)


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Alembic filter: the keyword index's FTS5 tables and tsvector column are not ORM objects."""
    if type_ == "table" and name in KEYWORD_TABLES:
        return False
    if type_ == "column" and name == KEYWORD_COLUMN:
        return False
    return not (type_ == "index" and name == "ix_items_search_tsv")


def query_words(query: str) -> list[str]:
    """The words of a plain query, lower-cased, in order, without repeats."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(query.lower()):
        seen.setdefault(word, None)
    return list(seen)


def backend_query(query: str, dialect: str, syntax: str = "plain") -> str:
    """The MATCH / tsquery string for a user query (still passed as a bound parameter)."""
    if syntax not in SYNTAXES:
        raise ConfigError(f"keyword syntax must be one of {', '.join(SYNTAXES)}, not {syntax!r}")
    if not query or not query.strip():
        raise ConfigError("empty keyword query")
    if syntax == "fts":
        return query
    words = query_words(query)
    if not words:
        raise ConfigError(f"the keyword query {query!r} has no words to match")
    if dialect == "postgresql":
        return " | ".join(f"'{w}'" for w in words)
    return " OR ".join(f'"{w}"' for w in words)


def keyword_search(
    s: Session,
    index_id: int,
    modality: str,
    query: str,
    limit: int,
    where: Filters | Mapping[str, Any] | None = None,
    syntax: str = "plain",
) -> list[tuple[int, float]]:
    """(item id, score) of the best `limit` items of an index that have `modality` vectors, best first.

    Scores are higher-is-better: -bm25 on SQLite, ts_rank_cd on PostgreSQL. `where` filters apply
    inside the ranking, so a filter never starves the result.
    """
    dialect = s.get_bind().dialect.name
    expr = backend_query(query, dialect, syntax)
    if dialect == "postgresql":
        tsv = literal_column("items.search_tsv")
        tsq = func.to_tsquery(literal_column("'english'::regconfig"), bindparam("q", expr))
        score = func.ts_rank_cd(tsv, tsq).label("score")
        stmt = select(Item.id, score).where(tsv.op("@@")(tsq))
    else:
        fts = table("items_fts", column("rowid"))
        score = literal_column("-bm25(items_fts)", Float).label("score")
        stmt = (
            select(Item.id, score)
            .join(fts, fts.c.rowid == Item.id)
            .where(text("items_fts MATCH :q").bindparams(bindparam("q", expr)))
        )
    stmt = stmt.join(IndexRow, IndexRow.item_id == Item.id).where(
        IndexRow.index_id == index_id, IndexRow.modality == modality
    )
    stmt = filter_items_by_meta(stmt, where).order_by(score.desc(), Item.id).limit(int(limit))
    try:
        return [(int(i), float(sc)) for i, sc in s.execute(stmt).all()]
    except DBAPIError as exc:
        s.rollback()
        reason = str(getattr(exc, "orig", exc)).splitlines()[0]
        if "no such table: items_fts" in reason or "search_tsv" in reason:
            raise ConfigError("this store has no keyword index; run `mmgen db upgrade`") from exc
        raise ConfigError(
            f"malformed keyword query {query!r} ({reason}); leave out --keyword-syntax fts to match plain words"
        ) from exc

