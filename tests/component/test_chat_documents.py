"""Chat asks the documents service for passages on the user's behalf: the client of its search
against a local server that speaks the search contract (the token forwarded, the query and
the document ids passed, every failure a clear 502 or 504), and the chat service itself
running against that server, answering from the passages with `citations`."""

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm
from websockets.asyncio.client import connect

from services.chat.app import create_app
from services.chat.documents import DocumentsClient, DocumentsUnavailable
from services.chat.settings import ChatSettings
from services.chat.sources import Source
from shared.errors import UpstreamTimeout
from shared.migrations import upgrade_to_head_async
from shared.registry import CHAT
from shared.testing import free_port_block, token_claims
from tests.component.documents_stub import DocumentsStub, hit

TOKEN = "the-users-access-token"
LAW = uuid.UUID("00000000-0000-4000-8000-000000000001")
GRAMMAR = uuid.UUID("00000000-0000-4000-8000-000000000002")
HITS = [
    hit(LAW, "Roman law", 3, "The <mark>Twelve</mark> <mark>Tables</mark> were set down in 451."),
    hit(GRAMMAR, "Latin grammar", None, "Nouns fall into five <mark>declensions</mark>."),
    hit(LAW, "Roman law", 9, "Later <mark>codes</mark> replaced them."),
]


@pytest.fixture
async def stub() -> AsyncIterator[DocumentsStub]:
    async with DocumentsStub(hits=list(HITS)) as running:
        yield running


@contextlib.asynccontextmanager
async def client_of(url: str, **options: Any) -> AsyncIterator[DocumentsClient]:
    settings: dict[str, Any] = {"timeout_seconds": 5.0, "max_sources": 5} | options
    client = DocumentsClient(url, **settings)
    try:
        yield client
    finally:
        await client.close()


# --- the search client ---


async def test_the_search_carries_the_users_token_the_query_and_the_document_ids(
    stub: DocumentsStub,
) -> None:
    async with client_of(stub.url) as client:
        sources = await client.search(TOKEN, "When were the Twelve Tables written?", [LAW, GRAMMAR])
    (request,) = stub.requests
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["content-type"] == "application/json"
    assert request.body == {
        "query": "twelve or tables or written",
        "limit": 5,
        "document_ids": [str(LAW), str(GRAMMAR)],
    }
    assert sources == [
        Source(LAW, "Roman law", 3, "The Twelve Tables were set down in 451."),
        Source(GRAMMAR, "Latin grammar", None, "Nouns fall into five declensions."),
        Source(LAW, "Roman law", 9, "Later codes replaced them."),
    ]


async def test_without_document_ids_every_document_is_searched(stub: DocumentsStub) -> None:
    async with client_of(stub.url + "/") as client:
        await client.search(TOKEN, "declensions")
    assert stub.requests[0].body == {"query": "declensions", "limit": 5}


async def test_no_more_sources_than_the_limit(stub: DocumentsStub) -> None:
    async with client_of(stub.url, max_sources=2) as client:
        assert len(await client.search(TOKEN, "declensions")) == 2
        assert stub.requests[0].body["limit"] == 2
        # A server that answers more than it was asked for is cut.
        stub.body = json.dumps(HITS).encode()
        assert len(await client.search(TOKEN, "declensions")) == 2


async def test_a_question_with_nothing_to_look_for_asks_nothing(stub: DocumentsStub) -> None:
    async with client_of(stub.url) as client:
        assert await client.search(TOKEN, "What is it, and why?") == []
    assert stub.requests == []


async def test_nothing_found_is_no_source(stub: DocumentsStub) -> None:
    stub.hits = []
    async with client_of(stub.url) as client:
        assert await client.search(TOKEN, "aqueducts") == []


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, None),
        (503, None),
        # The documents service refusing the token is not the client's authentication
        # failing at chat.
        (401, None),
        (403, None),
        (404, None),
        (200, b"<html>not json</html>"),
        (200, b'{"hits": []}'),
        (200, b'[{"title": "no id", "snippet": "x"}]'),
    ],
)
async def test_a_failed_search_is_502_documents_unavailable(
    stub: DocumentsStub, status: int, body: bytes | None
) -> None:
    stub.status, stub.body = status, body
    async with client_of(stub.url) as client:
        with pytest.raises(DocumentsUnavailable) as failure:
            await client.search(TOKEN, "declensions")
    assert (failure.value.status_code, failure.value.code) == (502, "DOCUMENTS_UNAVAILABLE")
    assert "documents service" in failure.value.message


async def test_an_unreachable_documents_service_is_502() -> None:
    port = free_port_block(1)
    async with client_of(f"http://127.0.0.1:{port}") as client:
        with pytest.raises(DocumentsUnavailable, match="could not be reached"):
            await client.search(TOKEN, "declensions")


