"""outbox: subject, retry back-off and the failed state

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 09:00:00.000000
"""

from collections.abc import Sequence

from shared.events import outbox_schema

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    outbox_schema.add_retries_and_failed_state()


def downgrade() -> None:
    outbox_schema.drop_retries_and_failed_state()
