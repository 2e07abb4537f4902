"""Text extraction off the request path.

An upload commits its document as `processing` and wakes the processor. The processor
claims such documents for a while (`claimed_until`, rows locked with SKIP LOCKED on
PostgreSQL, so that replicas share the work), copies each file to a temporary file and
reads it in a child process with a time, page, text and memory budget
(`extract_with_timeout`). The chunks and the `ready` or `failed` status commit in one
transaction with the `document.processed` event. A worker that dies leaves its claim to
expire; a file that keeps killing its worker ends `failed` after `MAX_ATTEMPTS`."""

import asyncio
import contextlib
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

from sqlalchemy import or_, select

from services.documents import metrics
from services.documents.events import record_document_processed
from services.documents.extraction import (
    Budget,
    Extracted,
    ExtractionFailed,
    bytes_needed,
    chunk,
    extract_with_timeout,
)
from services.documents.models import FAILED, PROCESSING, READY, Chunk, Document
from services.documents.settings import DocumentsSettings
from services.documents.storage import ObjectNotFoundError, ObjectStore
from shared.db import Database, utcnow
from shared.logging import get_logger
from shared.wakeups import WakeOnCommitLoop

log = get_logger(__name__)

WORK_FLAG = "documents.processing"
POLL_SECONDS = 10.0
MAX_ATTEMPTS = 3
# Beyond the extraction's own time budget: copying the file out of the store and saving.
CLAIM_MARGIN_SECONDS = 120.0
# The child process's address space; pypdf on a large file needs a few hundred MiB.
EXTRACTION_MEMORY_BYTES = 2 * 1024 * 1024 * 1024


class DocumentProcessor:
    def __init__(self, database: Database, store: ObjectStore, settings: DocumentsSettings) -> None:
        self._database = database
        self._store = store
        self._settings = settings
        self._budget = Budget(
            max_seconds=settings.documents_extraction_seconds,
            max_pages=settings.documents_extraction_max_pages,
            max_chars=settings.documents_extraction_max_chars,
            max_inflated_bytes=settings.documents_extraction_max_inflated_bytes,
            max_ratio=settings.documents_extraction_max_ratio,
        )
        self._claim_for = timedelta(seconds=settings.documents_extraction_seconds)
        self._claim_for += timedelta(seconds=CLAIM_MARGIN_SECONDS)
        self._loop = WakeOnCommitLoop(
            database, WORK_FLAG, self.process_waiting, poll_seconds=POLL_SECONDS, name="documents"
        )

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def process_waiting(self) -> None:
        """Processes every document waiting, a batch of claims at a time."""
        concurrency = self._settings.documents_extraction_concurrency
        while claimed := await self._claim(concurrency):
            await asyncio.gather(*(self._process(document_id) for document_id in claimed))

    async def _claim(self, count: int) -> list[uuid.UUID]:
        now = utcnow()
        given_up = 0
        async with self._database.unit_of_work(write_lock=True) as session:
            documents = (
                await session.scalars(
                    select(Document)
                    .where(
                        Document.status == PROCESSING,
                        or_(Document.claimed_until.is_(None), Document.claimed_until < now),
                    )
                    .order_by(Document.created_at)
                    .limit(count)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            claimed = []
            for document in documents:
                if document.processing_attempts >= MAX_ATTEMPTS:
                    mark_failed(document, "processing stopped its worker too many times")
                    record_document_processed(session, document)
                    given_up += 1
                    continue
                document.processing_attempts += 1
                document.claimed_until = now + self._claim_for
                claimed.append(document.id)
        if given_up:
            metrics.PROCESSED.labels(FAILED).inc(given_up)
        return claimed

    async def _process(self, document_id: uuid.UUID) -> None:
        started = time.perf_counter()
        async with self._database.unit_of_work() as session:
            document = await session.get(Document, document_id)
            if document is None:
                return
            key, mime_type = document.storage_key, document.mime_type
        try:
            extracted: Extracted | None = await self._extract(key, mime_type)
            reason = None
        except ExtractionFailed as failure:
            extracted, reason = None, str(failure)
        except ObjectNotFoundError:
            extracted, reason = None, "the stored file is missing"
        status = await self._save(document_id, extracted, reason)
        if status is not None:
            metrics.PROCESSED.labels(status).inc()
            metrics.PROCESSING_DURATION.labels(status).observe(time.perf_counter() - started)

    async def _extract(self, key: str, mime_type: str) -> Extracted:
        with tempfile.TemporaryDirectory(prefix="lyceum-document-") as directory:
            path = Path(directory) / "file"
            await self._copy_out(key, path, bytes_needed(mime_type, self._budget))
            return await asyncio.to_thread(
                extract_with_timeout,
                path,
                mime_type,
                self._budget,
                memory_limit_bytes=EXTRACTION_MEMORY_BYTES,
            )

    async def _copy_out(self, key: str, path: Path, limit: int | None) -> None:
        body = await self._store.open(key, 0, None if limit is None else limit - 1)
        try:
            with path.open("wb") as file:
                async for piece in body:
                    await asyncio.to_thread(file.write, piece)
        finally:
            with contextlib.suppress(Exception):
                await body.aclose()  # type: ignore[attr-defined]

    async def _save(
        self, document_id: uuid.UUID, extracted: Extracted | None, reason: str | None
    ) -> str | None:
        """The document's new status; None when it was deleted or finished meanwhile."""
        async with self._database.unit_of_work(write_lock=True) as session:
            document = await session.scalar(
                select(Document).where(Document.id == document_id).with_for_update()
            )
            if document is None or document.status != PROCESSING:
                return None  # deleted meanwhile, or finished by another worker
            if extracted is None:
                mark_failed(document, reason or "unreadable")
            else:
                chunks = chunk(
                    extracted.pages,
                    max_chars=self._settings.documents_chunk_chars,
                    overlap=self._settings.documents_chunk_overlap_chars,
                )
                session.add_all(
                    Chunk(
                        document_id=document.id,
                        user_id=document.user_id,
                        position=piece.index,
                        page=piece.page,
                        text=piece.text,
                    )
                    for piece in chunks
                )
                numbered = [page.number for page in extracted.pages if page.number is not None]
                document.page_count = max(numbered) if numbered else None
                document.chunk_count = len(chunks)
                document.status = READY
                document.processed_at = utcnow()
                document.claimed_until = None
            record_document_processed(session, document)
        log.info(
            "document_processed",
            document_id=str(document_id),
            status=document.status,
            chunks=document.chunk_count,
            reason=document.failure_reason,
        )
        return document.status


def mark_failed(document: Document, reason: str) -> None:
    document.status = FAILED
    document.failure_reason = reason[:1000]
    document.processed_at = utcnow()
    document.claimed_until = None
