"""Small queries the indexer and search share; each takes a Session, flushes, and leaves commit to the caller."""

from __future__ import annotations

import functools

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import Connection, bindparam, insert, select
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mmgen.errors import ManifestMismatchError
from mmgen.store.filters import Filters, filter_items_by_meta
from mmgen.store.models import Base, Corpus, IndexRecord, IndexRow, Item, Output, Prompt, Retrieval

__all__ = [
    "login_user",
    "filter_items_by_meta",
    "get_or_create_corpus",
    "get_or_create_index",
    "hit_rows",
    "items_for_rows",
    "record_search",
]

M = TypeVar("M", bound=Base)


def _get_or_create(s: Session, model: type[M], lookup: Mapping[str, Any], values: Mapping[str, Any]) -> M:
    """Fetch by `lookup`, else insert in a savepoint; a concurrent insert of the same row wins."""
    found = s.scalars(select(model).filter_by(**lookup)).one_or_none()
    if found is not None:
        return found
    obj = model(**lookup, **values)
    try:
        with s.begin_nested():
            s.add(obj)
    except IntegrityError:
        return s.scalars(select(model).filter_by(**lookup)).one()
    return obj


def get_or_create_corpus(s: Session, name: str, source: str, licence: str | None = None) -> Corpus:
    """The corpus called `name`, created from `source` if new (an existing one keeps its source).

    A known licence is recorded, and brought up to date on an existing corpus.
    """
    corpus = _get_or_create(s, Corpus, {"name": name}, {"source": source, "licence": licence})
    if licence is not None and corpus.licence != licence:
        corpus.licence = licence
    return corpus


def get_or_create_index(
    s: Session,
    name: str,
    encoder: str,
    encoder_checksum: str,
    dim: int,
    factory: str,
    params: Mapping[str, Any],
) -> IndexRecord:
    """The index record called `name`, created if new; an existing one must match encoder, dim and factory.

    Raises ManifestMismatchError naming each difference; `params` of an existing index stay as stored.
    """
    wanted = {"encoder": encoder, "encoder_checksum": encoder_checksum, "dim": int(dim), "factory": factory}
    record = _get_or_create(s, IndexRecord, {"name": name}, {**wanted, "params": dict(params)})
    differences = [
        f"{field} is {getattr(record, field)!r}, not {value!r}"
        for field, value in wanted.items()
        if getattr(record, field) != value
    ]
    if differences:
        raise ManifestMismatchError(
            f"index {name!r} exists with other settings: {'; '.join(differences)}; "
            "use another index name, or delete the index to rebuild it"
        )
    return record


# Statements built once: a search runs them on every query, and a prebuilt statement skips
# SQLAlchemy's per-call construction, coercion and cache-key work (about 1 ms of the 1.5 ms a
# query's record took, and most of its SQL join).
_INSERT_PROMPT = insert(Prompt.__table__).returning(Prompt.__table__.c.id)
_INSERT_RETRIEVALS = insert(Retrieval.__table__)
_INSERT_OUTPUT = insert(Output.__table__)
_HIT_ROWS = (
    select(IndexRow.row_id, Item.id, Item.text, Item.uri, Item.meta, Item.key, Item.corpus_id, Item.group_key)
    .join(Item, IndexRow.item_id == Item.id)
    .where(
        IndexRow.index_id == bindparam("index_id"),
        IndexRow.modality == bindparam("modality"),
        IndexRow.row_id.in_(bindparam("rows", expanding=True)),
    )
)


def record_search(
    s: Session | Connection,
    *,
    text: str | None,
    image_uri: str | None,
    params: Mapping[str, Any],
    hits: Sequence[tuple[int, float, str]],
    latency_ms: float,
    user: str | None,
    model_id: int | None = None,
) -> int:
    """Record one search: a `search` prompt, one retrieval per hit (rank from 1), and an output row; returns its id.

    `hits` are `(item_id, score, modality)` best first; the output's scores hold the hit count
    and the top score. Three prebuilt Core inserts on the session's connection, not the ORM's
    unit of work: this runs on every query.
    """
    conn = s.connection() if isinstance(s, Session) else s
    values = {"kind": "search", "text": text, "image_uri": image_uri, "params": dict(params), "user": user}
    prompt_id = int(conn.execute(_INSERT_PROMPT, values).scalar_one())
    if hits:
        conn.execute(
            _INSERT_RETRIEVALS,
            [
                {"prompt_id": prompt_id, "rank": rank, "item_id": int(item_id), "score": float(score), "modality": str(modality)}
                for rank, (item_id, score, modality) in enumerate(hits, start=1)
            ],
        )
    top = float(hits[0][1]) if hits else None
    scores = {"k": len(hits), "top": top}
    conn.execute(_INSERT_OUTPUT, {"prompt_id": prompt_id, "scores": scores, "latency_ms": float(latency_ms), "model_id": model_id})
    return prompt_id


def hit_rows(conn: Session | Connection, index_id: int, modality: str, row_ids: Iterable[int]) -> dict[int, Row[Any]]:
    """FAISS row id -> the fields of its item a search hit shows (`id`, `text`, `uri`, `meta`, `key`,
    `corpus_id`, `group_key`), for one index and modality; ids < 0 (FAISS's padding) skipped.

    The query path's join: one prebuilt statement, plain rows rather than ORM objects."""
    wanted = sorted({int(r) for r in row_ids if int(r) >= 0})
    if not wanted:
        return {}
    rows = conn.execute(_HIT_ROWS, {"index_id": int(index_id), "modality": modality, "rows": wanted})
    return {int(row.row_id): row for row in rows}


def items_for_rows(
    s: Session,
    index_id: int,
    modality: str,
    row_ids: Iterable[int],
    where: Filters | Mapping[str, Any] | None = None,
) -> dict[int, Item]:
    """Map FAISS row ids of one index and modality to their items (ids < 0, FAISS's padding, skipped).

    With `where`, rows whose item fails the filters (see `mmgen.store.filters`) are left out.
    """
    wanted = sorted({int(r) for r in row_ids if int(r) >= 0})
    if not wanted:
        return {}
    stmt = (
        select(IndexRow.row_id, Item)
        .join(Item, IndexRow.item_id == Item.id)
        .where(IndexRow.index_id == index_id, IndexRow.modality == modality, IndexRow.row_id.in_(wanted))
    )
    if where:
        stmt = filter_items_by_meta(stmt, where)
    return {row_id: item for row_id, item in s.execute(stmt)}


@functools.cache
def login_user() -> str | None:
    """The login name of the process (recorded as a prompt's `user` when no caller is given); None if unknown.

    Looked up once per process (a password-database read, 35 us, on every search otherwise)."""
    import getpass

    try:
        return getpass.getuser() or None
    except (KeyError, OSError):
        return None