async def test_a_slow_documents_service_is_504(stub: DocumentsStub) -> None:
    stub.delay = 2.0
    async with client_of(stub.url, timeout_seconds=0.3) as client:
        with pytest.raises(UpstreamTimeout) as failure:
            await client.search(TOKEN, "declensions")
    assert failure.value.status_code == 504
    assert "documents service" in failure.value.message


# --- the chat service answering from the documents ---


class QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@dataclass
class Chat:
    url: str
    stub: DocumentsStub
    key: Ed25519PrivateKey

    def token(self, user_id: uuid.UUID) -> str:
        claims = token_claims(sub=str(user_id))
        return jwt.encode(claims, self.key, algorithm="EdDSA", headers={"kid": "test-key"})

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=30)


@pytest.fixture
async def chat(stub: DocumentsStub, tmp_path: Path) -> AsyncIterator[Chat]:
    key = Ed25519PrivateKey.generate()
    jwk = OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
    stub.jwks = {"keys": [{**jwk, "kid": "test-key", "alg": "EdDSA", "use": "sig"}]}
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}"
    await upgrade_to_head_async(CHAT.migrations_dir, database_url)
    port = free_port_block(1)
    settings = ChatSettings(
        port=port,
        database_url=database_url,
        redis_url=None,
        amqp_url=None,
        queue_prefix=f"test-{uuid.uuid4().hex[:8]}",
        jwks_url=f"{stub.url}/jwks.json",
        documents_url=stub.url,
        chat_dev_word_delay_seconds=0,
        chat_documents_timeout_seconds=2,
    )
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_config=None, lifespan="on"
    )
    server = QuietServer(config)
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not serving.done(), "the chat service did not start"
            await asyncio.sleep(0.02)
        yield Chat(f"http://127.0.0.1:{port}", stub, key)
    finally:
        server.should_exit = True
        await serving


def as_citation(source_hit: dict[str, Any]) -> dict[str, Any]:
    snippet = source_hit["snippet"].replace("<mark>", "").replace("</mark>", "")
    return {
        "document_id": source_hit["document_id"],
        "title": source_hit["title"],
        "page": source_hit["page"],
        "snippet": snippet,
    }


async def test_a_question_with_use_documents_is_answered_from_them_and_cites_them(
    chat: Chat,
) -> None:
    user_id = uuid.uuid4()
    token = chat.token(user_id)
    async with chat.client() as client:
        response = await client.post(
            "/api/v1/chat",
            json={"message": "When were the Twelve Tables set down?", "use_documents": True},
            headers={"Authorization": f"Bearer {token}", "X-Request-ID": "asking-the-tables"},
        )
        assert response.status_code == 201, response.text
        answer = response.json()
        assert answer["citations"] == [as_citation(h) for h in HITS]
        assert "“The Twelve Tables were set down in 451.” [1]." in answer["message"]
        assert "Roman law, page 3" in answer["message"]

        (request,) = chat.stub.requests
        assert request.headers["authorization"] == f"Bearer {token}"
        assert request.headers["x-request-id"] == "asking-the-tables"
        assert request.body == {"query": "twelve or tables or set", "limit": 5}

        history = await client.get("/api/v1/chat/history", headers=bearer(token))
        assert history.json()["messages"][0]["citations"] == answer["citations"]
        # Without use_documents: no search, and no citations.
        again = {"message": "And the Twelve Tables?", "conversation_id": answer["conversation_id"]}
        plain = await client.post("/api/v1/chat", json=again, headers=bearer(token))
        assert plain.status_code == 201
        assert plain.json()["citations"] == []
        assert "documents" not in plain.json()["message"]
        assert len(chat.stub.requests) == 1


