"""What documents builds beyond the shared collaborators: the object store that holds the
files and the worker that extracts their text."""

from typing import Annotated

from fastapi import Depends

from services.documents.processing import DocumentProcessor
from services.documents.settings import DocumentsSettings
from services.documents.storage import ObjectStore, store_from
from shared.deps import collaborators_of
from shared.health import ReadinessCheck
from shared.security import KeySource
from shared.service import Collaborators


class DocumentsCollaborators(Collaborators[DocumentsSettings]):
    def __init__(self, settings: DocumentsSettings, *, key_source: KeySource | None = None) -> None:
        super().__init__(settings, key_source=key_source)
        self.store: ObjectStore = store_from(
            settings.documents_storage,
            root=settings.local_root,
            endpoint_url=settings.s3_endpoint_url,
            bucket=settings.s3_bucket,
            access_key=settings.s3_access_key_id,
            secret_key=settings.s3_secret_access_key,
            region=settings.s3_region,
            part_size=settings.s3_part_size_bytes,
        )
        self.processor = DocumentProcessor(self.database, self.store, settings)

    def readiness_checks(self) -> dict[str, ReadinessCheck]:
        return super().readiness_checks() | {"storage": self.store.ping}

    async def start(self) -> None:
        await super().start()
        await self.store.start()
        self.processor.start()

    async def stop(self) -> None:
        try:
            await self.processor.stop()
            await self.store.close()
        finally:
            await super().stop()


DocumentsDep = Annotated[DocumentsCollaborators, Depends(collaborators_of(DocumentsCollaborators))]
