"""`/files`: the reference file API, over the same documents and store."""

import uuid
from typing import Any

from fastapi import APIRouter, Query, Request, Response

from services.documents.deps import DocumentsDep
from services.documents.models import Document
from services.documents.routes.uploads import UPLOAD_ERRORS, multipart_body, upload_from
from services.documents.schemas import FileDeleted, FileList, FileResponse
from services.documents.service import documents
from shared.deps import CurrentIdentity, SessionDep

router = APIRouter(prefix="/api/v1/files", tags=["files"])


@router.post(
    "/upload",
    response_model=FileResponse,
    status_code=201,
    openapi_extra=multipart_body(with_title=False),
    responses=UPLOAD_ERRORS,
    summary="Upload a file",
)
async def upload_file(
    request: Request,
    response: Response,
    identity: CurrentIdentity,
    session: SessionDep,
    collaborators: DocumentsDep,
) -> Document:
    """Multipart form with `file`; the same checks and processing as `POST /documents`."""
    document = await upload_from(request, session, collaborators, identity)
    response.headers["Location"] = f"/api/v1/files/{document.id}"
    return document


@router.get("", response_model=FileList)
async def list_files(
    identity: CurrentIdentity,
    session: SessionDep,
    limit: int = Query(50, ge=1, le=100),
    offset: int = Query(0, ge=0, le=1_000_000),
) -> dict[str, Any]:
    rows, total = await documents.count_and_slice(session, identity, limit=limit, offset=offset)
    return {"files": rows, "total": total, "limit": limit, "offset": offset}


@router.get("/{file_id}", response_model=FileResponse)
async def get_file(file_id: uuid.UUID, identity: CurrentIdentity, session: SessionDep) -> Document:
    return await documents.get_document(session, identity, file_id)


@router.delete("/{file_id}", response_model=FileDeleted)
async def delete_file(
    file_id: uuid.UUID,
    identity: CurrentIdentity,
    session: SessionDep,
    collaborators: DocumentsDep,
) -> FileDeleted:
    await documents.delete_document(session, collaborators, identity, file_id)
    return FileDeleted()
