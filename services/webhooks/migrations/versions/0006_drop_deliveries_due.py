"""deliveries: no index on (status, next_attempt_at); claims read the pending ones by endpoint

Every query of deliveries names an endpoint or a delivery, so the index served none of them,
and each delivery's insert and its two updates (claimed, then recorded) wrote to it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-15 09:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_deliveries_due", table_name="deliveries")


def downgrade() -> None:
    op.create_index("ix_deliveries_due", "deliveries", ["status", "next_attempt_at"])
