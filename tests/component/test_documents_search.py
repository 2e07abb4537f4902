"""Documents' full text search against real databases: a SQLite file and a PostgreSQL
database of its own, each brought to head by the service's Alembic migrations."""

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import delete, func, inspect, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.documents.models import FAILED, PROCESSING, READY, Chunk, Document
from services.documents.processing import DocumentProcessor
from services.documents.search import Hit, fts5_match, search
from services.documents.settings import DocumentsSettings
from services.documents.storage import LocalStore
from shared.db import Database
from shared.migrations import alembic_config, upgrade_to_head_async
from tests.databases import scratch_database_url

MIGRATIONS = Path(__file__).resolve().parents[2] / "services" / "documents" / "migrations"

ALICE = uuid.UUID("00000000-0000-4000-8000-00000000a11c")
BOB = uuid.UUID("00000000-0000-4000-8000-000000000b0b")

HOSTILE_QUERIES = [
    '"',
    '""',
    '"""',
    "*",
    "telescope*",
    "NEAR(",
    "NEAR(telescope mirror, 2)",
    "AND OR",
    "AND",
    "OR telescope OR",
    "NOT telescope",
    "')--",
    "'; DROP TABLE chunks; --",
    "text:telescope",
    "{text}: telescope",
    "^telescope",
    "telescope + mirror",
    "(telescope",
    "-",
    "--telescope",
    '-"',
    '"telescope',
    "télescope miroir 望远镜 🔭",
    "\u200b\ufeff",
    "tele\x00scope",
    "a" * 5000,
    "telescope " * 500,
    '"mirror ' * 700,
]


@dataclass
class Corpus:
    db: Database
    astronomy: uuid.UUID
    optics: uuid.UUID
    untitled: uuid.UUID
    processing: uuid.UUID
    failed: uuid.UUID
    bobs: uuid.UUID

    async def search(
        self,
        query: str,
        *,
        user_id: uuid.UUID = ALICE,
        limit: int = 20,
        document_ids: list[uuid.UUID] | None = None,
    ) -> list[Hit]:
        async with self.db.unit_of_work() as session:
            return await search(session, user_id, query, limit=limit, document_ids=document_ids)


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with scratch_database_url(request.param, tmp_path, "documents_search") as url:
        yield url


@pytest.fixture
async def corpus(database_url: str) -> AsyncIterator[Corpus]:
    await upgrade_to_head_async(MIGRATIONS, database_url)
    db = Database(database_url)
    try:
        async with db.unit_of_work() as session:
            astronomy = await _document(
                session,
                ALICE,
                "Astronomy notes",
                [
                    "Stars and galaxies: an introduction to observing the night sky.",
                    "A reflecting telescope gathers light with a curved mirror.",
                    "The quick brown fox watched the planets through a refractor telescope.",
                    "Comets are icy bodies; their tails point away from the sun.",
                ],
            )
            optics = await _document(
                session,
                ALICE,
                "Optics handbook",
                [
                    "A quick survey of lenses. The brown lens coating and the fox logo.",
                    "Mirror coatings: aluminium and silver, and how a mirror is polished.",
                    "Telescope makers grind each mirror by hand.",
                ],
            )
            untitled = await _document(
                session, ALICE, "", ["Binoculars are two small telescopes."], filename="bino.txt"
            )
            processing = await _document(
                session, ALICE, "Half done", ["Telescope mirror notes."], status=PROCESSING
            )
            failed = await _document(
                session, ALICE, "Broken", ["Telescope mirror notes."], status=FAILED
            )
            bobs = await _document(session, BOB, "Bob's telescope", ["Telescope mirror notes."])
        yield Corpus(db, astronomy, optics, untitled, processing, failed, bobs)
    finally:
        await db.dispose()


async def _document(
    session: AsyncSession,
    user_id: uuid.UUID,
    title: str,
    pages: list[str],
    *,
    status: str = READY,
    filename: str = "notes.pdf",
) -> uuid.UUID:
    document = Document(
        id=uuid.uuid4(),
        user_id=user_id,
        filename=filename,
        title=title,
        size=1234,
        mime_type="application/pdf",
        sha256="0" * 64,
        storage_key=f"documents/{uuid.uuid4()}",
        status=status,
        page_count=len(pages),
        chunk_count=len(pages),
    )
    session.add(document)
    await session.flush()  # no relationship orders the inserts
    session.add_all(
        Chunk(document_id=document.id, user_id=user_id, position=i, page=i + 1, text=page)
        for i, page in enumerate(pages)
    )
    return document.id


async def test_a_phrase_ranks_its_page_first_with_a_marked_snippet(corpus: Corpus) -> None:
    hits = await corpus.search('"quick brown fox"')

    assert hits, "the phrase is on page 3 of the astronomy notes"
    first = hits[0]
    assert (first.document_id, first.page, first.title) == (corpus.astronomy, 3, "Astronomy notes")
    assert "<mark>" in first.snippet
    assert "</mark>" in first.snippet
    assert "quick" in first.snippet.lower()
    # The optics handbook has the words, not the phrase.
    assert all(hit.document_id != corpus.optics for hit in hits)


