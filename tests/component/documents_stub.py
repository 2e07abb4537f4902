"""The documents service's search as chat sees it, for chat's tests: an aiohttp server on
127.0.0.1 that speaks the search contract and records what it was asked.

    POST /api/v1/documents/search   {"query", "limit"?, "document_ids"?} with a bearer
                                    token: 200 and a JSON list of hits, `{"document_id",
                                    "title", "chunk_id", "page", "score", "snippet"}`
    GET  /jwks.json                 `jwks`, when given (a JWKS for the chat service under
                                    test, so that one stub is all it needs besides itself)

Knobs, attributes read on every request: `hits` (what a search answers, cut at `limit`;
only those of `document_ids` when given), `status` (answer with this status and an error
body instead), `body` (answer with these bytes instead), `delay` (seconds before answering).
`token` set: a request without `Authorization: Bearer <token>` gets 401."""

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.component.stub_server import StubServer

SEARCH_PATH = "/api/v1/documents/search"


@dataclass
class SearchRequest:
    headers: dict[str, str]
    body: Any


def hit(
    document_id: uuid.UUID, title: str, page: int | None, snippet: str, score: float = 0.5
) -> dict[str, Any]:
    return {
        "document_id": str(document_id),
        "title": title,
        "chunk_id": str(uuid.uuid4()),
        "page": page,
        "score": score,
        "snippet": snippet,
    }


@dataclass
class DocumentsStub(StubServer):
    hits: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    body: bytes | None = None
    delay: float = 0.0
    token: str | None = None
    requests: list[SearchRequest] = field(default_factory=list)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(SEARCH_PATH, self._search)

    async def _search(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        headers = {name.lower(): value for name, value in request.headers.items()}
        self.requests.append(SearchRequest(headers, body))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.token is not None and headers.get("authorization") != f"Bearer {self.token}":
            return _error(401, "INVALID_TOKEN")
        if self.body is not None:
            return web.Response(body=self.body, content_type="application/json")
        if self.status != 200:
            return _error(self.status, "INTERNAL_ERROR")
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return _error(400, "VALIDATION_ERROR")
        found = self.hits
        wanted = body.get("document_ids")
        if wanted is not None:
            found = [h for h in found if h["document_id"] in wanted]
        return web.json_response(found[: int(body.get("limit", 10))])


def _error(status: int, code: str) -> web.Response:
    envelope = {"status": "error", "error": {"code": code, "message": "stub"}}
    return web.json_response(envelope, status=status)
