"""The documents processor counts what becomes of each document it processes (ready or
failed) and how long that took: on a migrated SQLite database and files on local disk,
with the real extraction in its child process."""

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import services.documents
from services.documents.models import PROCESSING, Document
from services.documents.processing import MAX_ATTEMPTS, DocumentProcessor
from services.documents.settings import DocumentsSettings
from services.documents.storage import LocalStore
from shared.db import Database
from shared.metrics import REGISTRY
from shared.migrations import upgrade_to_head_async

MIGRATIONS = Path(services.documents.__file__).parent / "migrations"


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'documents.db'}"
    await upgrade_to_head_async(MIGRATIONS, url)
    db = Database(url)
    yield db
    await db.dispose()


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def document(user_id: uuid.UUID, key: str, attempts: int = 0) -> Document:
    return Document(
        user_id=user_id,
        filename="notes.txt",
        title="Notes",
        size=40,
        mime_type="text/plain",
        sha256="0" * 64,
        storage_key=key,
        status=PROCESSING,
        processing_attempts=attempts,
    )


async def test_processed_documents_are_counted_by_outcome(
    database: Database, tmp_path: Path
) -> None:
    store = LocalStore(tmp_path / "store", fsync=False)
    await store.start()
    user_id = uuid.uuid4()
    await store.put(
        f"documents/{user_id}/readable",
        chunks(b"The Twelve Tables were set down in 450 BC."),
        content_type="text/plain",
    )
    async with database.unit_of_work() as session:
        session.add_all(
            [
                document(user_id, f"documents/{user_id}/readable"),
                document(user_id, f"documents/{user_id}/missing"),
                document(user_id, f"documents/{user_id}/killer", attempts=MAX_ATTEMPTS),
            ]
        )
    ready = sample("document_processing_total", outcome="ready")
    failed = sample("document_processing_total", outcome="failed")
    timed = {
        o: sample("document_processing_duration_seconds_count", outcome=o)
        for o in ("ready", "failed")
    }

    await DocumentProcessor(database, store, DocumentsSettings()).process_waiting()

    assert sample("document_processing_total", outcome="ready") == ready + 1
    # The missing file, and the one that stopped its worker too many times.
    assert sample("document_processing_total", outcome="failed") == failed + 2
    assert (
        sample("document_processing_duration_seconds_count", outcome="ready") == timed["ready"] + 1
    )
    # Only documents that were processed have a duration.
    assert (
        sample("document_processing_duration_seconds_count", outcome="failed")
        == timed["failed"] + 1
    )
