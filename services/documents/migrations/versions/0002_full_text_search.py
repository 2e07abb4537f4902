"""full text search over chunks

PostgreSQL: a stored generated `search_vector` column on chunks with a GIN index.
SQLite: an FTS5 external-content table `chunks_fts` over chunks (by rowid), kept in
sync by triggers. Neither is part of the models: search.py queries them directly.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 14:45:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SQLITE_UPGRADE = (
    """
    CREATE VIRTUAL TABLE chunks_fts USING fts5(
        text, content='chunks', content_rowid='rowid', tokenize='porter unicode61'
    )
    """,
    """
    CREATE TRIGGER chunks_fts_after_insert AFTER INSERT ON chunks BEGIN
        INSERT INTO chunks_fts(rowid, text) VALUES (new.rowid, new.text);
    END
    """,
    """
    CREATE TRIGGER chunks_fts_after_delete AFTER DELETE ON chunks BEGIN
        INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.rowid, old.text);
    END
    """,
    """
    CREATE TRIGGER chunks_fts_after_update AFTER UPDATE ON chunks BEGIN
        INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.rowid, old.text);
        INSERT INTO chunks_fts(rowid, text) VALUES (new.rowid, new.text);
    END
    """,
    # Chunks written before this revision.
    "INSERT INTO chunks_fts(chunks_fts) VALUES ('rebuild')",
)

_SQLITE_DOWNGRADE = (
    "DROP TRIGGER IF EXISTS chunks_fts_after_update",
    "DROP TRIGGER IF EXISTS chunks_fts_after_delete",
    "DROP TRIGGER IF EXISTS chunks_fts_after_insert",
    "DROP TABLE IF EXISTS chunks_fts",
)

_POSTGRES_UPGRADE = (
    """
    ALTER TABLE chunks ADD COLUMN search_vector tsvector
        GENERATED ALWAYS AS (to_tsvector('english', coalesce(text, ''))) STORED
    """,
    "CREATE INDEX ix_chunks_search_vector ON chunks USING gin (search_vector)",
)

_POSTGRES_DOWNGRADE = (
    "DROP INDEX IF EXISTS ix_chunks_search_vector",
    "ALTER TABLE chunks DROP COLUMN IF EXISTS search_vector",
)


def _statements(sqlite: Sequence[str], postgres: Sequence[str]) -> Sequence[str]:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        return sqlite
    if dialect == "postgresql":
        return postgres
    raise NotImplementedError(f"full text search is not implemented for {dialect}")


def upgrade() -> None:
    for statement in _statements(_SQLITE_UPGRADE, _POSTGRES_UPGRADE):
        op.execute(statement)


def downgrade() -> None:
    for statement in _statements(_SQLITE_DOWNGRADE, _POSTGRES_DOWNGRADE):
        op.execute(statement)
