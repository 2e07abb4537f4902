"""deliveries: an index of the pending ones by endpoint and due time, for batched claims

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-10 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pending = sa.text("status = 'pending'")
    op.create_index(
        "ix_deliveries_pending_by_endpoint",
        "deliveries",
        ["endpoint_id", "next_attempt_at"],
        postgresql_where=pending,
        sqlite_where=pending,
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_pending_by_endpoint", table_name="deliveries")
