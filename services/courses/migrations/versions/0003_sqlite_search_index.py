"""sqlite search index

`search` looks for a part of the title or the description. PostgreSQL answers it from the
trigram indexes of 0001; SQLite would scan every course, so it gets an FTS5 index with
the trigram tokenizer (substring matches of three characters or more, case-insensitive),
kept in step with `courses` by triggers. It indexes `courses.rowid`, which nothing
rewrites: `VACUUM`, the one thing that would renumber it, is never run on this database.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 17:10:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CREATE = [
    """CREATE VIRTUAL TABLE courses_search USING fts5(
        title, description, content='courses', content_rowid='rowid', tokenize='trigram'
    )""",
    """CREATE TRIGGER courses_search_insert AFTER INSERT ON courses BEGIN
        INSERT INTO courses_search(rowid, title, description)
        VALUES (new.rowid, new.title, new.description);
    END""",
    """CREATE TRIGGER courses_search_delete AFTER DELETE ON courses BEGIN
        INSERT INTO courses_search(courses_search, rowid, title, description)
        VALUES ('delete', old.rowid, old.title, old.description);
    END""",
    """CREATE TRIGGER courses_search_update AFTER UPDATE OF title, description ON courses BEGIN
        INSERT INTO courses_search(courses_search, rowid, title, description)
        VALUES ('delete', old.rowid, old.title, old.description);
        INSERT INTO courses_search(rowid, title, description)
        VALUES (new.rowid, new.title, new.description);
    END""",
    "INSERT INTO courses_search(courses_search) VALUES ('rebuild')",
]


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for statement in CREATE:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for trigger in ("insert", "delete", "update"):
        op.execute(f"DROP TRIGGER IF EXISTS courses_search_{trigger}")
    op.execute("DROP TABLE IF EXISTS courses_search")