async def test_a_snippet_is_escaped_html_whose_only_tags_are_the_marks(corpus: Corpus) -> None:
    page = 'Xylophone notes <script>alert("x")</script> & <mark>fake</mark> <b>bold</b>.'
    async with corpus.db.unit_of_work() as session:
        await _document(session, ALICE, "Markup", [page])

    [hit] = await corpus.search("xylophone")

    assert "<mark>Xylophone</mark>" in hit.snippet
    # The one match is the only markup. (SQLite keeps the document's tags as escaped text;
    # PostgreSQL's parser leaves them out of a headline.)
    assert re.findall(r"<[^<>]*>?", hit.snippet) == ["<mark>", "</mark>"]
    assert "&amp;" in hit.snippet
    assert 'alert("x")' in hit.snippet


async def test_a_documents_own_match_characters_never_become_marks(
    corpus: Corpus, tmp_path: Path
) -> None:
    """The databases mark matches with U+E000 and U+E001: a document holding them, around
    the very word searched for, gets them stored as U+FFFD and its snippet only the marks
    of the real match."""
    store = LocalStore(tmp_path / "store", fsync=False)
    await store.start()
    key = f"documents/{ALICE}/{uuid.uuid4()}"
    content = "Tuning a \ue000zither\ue001 by ear. A stray \ue001 then \ue000 too."

    async def body() -> AsyncIterator[bytes]:
        yield content.encode()

    await store.put(key, body(), content_type="text/plain")
    async with corpus.db.unit_of_work() as session:
        document = Document(
            user_id=ALICE,
            filename="zither.txt",
            title="Zither",
            size=len(content.encode()),
            mime_type="text/plain",
            sha256="0" * 64,
            storage_key=key,
            status=PROCESSING,
        )
        session.add(document)
    await DocumentProcessor(corpus.db, store, DocumentsSettings()).process_waiting()

    async with corpus.db.unit_of_work() as session:
        stored = (
            await session.scalars(select(Chunk.text).where(Chunk.document_id == document.id))
        ).all()
    assert stored == ["Tuning a \ufffdzither\ufffd by ear. A stray \ufffd then \ufffd too."]
    [hit] = await corpus.search("zither")
    assert hit.document_id == document.id
    assert re.findall(r"<[^<>]*>?", hit.snippet) == ["<mark>", "</mark>"]
    assert "\ufffd<mark>zither</mark>\ufffd" in hit.snippet
    assert hit.snippet.count("\ufffd") == 4


async def test_hits_are_ordered_by_score(corpus: Corpus) -> None:
    hits = await corpus.search("mirror")

    assert len(hits) >= 2
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)
    # Page 2 of the handbook says "mirror" twice.
    assert (hits[0].document_id, hits[0].page) == (corpus.optics, 2)


async def test_words_are_anded(corpus: Corpus) -> None:
    hits = await corpus.search("telescope mirror")

    assert {(hit.document_id, hit.page) for hit in hits} == {
        (corpus.astronomy, 2),
        (corpus.optics, 3),
    }


async def test_or_between_words(corpus: Corpus) -> None:
    hits = await corpus.search("comets or binoculars")

    assert {(hit.document_id, hit.page) for hit in hits} == {
        (corpus.astronomy, 4),
        (corpus.untitled, 1),
    }


async def test_an_exclusion_drops_a_chunk(corpus: Corpus) -> None:
    hits = await corpus.search("telescope -refractor")
    pages = {(hit.document_id, hit.page) for hit in hits}

    assert (corpus.astronomy, 2) in pages
    assert (corpus.astronomy, 3) not in pages

    phrase_excluded = await corpus.search('telescope -"brown fox"')
    assert (corpus.astronomy, 3) not in {(h.document_id, h.page) for h in phrase_excluded}


async def test_stemming(corpus: Corpus) -> None:
    hits = await corpus.search("telescopes")

    assert {hit.document_id for hit in hits} == {corpus.astronomy, corpus.optics, corpus.untitled}


async def test_another_users_documents_are_never_returned(corpus: Corpus) -> None:
    for query in ("telescope", "mirror notes", '"telescope mirror notes"', "bob"):
        hits = await corpus.search(query)
        assert corpus.bobs not in {hit.document_id for hit in hits}

    # Not even when asked for by id.
    assert await corpus.search("telescope", document_ids=[corpus.bobs]) == []

    bobs_hits = await corpus.search("telescope mirror", user_id=BOB)
    assert {hit.document_id for hit in bobs_hits} == {corpus.bobs}


async def test_documents_not_ready_are_never_returned(corpus: Corpus) -> None:
    hidden = {corpus.processing, corpus.failed}
    hits = await corpus.search('"telescope mirror notes"')
    assert hits == []
    hits = await corpus.search("telescope", document_ids=sorted(hidden))
    assert hits == []

    async with corpus.db.unit_of_work() as session:
        await session.execute(
            update(Document).where(Document.id == corpus.processing).values(status=READY)
        )
    hits = await corpus.search('"telescope mirror notes"')
    assert {hit.document_id for hit in hits} == {corpus.processing}


