"""A small upstream for the gateway's tests (downloads, uploads, SSE, a WebSocket echo, slow
and failing endpoints, a JWKS of its own), and the processes the tests start: a gateway and
that upstream, each killable. `python -m tests.e2e.gateway_helpers PORT` serves it."""

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from shared.testing import free_port_block, token_claims, wait_until

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
    await websocket.accept()
    await websocket.send_json(
        {
            "hello": websocket.headers.get("x-user-id"),
            "verified_subject": subject,
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
        Route(f"{PREFIX}/upload", upload, methods=["POST"]),
        Route(f"{PREFIX}/events", events),
        Route(f"{PREFIX}/events/{{stream}}/{{number}}/ack", acknowledge, methods=["POST"]),
        Route(f"{PREFIX}/events/{{stream}}/closed", stream_closed),
        Route(f"{PREFIX}/slow", slow),
        Route(f"{PREFIX}/boom", boom),
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


# --- processes ------------------------------------------------------------------------------


class Process:
    def __init__(self, name: str, workdir: Path, port: int) -> None:
        self.name = name
        self.port = port
        self.log_path = workdir / f"{name}-{port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def _spawn(self, args: list[str], env: dict[str, str]) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, *args],
            env={**os.environ, **env},
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def healthy() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                return httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, within_seconds=30, interval=0.1)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()


class UpstreamProcess(Process):
    def __init__(self, workdir: Path, key: SigningKey, port: int | None = None) -> None:
        super().__init__("upstream", workdir, port or free_port_block(1))
        self.key = key

    def start(self) -> "UpstreamProcess":
        self._spawn(
            ["-m", "tests.e2e.gateway_helpers", str(self.port)],
            {SIGNING_KEY_ENV: self.key.pem},
        )
        return self


class GatewayProcess(Process):
    """`python -m gateway`, routing /api/v1/files and /ws to the given upstreams."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        super().__init__("gateway", workdir, free_port_block(1))
        self.env = env

    def start(self) -> "GatewayProcess":
        self._spawn(
            ["-m", "gateway"],
            {
                "PORT": str(self.port),
                "QUEUE_PREFIX": f"test-gw-{uuid.uuid4().hex[:10]}",
                "LOG_LEVEL": "INFO",
                "WORKERS": "1",
                **self.env,
            },
        )
        return self

    def rss_bytes(self) -> int:
        """Resident memory of the gateway and its worker processes."""
        total = 0
        for pid in [self.pid, *_children(self.pid)]:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except FileNotFoundError:
                continue
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        return total


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, IndexError, ValueError):
            continue
        if parent == pid:
            found.append(int(entry.name))
            found.extend(_children(int(entry.name)))
    return found


def upstream_env(upstream: UpstreamProcess, **extra: str) -> dict[str, str]:
    """Gateway settings that route /api/v1/files and /ws to the test upstream."""
    env = {
        "UPSTREAMS": json.dumps({"files": upstream.url, "chat": upstream.url}),
        "ROUTES": json.dumps({PREFIX: "files"}),
        "PUBLIC_ROUTES": json.dumps([f"POST {PREFIX}/events/*/*/ack"]),
        "JWKS_URL": f"{upstream.url}/jwks.json",
        "RATE_LIMIT_DEFAULT": "100000/minute",
    }
    env.update(extra)
    return env


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    for line in text.splitlines():
        found = re.match(r"^([a-z_]+)(?:\{(.*)\})? ([0-9.e+-]+)$", line)
        if not found or found.group(1) != name:
            continue
        present = dict(re.findall(r'(\w+)="([^"]*)"', found.group(2) or ""))
        if all(present.get(key) == value for key, value in labels.items()):
            return float(found.group(3))
    return 0.0


if __name__ == "__main__":
    uvicorn.run(upstream_app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
