"""Schema steps of the outbox table that every service's migrations share.

A revision calls these by name; once released, a step never changes (a new step gets a new
function), so that every service's history stays what it was."""

import json

import sqlalchemy as sa
from alembic import op

from shared.db import UTCDateTime

_outbox = sa.table(
    "outbox",
    sa.column("id", sa.String()),
    sa.column("payload", sa.Text()),
    sa.column("subject", sa.String()),
    sa.column("published_at", UTCDateTime()),
    sa.column("attempts", sa.Integer()),
)


def add_retries_and_failed_state() -> None:
    """A row the bus refuses is tried again at `next_attempt_at` (its latest error in
    `last_error`) and, after too many attempts, marked `failed_at` and set aside, so that it
    holds up nothing; `subject` keeps the rows about one aggregate in order. Rows not yet
    sent get their subject from their payload, and their attempts start again from zero:
    until then a broker outage counted as an attempt, and no longer does."""
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("subject", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("next_attempt_at", UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("last_error", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("failed_at", UTCDateTime(), nullable=True))
        batch_op.create_index("ix_outbox_subject", ["subject", "created_at"], unique=False)

    connection = op.get_bind()
    unsent = connection.execute(
        sa.select(_outbox.c.id, _outbox.c.payload).where(_outbox.c.published_at.is_(None))
    ).all()
    for row_id, payload in unsent:
        connection.execute(
            sa.update(_outbox)
            .where(_outbox.c.id == row_id)
            .values(subject=_subject(payload), attempts=0)
        )


def drop_retries_and_failed_state() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_subject")
        batch_op.drop_column("failed_at")
        batch_op.drop_column("last_error")
        batch_op.drop_column("next_attempt_at")
        batch_op.drop_column("subject")


def _subject(payload: str) -> str | None:
    try:
        subject = json.loads(payload).get("subject")
    except (ValueError, AttributeError):
        return None
    return subject[:255] if isinstance(subject, str) else None
