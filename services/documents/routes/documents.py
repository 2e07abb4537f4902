"""`/documents`: upload, list, read, download, delete and search one's own documents."""

import uuid
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from services.documents.content_types import ALLOWED
from services.documents.deps import DocumentsDep
from services.documents.models import Document
from services.documents.routes.uploads import UPLOAD_ERRORS, multipart_body, upload_from
from services.documents.schemas import (
    DocumentResponse,
    DocumentSort,
    DocumentStatus,
    SearchRequest,
    SearchResult,
)
from services.documents.service import documents, downloads
from services.documents.service.documents import DocumentFilters
from services.documents.storage import ObjectNotFoundError
from shared.deps import CurrentIdentity, PageDep, SessionDep
from shared.errors import NotFound
from shared.openapi import error_responses
from shared.pagination import Page, SortOrder
from shared.text import Text

router = APIRouter(prefix="/api/v1/documents", tags=["documents"])

MimeType = Text


@router.post(
    "",
    response_model=DocumentResponse,
    status_code=201,
    openapi_extra=multipart_body(with_title=True),
    responses=UPLOAD_ERRORS,
    summary="Upload a document",
    description=(
        "Multipart form with `file` and an optional `title`. The type is decided from the "
        f"content ({', '.join(sorted(ALLOWED))}); the file is processed in the background "
        "(`status` goes from `processing` to `ready` or `failed`). 413 PAYLOAD_TOO_LARGE past "
        "DOCUMENTS_MAX_BYTES, 413 STORAGE_QUOTA_EXCEEDED past the user's quota, 415 "
        "UNSUPPORTED_MEDIA_TYPE for a type not accepted or a name that does not match."
    ),
)
async def upload_document(
    request: Request,
    response: Response,
    identity: CurrentIdentity,
    session: SessionDep,
    collaborators: DocumentsDep,
) -> Document:
    document = await upload_from(request, session, collaborators, identity)
    response.headers["Location"] = f"/api/v1/documents/{document.id}"
    return document


@router.get("", response_model=Page[DocumentResponse])
async def list_documents(
    page: PageDep,
    identity: CurrentIdentity,
    session: SessionDep,
    status: DocumentStatus | None = None,
    mime_type: MimeType | None = Query(None, max_length=100, description="e.g. application/pdf"),
    search: Text | None = Query(None, max_length=200, description="Start of a word in the title"),
    sort: DocumentSort = "created_at",
    order: SortOrder = "desc",
) -> dict[str, Any]:
    filters = DocumentFilters(
        status=status, mime_type=mime_type, search=search, sort=sort, order=order
    )
    rows, pagination = await documents.list_documents(session, identity, filters, page)
    return {"data": rows, "pagination": pagination}


@router.post("/search", response_model=list[SearchResult])
async def search_documents(
    body: SearchRequest, identity: CurrentIdentity, session: SessionDep
) -> list[Any]:
    """The caller's best matching passages among their `ready` documents, best first."""
    return await documents.search_documents(session, identity, body)


@router.get("/{document_id}", response_model=DocumentResponse)
async def get_document(
    document_id: uuid.UUID, identity: CurrentIdentity, session: SessionDep
) -> Document:
    return await documents.get_document(session, identity, document_id)


@router.get(
    "/{document_id}/content",
    response_class=StreamingResponse,
    responses={
        200: {"description": "The file, as an attachment", "content": {"*/*": {}}},
        206: {"description": "The requested range", "content": {"*/*": {}}},
        304: {"description": "Not modified (If-None-Match)"},
        **error_responses(416),
    },
    summary="Download a document",
)
async def download_document(
    document_id: uuid.UUID,
    request: Request,
    identity: CurrentIdentity,
    session: SessionDep,
    collaborators: DocumentsDep,
) -> Response:
    """The exact bytes uploaded, always as an attachment (`Content-Disposition`,
    `X-Content-Type-Options: nosniff`); one `Range: bytes=…` is honoured (206), and the
    `ETag` is the file's SHA-256."""
    document = await documents.get_document(session, identity, document_id)
    headers = downloads.download_headers(document)
    if downloads.not_modified(request.headers.get("if-none-match"), document):
        return Response(status_code=304, headers=headers)
    byte_range = downloads.requested_range(
        request.headers.get("range"), request.headers.get("if-range"), document
    )
    start, end = (byte_range.start, byte_range.end) if byte_range else (0, document.size - 1)
    try:
        body = await collaborators.store.open(document.storage_key, start, end)
    except ObjectNotFoundError as missing:
        raise NotFound("The document's file is missing") from missing
    headers["Content-Length"] = str(end - start + 1)
    status = 200
    if byte_range is not None:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{document.size}"
    return StreamingResponse(body, status, headers=headers, media_type=document.mime_type)


@router.delete("/{document_id}", status_code=204)
async def delete_document(
    document_id: uuid.UUID,
    identity: CurrentIdentity,
    session: SessionDep,
    collaborators: DocumentsDep,
) -> Response:
    await documents.delete_document(session, collaborators, identity, document_id)
    return Response(status_code=204)
