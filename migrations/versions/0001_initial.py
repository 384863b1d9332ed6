"""Initial schema: corpora, items, models, indexes, index rows, prompts, outputs, retrievals.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the types this revision created; later model changes need a new revision.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _id() -> sa.Column:
    return sa.Column("id", BigId, nullable=False)


def _created_at() -> sa.Column:
    return sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False)


def _json(name: str) -> sa.Column:
    return sa.Column(name, sa.JSON(), server_default=sa.text("'{}'"), nullable=False)


def upgrade() -> None:
    """Create every table of the store."""
    op.create_table(
        "corpora",
        _id(),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_corpora")),
        sa.UniqueConstraint("name", name=op.f("uq_corpora_name")),
    )
    op.create_table(
        "indexes",
        _id(),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("encoder", sa.String(length=1024), nullable=False),
        sa.Column("encoder_checksum", sa.String(length=64), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("factory", sa.String(length=256), nullable=False),
        _json("params"),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_indexes")),
        sa.UniqueConstraint("name", name=op.f("uq_indexes_name")),
    )
    op.create_table(
        "models",
        _id(),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("version", sa.String(length=64), server_default="1", nullable=False),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("checksum", sa.String(length=64), nullable=True),
        _json("params"),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_models")),
        sa.UniqueConstraint("kind", "name", "version", name=op.f("uq_models_kind_name_version")),
    )
    op.create_table(
        "prompts",
        _id(),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("image_uri", sa.Text(), nullable=True),
        _json("params"),
        sa.Column("user", sa.String(length=128), nullable=True),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prompts")),
    )
    op.create_table(
        "items",
        _id(),
        sa.Column("corpus_id", BigId, nullable=False),
        sa.Column("key", sa.String(length=1024), nullable=False),
        sa.Column("modality", sa.String(length=16), nullable=False),
        sa.Column("uri", sa.Text(), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("group_key", sa.String(length=512), nullable=True),
        _json("meta"),
        sa.Column("synthetic", sa.Boolean(), server_default=sa.false(), nullable=False),
        _created_at(),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("modality IN ('image', 'text', 'image+text')", name=op.f("ck_items_modality")),
        sa.ForeignKeyConstraint(
            ["corpus_id"], ["corpora.id"], name=op.f("fk_items_corpus_id_corpora"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_items")),
        sa.UniqueConstraint("corpus_id", "key", name=op.f("uq_items_corpus_id_key")),
    )
    op.create_index(op.f("ix_items_group_key"), "items", ["group_key"])
    op.create_table(
        "outputs",
        _id(),
        sa.Column("prompt_id", BigId, nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("file_uri", sa.Text(), nullable=True),
        sa.Column("model_id", BigId, nullable=True),
        _json("scores"),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        _created_at(),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name=op.f("fk_outputs_model_id_models"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["prompt_id"], ["prompts.id"], name=op.f("fk_outputs_prompt_id_prompts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outputs")),
    )
    op.create_index(op.f("ix_outputs_prompt_id"), "outputs", ["prompt_id"])
    op.create_table(
        "index_rows",
        _id(),
        sa.Column("index_id", BigId, nullable=False),
        sa.Column("modality", sa.String(length=8), nullable=False),
        sa.Column("row_id", sa.BigInteger(), nullable=False),
        sa.Column("item_id", BigId, nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        _created_at(),
        sa.CheckConstraint("modality IN ('image', 'text')", name=op.f("ck_index_rows_modality")),
        sa.ForeignKeyConstraint(
            ["index_id"], ["indexes.id"], name=op.f("fk_index_rows_index_id_indexes"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"], name=op.f("fk_index_rows_item_id_items"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_index_rows")),
        sa.UniqueConstraint(
            "index_id", "modality", "item_id", name=op.f("uq_index_rows_index_id_modality_item_id")
        ),
        sa.UniqueConstraint("index_id", "modality", "row_id", name=op.f("uq_index_rows_index_id_modality_row_id")),
    )
    op.create_index(op.f("ix_index_rows_item_id"), "index_rows", ["item_id"])
    op.create_table(
        "retrievals",
        _id(),
        sa.Column("prompt_id", BigId, nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("item_id", BigId, nullable=True),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("modality", sa.String(length=8), nullable=False),
        sa.CheckConstraint("modality IN ('image', 'text')", name=op.f("ck_retrievals_modality")),
        sa.ForeignKeyConstraint(
            ["item_id"], ["items.id"], name=op.f("fk_retrievals_item_id_items"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["prompt_id"], ["prompts.id"], name=op.f("fk_retrievals_prompt_id_prompts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retrievals")),
        sa.UniqueConstraint("prompt_id", "rank", name=op.f("uq_retrievals_prompt_id_rank")),
    )
    op.create_index(op.f("ix_retrievals_prompt_id"), "retrievals", ["prompt_id"])


def downgrade() -> None:
    """Drop every table of the store, dependants first."""
    op.drop_index(op.f("ix_retrievals_prompt_id"), table_name="retrievals")
    op.drop_table("retrievals")
    op.drop_index(op.f("ix_index_rows_item_id"), table_name="index_rows")
    op.drop_table("index_rows")
    op.drop_index(op.f("ix_outputs_prompt_id"), table_name="outputs")
    op.drop_table("outputs")
    op.drop_index(op.f("ix_items_group_key"), table_name="items")
    op.drop_table("items")
    op.drop_table("prompts")
    op.drop_table("models")
    op.drop_table("indexes")
    op.drop_table("corpora")
