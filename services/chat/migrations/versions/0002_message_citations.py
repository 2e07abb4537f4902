"""message citations: replies keep the sources they were given; conversations and user
messages say whether they are answered from the user's documents

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 15:32:30.727427
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("use_documents", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(sa.Column("document_ids", sa.JSON(), nullable=True))

    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("use_documents", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(sa.Column("document_ids", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("citations", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("citations")
        batch_op.drop_column("document_ids")
        batch_op.drop_column("use_documents")

    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.drop_column("document_ids")
        batch_op.drop_column("use_documents")
