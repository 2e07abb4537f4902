"""Documents' migration 0004, on SQLite and PostgreSQL: chunks stored before it that hold
the characters search reserves for marking matches (U+E000, U+E001) get U+FFFD instead,
the other chunks are left alone, the search index (FTS5 on SQLite, the generated
`search_vector` on PostgreSQL) follows, and the migration goes back down, changing
nothing."""

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import BigInteger, Integer, String, Text, Uuid, column, select, table, text
from sqlalchemy.ext.asyncio import create_async_engine

from services.documents.models import Chunk
from services.documents.search import search
from shared.db import Database, UTCDateTime, utcnow
from shared.registry import DOCUMENTS
from tests.databases import migrate as migrate_service
from tests.databases import scratch_database_url

BEFORE = "0003"
REWRITE = "0004"
# The tables as revision 0003 left them (the columns the rows below fill).
OLD_DOCUMENTS = table(
    "documents",
    column("id", Uuid()),
    column("user_id", Uuid()),
    column("filename", String()),
    column("title", String()),
    column("size", BigInteger()),
    column("mime_type", String()),
    column("sha256", String()),
    column("storage_key", String()),
    column("status", String()),
    column("chunk_count", Integer()),
    column("processing_attempts", Integer()),
    column("created_at", UTCDateTime()),
    column("updated_at", UTCDateTime()),
)
OLD_CHUNKS = table(
    "chunks",
    column("id", Uuid()),
    column("document_id", Uuid()),
    column("user_id", Uuid()),
    column("position", Integer()),
    column("page", Integer()),
    column("text", Text()),
)
# Before and after the migration.
TEXTS = [
    (
        "Tuning a \ue000harpsichord\ue001 by ear, and a stray \ue001.",
        "Tuning a \ufffdharpsichord\ufffd by ear, and a stray \ufffd.",
    ),
    ("Only a start \ue000 here, near the zither.", "Only a start \ufffd here, near the zither."),
    (
        "Other private use \ue002 and a zither \ufffd.",
        "Other private use \ue002 and a zither \ufffd.",
    ),
    ("A plain zither.", "A plain zither."),
]


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with scratch_database_url(request.param, tmp_path, "documents") as url:
        yield url


async def migrate(url: str, revision: str, *, down: bool = False) -> None:
    await migrate_service(DOCUMENTS, url, revision, down=down)


# A row for each chunk updated, to tell that the migration leaves the others alone.
COUNT_UPDATES = {
    "sqlite": (
        "CREATE TABLE chunk_updates (id TEXT)",
        """
        CREATE TRIGGER chunk_updates_after_update AFTER UPDATE ON chunks BEGIN
            INSERT INTO chunk_updates VALUES (new.id);
        END
        """,
    ),
    "postgresql": (
        "CREATE TABLE chunk_updates (id uuid)",
        """
        CREATE FUNCTION chunk_updates_note() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO chunk_updates VALUES (new.id);
            RETURN new;
        END
        $$
        """,
        """
        CREATE TRIGGER chunk_updates_after_update AFTER UPDATE ON chunks
            FOR EACH ROW EXECUTE FUNCTION chunk_updates_note()
        """,
    ),
}


async def updated_chunks(database: Database) -> int:
    async with database.unit_of_work() as session:
        return int(await session.scalar(text("SELECT count(*) FROM chunk_updates")) or 0)


async def stored_texts(database: Database) -> list[str]:
    async with database.unit_of_work() as session:
        return list((await session.scalars(select(Chunk.text).order_by(Chunk.position))).all())


async def test_the_match_characters_of_stored_chunks_become_replacement_characters(
    database_url: str,
) -> None:
    await migrate(database_url, BEFORE)
    user_id, document_id = uuid.uuid4(), uuid.uuid4()
    now = utcnow()
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                OLD_DOCUMENTS.insert().values(
                    id=document_id,
                    user_id=user_id,
                    filename="zither.txt",
                    title="Zither",
                    size=100,
                    mime_type="text/plain",
                    sha256="0" * 64,
                    storage_key=f"documents/{user_id}/{document_id}",
                    status="ready",
                    chunk_count=len(TEXTS),
                    processing_attempts=1,
                    created_at=now,
                    updated_at=now,
                )
            )
            await connection.execute(
                OLD_CHUNKS.insert(),
                [
                    {
                        "id": uuid.uuid4(),
                        "document_id": document_id,
                        "user_id": user_id,
                        "position": position,
                        "page": None,
                        "text": before,
                    }
                    for position, (before, _) in enumerate(TEXTS)
                ],
            )
            for statement in COUNT_UPDATES[connection.dialect.name]:
                await connection.execute(text(statement))
    finally:
        await engine.dispose()

    await migrate(database_url, REWRITE)
    database = Database(database_url)
    try:
        assert await stored_texts(database) == [after for _, after in TEXTS]
        assert await updated_chunks(database) == 2  # only the rows that held a character
        async with database.unit_of_work() as session:
            if database.is_sqlite:
                # The FTS index holds exactly what the table holds.
                await session.execute(
                    text("INSERT INTO chunks_fts(chunks_fts) VALUES ('integrity-check')")
                )
            hits = await search(session, user_id, "harpsichord", limit=20, document_ids=None)
        # The index has the new text: the word is found between the replacement characters,
        # and its snippet has the marks of that match only.
        [hit] = hits
        assert re.findall(r"<[^<>]*>?", hit.snippet) == ["<mark>", "</mark>"]
        assert "\ufffd<mark>harpsichord</mark>\ufffd" in hit.snippet

        await migrate(database_url, BEFORE, down=True)
        assert await stored_texts(database) == [after for _, after in TEXTS]
        await migrate(database_url, REWRITE)
        assert await stored_texts(database) == [after for _, after in TEXTS]
        assert await updated_chunks(database) == 2  # nothing left to rewrite
    finally:
        await database.dispose()
