"""The documents service, asked on the user's behalf (with the user's own access token) for
the passages of their documents that best match a message.

When it cannot answer, the message is refused rather than answered as if the user's
documents had nothing to say: 502 `DOCUMENTS_UNAVAILABLE` when it is unreachable, answers
with an error (its 401 and 403 included: they are not the client's) or with something that
is not a list of hits; 504 `UPSTREAM_TIMEOUT` when it is too slow."""

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from services.chat.sources import Source, passage_of, search_query
from shared.errors import ApiError, UpstreamTimeout
from shared.logging import get_logger
from shared.request_id import current_request_id

log = get_logger(__name__)

SEARCH_PATH = "/api/v1/documents/search"


class DocumentsUnavailable(ApiError):
    status_code, code = 502, "DOCUMENTS_UNAVAILABLE"


class SearchHit(BaseModel):
    document_id: uuid.UUID
    title: str
    page: int | None = None
    snippet: str


_HITS = TypeAdapter(list[SearchHit])


class DocumentsClient:
    def __init__(self, base_url: str, *, timeout_seconds: float, max_sources: int) -> None:
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout_seconds)
        self._timeout = timeout_seconds
        self._limit = max_sources

    async def search(
        self, token: str, question: str, document_ids: Sequence[uuid.UUID] | None = None
    ) -> list[Source]:
        """The best passages for the question among the user's ready documents (only those
        of `document_ids` when given), best first."""
        query = search_query(question)
        if query is None:
            return []
        body: dict[str, Any] = {"query": query, "limit": self._limit}
        if document_ids is not None:
            body["document_ids"] = [str(document_id) for document_id in document_ids]
        headers = {"Authorization": f"Bearer {token}"}
        request_id = current_request_id()
        if request_id:
            headers["X-Request-ID"] = request_id
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._client.post(SEARCH_PATH, json=body, headers=headers)
        except (TimeoutError, httpx.TimeoutException) as exc:
            log.warning("documents_search_failed", error="timeout")
            raise UpstreamTimeout("The documents service did not answer in time") from exc
        except httpx.HTTPError as exc:
            log.warning("documents_search_failed", error=str(exc) or type(exc).__name__)
            raise DocumentsUnavailable("The documents service could not be reached") from exc
        if response.status_code != 200:
            log.warning("documents_search_failed", status=response.status_code)
            raise DocumentsUnavailable(
                f"The documents service answered the search with {response.status_code}"
            )
        try:
            hits = _HITS.validate_json(response.content)
        except ValidationError as exc:
            log.warning("documents_search_failed", error="unreadable answer")
            raise DocumentsUnavailable("The documents service's answer could not be read") from exc
        return [
            Source(hit.document_id, hit.title, hit.page, passage_of(hit.snippet))
            for hit in hits[: self._limit]
        ]

    async def close(self) -> None:
        await self._client.aclose()
