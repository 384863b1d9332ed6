"""Lineage and feedback: `prompts.parent_id` (the prompt a prompt was refined from) and a `feedback`
table (one 1..5 score and note per user per output, updatable).

Existing prompts keep no parent; existing outputs have no feedback.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copy of the id type (see 0001).
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _prompts(with_parent: bool) -> sa.Table | None:
    """`prompts` as it stands before this step, for SQLite batches in `--sql` mode (which cannot reflect it)."""
    if not context.is_offline_mode():
        return None
    columns = [
        sa.Column("id", BigId, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("image_uri", sa.Text(), nullable=True),
        sa.Column("params", sa.JSON(), server_default=sa.text("'{}'"), nullable=False),
        sa.Column("user", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_prompts"),
    ]
    if with_parent:
        columns += [
            sa.Column("parent_id", BigId, nullable=True),
            sa.ForeignKeyConstraint(["parent_id"], ["prompts.id"], name="fk_prompts_parent_id_prompts",
                                    ondelete="SET NULL"),  # fmt: skip
            sa.Index("ix_prompts_parent_id", "parent_id"),
        ]
    return sa.Table("prompts", sa.MetaData(), *columns)


def upgrade() -> None:
    """Add prompts.parent_id (FK to prompts, SET NULL, indexed) and create the feedback table."""
    # On SQLite the batch copies `prompts` into a new table with the self-reference (rows kept).
    with op.batch_alter_table("prompts", copy_from=_prompts(with_parent=False)) as batch:
        batch.add_column(sa.Column("parent_id", BigId, nullable=True))
        batch.create_foreign_key(
            op.f("fk_prompts_parent_id_prompts"), "prompts", ["parent_id"], ["id"], ondelete="SET NULL"
        )
        batch.create_index(op.f("ix_prompts_parent_id"), ["parent_id"])
    op.create_table(
        "feedback",
        sa.Column("id", BigId, nullable=False),
        sa.Column("output_id", BigId, nullable=False),
        sa.Column("user", sa.String(length=128), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("score BETWEEN 1 AND 5", name=op.f("ck_feedback_score")),
        sa.ForeignKeyConstraint(
            ["output_id"], ["outputs.id"], name=op.f("fk_feedback_output_id_outputs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feedback")),
        sa.UniqueConstraint("output_id", "user", name=op.f("uq_feedback_output_id_user")),
    )


def downgrade() -> None:
    """Drop the feedback table and prompts.parent_id (the lineage links are lost)."""
    op.drop_table("feedback")
    with op.batch_alter_table("prompts", copy_from=_prompts(with_parent=True)) as batch:
        batch.drop_index(op.f("ix_prompts_parent_id"))
        batch.drop_constraint(op.f("fk_prompts_parent_id_prompts"), type_="foreignkey")
        batch.drop_column("parent_id")