async def test_a_conversation_says_for_its_messages_and_a_regenerated_reply_asks_again(
    chat: Chat,
) -> None:
    headers = bearer(chat.token(uuid.uuid4()))
    async with chat.client() as client:
        created = await client.post(
            "/api/v1/conversations",
            json={"title": "Law", "use_documents": True, "document_ids": [str(LAW)]},
            headers=headers,
        )
        assert created.status_code == 201, created.text
        conversation = created.json()
        assert (conversation["use_documents"], conversation["document_ids"]) == (True, [str(LAW)])
        path = f"/api/v1/conversations/{conversation['id']}"

        posted = await client.post(
            f"{path}/messages", json={"content": "Which codes came later?"}, headers=headers
        )
        assert posted.status_code == 201, posted.text
        reply = posted.json()["assistant_message"]
        assert chat.stub.requests[-1].body["document_ids"] == [str(LAW)]
        assert [c["page"] for c in reply["citations"]] == [3, 9]
        assert "“Later codes replaced them.” [2]." in reply["content"]
        assert posted.json()["user_message"]["citations"] == []

        # A message may say otherwise than its conversation.
        other = await client.post(
            f"{path}/messages",
            json={"content": "Declensions?", "document_ids": [str(GRAMMAR)]},
            headers=headers,
        )
        assert other.json()["assistant_message"]["citations"] == [as_citation(HITS[1])]
        off = await client.post(
            f"{path}/messages", json={"content": "Hi", "use_documents": False}, headers=headers
        )
        assert off.json()["assistant_message"]["citations"] == []
        assert len(chat.stub.requests) == 2

        listed = (await client.get(f"{path}/messages", headers=headers)).json()["data"]
        assert [len(m["citations"]) for m in listed] == [0, 2, 0, 1, 0, 0]

        again = await client.post(
            f"/api/v1/messages/{other.json()['assistant_message']['id']}/regenerate",
            headers=headers,
        )
        assert again.status_code == 201, again.text
        assert chat.stub.requests[-1].body["document_ids"] == [str(GRAMMAR)]
        assert again.json()["assistant_message"]["citations"] == [as_citation(HITS[1])]
        without = await client.post(
            f"/api/v1/messages/{again.json()['assistant_message']['id']}/regenerate",
            json={"use_documents": False},
            headers=headers,
        )
        assert without.json()["assistant_message"]["citations"] == []
        assert len(chat.stub.requests) == 3

        patched = await client.patch(
            path, json={"use_documents": False, "document_ids": None}, headers=headers
        )
        assert (patched.json()["use_documents"], patched.json()["document_ids"]) == (False, None)


async def test_the_stream_and_the_websocket_end_with_the_citations(chat: Chat) -> None:
    token = chat.token(uuid.uuid4())
    body = {"message": "Twelve Tables?", "use_documents": True, "stream": True}
    async with (
        chat.client() as client,
        client.stream("POST", "/api/v1/chat", json=body, headers=bearer(token)) as response,
    ):
        assert response.status_code == 200
        events = [line async for line in response.aiter_lines() if line.startswith("data:")]
    final = json.loads(events[-1][5:])
    assert final["citations"] == [as_citation(h) for h in HITS]

    url = chat.url.replace("http://", "ws://") + f"/ws?token={token}"
    async with connect(url) as socket:
        frame = {"message": "Declensions?", "use_documents": True, "document_ids": [str(GRAMMAR)]}
        await socket.send(json.dumps({"type": "chat", "data": frame}))
        while (received := json.loads(await socket.recv()))["type"] == "chat_delta":
            pass
    assert received["type"] == "chat_response", received
    assert received["data"]["citations"] == [as_citation(HITS[1])]
    assert chat.stub.requests[-1].headers["authorization"] == f"Bearer {token}"
    assert chat.stub.requests[-1].body["document_ids"] == [str(GRAMMAR)]


@pytest.mark.parametrize("status", [500, 401])
async def test_when_the_search_fails_the_message_is_refused_and_nothing_is_saved(
    chat: Chat, status: int
) -> None:
    chat.stub.status = status
    headers = bearer(chat.token(uuid.uuid4()))
    async with chat.client() as client:
        for body in (
            {"message": "Twelve Tables?", "use_documents": True},
            {"message": "Twelve Tables?", "use_documents": True, "stream": True},
        ):
            refused = await client.post("/api/v1/chat", json=body, headers=headers)
            assert refused.status_code == 502, refused.text
            error = refused.json()["error"]
            assert error["code"] == "DOCUMENTS_UNAVAILABLE"
            assert "documents service" in error["message"]
        assert (await client.get("/api/v1/chat/history", headers=headers)).json()["total"] == 0
        listed = await client.get("/api/v1/conversations", headers=headers)
        assert listed.json()["data"] == []
        # The user can still talk without their documents.
        plain = await client.post("/api/v1/chat", json={"message": "Hi"}, headers=headers)
        assert plain.status_code == 201


async def test_use_documents_takes_a_boolean_and_document_ids_uuids(chat: Chat) -> None:
    headers = bearer(chat.token(uuid.uuid4()))
    async with chat.client() as client:
        for body in (
            {"message": "Hi", "use_documents": "yes"},
            {"message": "Hi", "use_documents": 1},
            {"message": "Hi", "document_ids": ["not-a-uuid"]},
            {"message": "Hi", "document_ids": []},
        ):
            refused = await client.post("/api/v1/chat", json=body, headers=headers)
            assert refused.status_code == 400, body
    assert chat.stub.requests == []


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
