"""revocations: the denials no other table records (a logout's access token, a user's tokens
until an instant), kept until they expire so that auth can re-publish them to a store that
lost them

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 16:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "revocations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("revoked_at", sa.Double(), nullable=False),
        sa.Column("expires_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_revocations")),
    )
    with op.batch_alter_table("revocations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_revocations_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("revocations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_revocations_expires_at"))

    op.drop_table("revocations")
