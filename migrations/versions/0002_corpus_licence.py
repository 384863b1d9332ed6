"""Corpora record their licence (each source's, e.g. "MIT (Tabler Icons, Paweł Kuna)").

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add corpora.licence (NULL where a source states none: folders, manifests)."""
    with op.batch_alter_table("corpora") as batch:
        batch.add_column(sa.Column("licence", sa.Text(), nullable=True))


def downgrade() -> None:
    """Drop corpora.licence."""
    with op.batch_alter_table("corpora") as batch:
        batch.drop_column("licence")
