"""reserved match characters out of stored chunks

Search marks matches with U+E000 and U+E001 and turns only those into `<mark>` tags, so a
chunk's text must not hold them: the extraction now stores a document's own as U+FFFD,
and this rewrites the chunks stored before, only the rows that hold one.
PostgreSQL recomputes the generated `search_vector` of each row updated; on SQLite the
`chunks_fts_after_update` trigger (0002) takes the old text out of `chunks_fts` and puts
the new text in.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As of this revision (services/documents/extraction.py), written out so that the
# migration stays as it ran whatever the code later becomes.
MATCH_START = "\ue000"
MATCH_END = "\ue001"
REPLACEMENT = "\ufffd"

# `replace` and `LIKE` are the same on both databases, and neither character is special
# in a LIKE pattern.
_REWRITE = sa.text(
    "UPDATE chunks SET text = replace(replace(text, :start, :replacement), :end, :replacement)"
    " WHERE text LIKE :has_start OR text LIKE :has_end"
).bindparams(
    start=MATCH_START,
    end=MATCH_END,
    replacement=REPLACEMENT,
    has_start=f"%{MATCH_START}%",
    has_end=f"%{MATCH_END}%",
)


def upgrade() -> None:
    op.execute(_REWRITE)


def downgrade() -> None:
    """Nothing to undo: the rewritten text is as valid at 0003, and the old text is gone."""