async def test_document_ids_restrict_the_search(corpus: Corpus) -> None:
    hits = await corpus.search("telescope", document_ids=[corpus.optics])
    assert hits
    assert {hit.document_id for hit in hits} == {corpus.optics}

    assert await corpus.search("telescope", document_ids=[]) == []
    assert await corpus.search("telescope", document_ids=[uuid.uuid4()]) == []


async def test_limit(corpus: Corpus) -> None:
    everything = await corpus.search("telescope")
    assert len(everything) == 4

    top = await corpus.search("telescope", limit=2)
    assert [hit.chunk_id for hit in top] == [hit.chunk_id for hit in everything[:2]]
    assert await corpus.search("telescope", limit=0) == []


async def test_title_falls_back_to_the_filename(corpus: Corpus) -> None:
    hits = await corpus.search("binoculars")

    assert [(hit.document_id, hit.title) for hit in hits] == [(corpus.untitled, "bino.txt")]


@pytest.mark.parametrize("query", ["", "   ", "the and of", '"the"', "-telescope", "- -mirror"])
async def test_a_query_with_nothing_to_look_for_finds_nothing(corpus: Corpus, query: str) -> None:
    assert await corpus.search(query) == []


async def test_hostile_queries_return_a_list(corpus: Corpus) -> None:
    for query in HOSTILE_QUERIES:
        hits = await corpus.search(query)
        assert isinstance(hits, list), query
    # Operators are words, quoted: "NEAR(telescope mirror, 2)" still finds the words.
    near = await corpus.search("NEAR(telescope mirror, 2)")
    assert {(hit.document_id, hit.page) for hit in near} <= {
        (corpus.astronomy, 2),
        (corpus.optics, 3),
    }
    assert await corpus.search("telescope*"), "the star is dropped, the word is searched"


async def test_deleting_a_document_removes_its_chunks_from_the_index(corpus: Corpus) -> None:
    assert corpus.astronomy in {hit.document_id for hit in await corpus.search("telescope")}

    async with corpus.db.unit_of_work() as session:
        await session.execute(delete(Document).where(Document.id == corpus.astronomy))

    hits = await corpus.search("telescope")
    assert hits
    assert corpus.astronomy not in {hit.document_id for hit in hits}
    assert await corpus.search('"quick brown fox"') == []
    async with corpus.db.unit_of_work() as session:
        left = await session.scalar(
            select(func.count()).select_from(Chunk).where(Chunk.document_id == corpus.astronomy)
        )
        assert left == 0
        if corpus.db.is_sqlite:
            # The FTS index holds exactly what the table holds.
            await session.execute(
                text("INSERT INTO chunks_fts(chunks_fts) VALUES ('integrity-check')")
            )
            indexed = await session.scalar(
                text("SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH 'telescope'")
            )
            assert indexed == 5  # optics, binoculars, the two not ready, bob's


async def test_edited_chunks_are_reindexed(corpus: Corpus) -> None:
    async with corpus.db.unit_of_work() as session:
        await session.execute(
            update(Chunk)
            .where(Chunk.document_id == corpus.astronomy, Chunk.page == 4)
            .values(text="Nebulae glow in hydrogen light.")
        )

    assert await corpus.search("comets") == []
    hits = await corpus.search("nebulae")
    assert [(hit.document_id, hit.page) for hit in hits] == [(corpus.astronomy, 4)]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("telescope mirror", '("telescope" AND "mirror")'),
        ('"quick brown fox"', '("quick brown fox")'),
        ("telescope -refractor", '(("telescope") NOT ("refractor"))'),
        ("comets or binoculars", '("comets") OR ("binoculars")'),
        ('NEAR( "a', '("near")'),
        ("e-mail", '("e mail")'),
        ("the", None),
        ("-x", None),
    ],
)
def test_fts5_translation(query: str, expected: str | None) -> None:
    assert fts5_match(query) == expected


async def test_the_search_migration_downgrades_and_upgrades_again(database_url: str) -> None:
    config = alembic_config(MIGRATIONS, database_url)
    await upgrade_to_head_async(MIGRATIONS, database_url)
    await asyncio.to_thread(command.downgrade, config, "0001")

    db = Database(database_url)
    try:
        async with db.engine.connect() as connection:
            names = await connection.run_sync(
                lambda sync: (
                    inspect(sync).get_table_names(),
                    [c["name"] for c in inspect(sync).get_columns("chunks")],
                    [i["name"] for i in inspect(sync).get_indexes("chunks")],
                )
            )
        tables, columns, indexes = names
        assert "chunks" in tables
        assert not [t for t in tables if t.startswith("chunks_fts")]
        assert "search_vector" not in columns
        assert "ix_chunks_search_vector" not in indexes
    finally:
        await db.dispose()

    await upgrade_to_head_async(MIGRATIONS, database_url)
