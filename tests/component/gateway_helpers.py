"""A small upstream for the gateway's component tests (downloads, uploads, SSE, a WebSocket
echo, slow and failing endpoints, errors in the envelope or not, a JWKS of its own), run as
a killable process in front of which the tests start a gateway.
`python -m tests.component.gateway_helpers PORT` serves it."""

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from shared.testing import free_port_block, token_claims
from tests.processes import Process

MIB = 1024 * 1024
KID = "gateway-test-key"
PREFIX = "/api/v1/files"
SIGNING_KEY_ENV = "GATEWAY_TEST_SIGNING_KEY"


# --- the upstream ---------------------------------------------------------------------------

_acks: dict[str, asyncio.Event] = {}
_closed_streams: set[str] = set()


async def echo(request: Request) -> JSONResponse:
    return JSONResponse({"headers": dict(request.headers), "path": request.url.path})


async def download(request: Request) -> StreamingResponse:
    size = int(request.query_params.get("mb", "1")) * MIB
    chunk = b"x" * MIB

    async def body() -> AsyncIterator[bytes]:
        for _ in range(size // MIB):
            yield chunk

    return StreamingResponse(
        body(), media_type="application/octet-stream", headers={"content-length": str(size)}
    )


async def upload(request: Request) -> JSONResponse:
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
    return JSONResponse({"bytes": received})


async def events(request: Request) -> StreamingResponse:
    """Sends event n+1 only after the client has acknowledged event n, which it can only do
    if the gateway delivered event n on its own, before the stream ended."""
    stream = request.query_params["stream"]
    count = int(request.query_params.get("count", "3"))

    async def body() -> AsyncIterator[bytes]:
        try:
            for number in range(count):
                _acks[f"{stream}:{number}"] = asyncio.Event()
                yield f"id: {number}\nevent: tick\ndata: {json.dumps({'n': number})}\n\n".encode()
                await asyncio.wait_for(_acks[f"{stream}:{number}"].wait(), 60)
        finally:
            _closed_streams.add(stream)

    return StreamingResponse(body(), media_type="text/event-stream")


async def chat_stream(request: Request) -> EventSourceResponse:
    """As chat streams an answer: a POST answered with Server-Sent Events by sse-starlette
    (which sets `Cache-Control` and `X-Accel-Buffering: no`), each event after a pause and
    only once the client has acknowledged the one before."""
    stream = request.query_params["stream"]
    count = int(request.query_params.get("count", "3"))
    pause = float(request.query_params.get("pause", "0.2"))
    prompt = (await request.json())["prompt"]

    async def body() -> AsyncIterator[dict[str, str]]:
        try:
            for number in range(count):
                await asyncio.sleep(pause)
                _acks[f"{stream}:{number}"] = asyncio.Event()
                yield {"event": "chat_delta", "data": json.dumps({"n": number, "to": prompt})}
                await asyncio.wait_for(_acks[f"{stream}:{number}"].wait(), 60)
        finally:
            _closed_streams.add(stream)

    return EventSourceResponse(body())


async def acknowledge(request: Request) -> Response:
    _acks[f"{request.path_params['stream']}:{request.path_params['number']}"].set()
    return Response(status_code=204)


async def stream_closed(request: Request) -> JSONResponse:
    return JSONResponse({"closed": request.path_params["stream"] in _closed_streams})


async def slow(request: Request) -> JSONResponse:
    await asyncio.sleep(float(request.query_params.get("seconds", "5")))
    return JSONResponse({"slept": True})


async def boom(request: Request) -> PlainTextResponse:
    return PlainTextResponse(
        "Traceback: psycopg.OperationalError password=hunter2 at db.internal", status_code=500
    )


async def failing(request: Request) -> Response:
    """Fails with the status asked for: the body in the envelope (with `code`, padded by
    `pad` bytes, sent in pieces without a length with `chunked=1`) or, with `html=1`, as a
    proxy's error page."""
    status = int(request.query_params.get("status", "502"))
    if request.query_params.get("html"):
        return HTMLResponse("<html><body>502 Bad Gateway nginx/1.25</body></html>", status)
    envelope = {
        "status": "error",
        "error": {
            "code": request.query_params.get("code", "PROVIDER_ERROR"),
            "message": "The AI provider failed",
            "details": {
                "provider": "lyceum-dev",
                "pad": "p" * int(request.query_params.get("pad", "0")),
            },
        },
        "request_id": request.headers.get("x-request-id"),
        "timestamp": "2026-01-01T00:00:00Z",
    }
    body = json.dumps(envelope).encode()
    headers = {"x-request-id": "set-by-the-upstream", "retry-after": "7"}
    if not request.query_params.get("chunked"):
        return Response(body, status, headers=headers, media_type="application/json")

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    return StreamingResponse(pieces(), status, headers=headers, media_type="application/json")


async def jwks(request: Request) -> JSONResponse:
    key = serialization.load_pem_private_key(os.environ[SIGNING_KEY_ENV].encode(), None)
    assert isinstance(key, Ed25519PrivateKey)
    jwk = OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update(kid=KID, alg="EdDSA", use="sig")
    return JSONResponse({"keys": [jwk]})


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def _verified_subject(authorization: str | None) -> str | None:
    """What a real service does with a WebSocket: verify the bearer token itself."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    key = serialization.load_pem_private_key(os.environ[SIGNING_KEY_ENV].encode(), None)
    assert isinstance(key, Ed25519PrivateKey)
    try:
        claims = jwt.decode(
            token, key.public_key(), algorithms=["EdDSA"], audience="lyceum-api", issuer="lyceum"
        )
    except jwt.PyJWTError:
        return None
    return str(claims["sub"])


async def websocket_echo(websocket: WebSocket) -> None:
    subject = _verified_subject(websocket.headers.get("authorization"))
    if subject is None:
        await websocket.send_denial_response(
            JSONResponse({"status": "error", "error": {"code": "INVALID_TOKEN"}}, 401)
        )
        return
    offered = websocket.scope.get("subprotocols", [])
    select = websocket.query_params.get("select")
    await websocket.accept(subprotocol=select if select in offered else None)
    await websocket.send_json(
        {
            "hello": websocket.headers.get("x-user-id"),
            "verified_subject": subject,
            "subprotocols": offered,
            "query": websocket.url.query,
            "traceparent": websocket.headers.get("traceparent"),
            "x_forwarded_for": websocket.headers.get("x-forwarded-for"),
        }
    )
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            else:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect:
        return


async def websocket_refuse(websocket: WebSocket) -> None:
    """Refuses every handshake with the status asked for, in the envelope."""
    status = int(websocket.query_params.get("status", "403"))
    code = {403: "PERMISSION_DENIED", 404: "RESOURCE_NOT_FOUND"}.get(status, "INTERNAL_ERROR")
    await websocket.send_denial_response(
        JSONResponse(
            {"status": "error", "error": {"code": code, "message": f"refused with {status}"}},
            status,
        )
    )


upstream_app = Starlette(
    routes=[
        Route("/health", health),
        Route("/jwks.json", jwks),
        Route(f"{PREFIX}/echo", echo, methods=["GET", "POST", "PUT", "DELETE"]),
        Route(f"{PREFIX}/download", download),
        Route(f"{PREFIX}/upload", upload, methods=["POST", "PUT"]),
        Route(f"{PREFIX}/events", events),
        Route(f"{PREFIX}/events/{{stream}}/{{number}}/ack", acknowledge, methods=["POST"]),
        Route(f"{PREFIX}/chat-stream", chat_stream, methods=["POST"]),
        Route(f"{PREFIX}/events/{{stream}}/closed", stream_closed),
        Route(f"{PREFIX}/slow", slow),
        Route(f"{PREFIX}/boom", boom),
        Route(f"{PREFIX}/failing", failing),
        WebSocketRoute("/ws", websocket_echo),
        WebSocketRoute(f"{PREFIX}/ws-refuse", websocket_refuse),
    ]
)


# --- keys and tokens ------------------------------------------------------------------------


class SigningKey:
    def __init__(self) -> None:
        self.private_key = Ed25519PrivateKey.generate()

    @property
    def pem(self) -> str:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    def token(self, **claims: Any) -> str:
        payload = token_claims(**claims)
        return jwt.encode(payload, self.private_key, algorithm="EdDSA", headers={"kid": KID})


# --- the upstream as a process -------------------------------------------------------------


class UpstreamProcess(Process):
    def __init__(self, workdir: Path, key: SigningKey, port: int | None = None) -> None:
        super().__init__("upstream", workdir, port or free_port_block(1))
        self.key = key

    def start(self) -> "UpstreamProcess":
        self._spawn(
            ["-m", "tests.component.gateway_helpers", str(self.port)],
            {SIGNING_KEY_ENV: self.key.pem},
        )
        return self


def upstream_env(upstream: UpstreamProcess, **extra: str) -> dict[str, str]:
    """Gateway settings that route /api/v1/files and /ws to the test upstream."""
    env = {
        "UPSTREAMS": json.dumps({"files": upstream.url, "chat": upstream.url}),
        "ROUTES": json.dumps({PREFIX: "files"}),
        "WEBSOCKET_ROUTES": json.dumps({"/ws": "chat"}),
        "PUBLIC_ROUTES": json.dumps([f"POST {PREFIX}/events/*/*/ack"]),
        "JWKS_URL": f"{upstream.url}/jwks.json",
        "RATE_LIMIT_DEFAULT": "100000/minute",
    }
    env.update(extra)
    return env


if __name__ == "__main__":
    uvicorn.run(upstream_app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
