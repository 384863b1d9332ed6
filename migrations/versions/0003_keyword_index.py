"""A keyword index over items: SQLite FTS5 (BM25) kept in step by triggers; PostgreSQL a generated
`tsvector` column with a GIN index. Existing items are back-filled.

An item's keyword document is its text, its key (file name / id), its group and every string in its
metadata (tags, keywords, categories, aliases...). Both use English stemming (FTS5 `porter`,
PostgreSQL `english`).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _sqlite_body(row: str) -> str:
    strings = f"(SELECT group_concat(value, ' ') FROM json_tree({row}.meta) WHERE type = 'text')"
    return (
        f"coalesce({row}.text, '') || ' ' || {row}.key || ' ' || coalesce({row}.group_key, '') || ' ' || "
        f"coalesce({strings}, '')"
    )


def upgrade() -> None:
    """Create the keyword index and fill it from the items already stored."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE items ADD COLUMN search_tsv tsvector GENERATED ALWAYS AS ("
            "to_tsvector('english', coalesce(text, '') || ' ' || key || ' ' || coalesce(group_key, '')) || "
            "jsonb_to_tsvector('english', meta::jsonb, '[\"string\"]')) STORED"
        )  # a generated column: filled for existing rows now, and by PostgreSQL on every write
        op.execute("CREATE INDEX ix_items_search_tsv ON items USING gin (search_tsv)")
        return
    op.execute("CREATE VIRTUAL TABLE items_fts USING fts5(body, tokenize = 'porter unicode61 remove_diacritics 2')")
    op.execute(
        f"CREATE TRIGGER items_fts_insert AFTER INSERT ON items BEGIN "
        f"INSERT INTO items_fts(rowid, body) VALUES (new.id, {_sqlite_body('new')}); END"
    )
    op.execute(
        "CREATE TRIGGER items_fts_delete AFTER DELETE ON items BEGIN DELETE FROM items_fts WHERE rowid = old.id; END"
    )
    op.execute(
        f"CREATE TRIGGER items_fts_update AFTER UPDATE ON items BEGIN "
        f"DELETE FROM items_fts WHERE rowid = old.id; "
        f"INSERT INTO items_fts(rowid, body) VALUES (new.id, {_sqlite_body('new')}); END"
    )
    op.execute(f"INSERT INTO items_fts(rowid, body) SELECT id, {_sqlite_body('items')} FROM items")


def downgrade() -> None:
    """Drop the keyword index."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_items_search_tsv")
        op.execute("ALTER TABLE items DROP COLUMN IF EXISTS search_tsv")
        return
    for trigger in ("items_fts_insert", "items_fts_delete", "items_fts_update"):
        op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    op.execute("DROP TABLE IF EXISTS items_fts")
