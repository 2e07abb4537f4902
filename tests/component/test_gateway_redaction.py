"""Access tokens sent in URLs (`?token=`, `?access_token=`) or as WebSocket subprotocols
never reach the gateway's logs or its spans."""

import contextlib
import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from gateway.app import create_app
from gateway.settings import GatewaySettings
from shared.testing import eventually
from tests.component.gateway_helpers import PREFIX, SigningKey, UpstreamProcess, upstream_env
from tests.processes import GatewayProcess


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey()


@pytest.fixture
def upstream(tmp_path: Path, key: SigningKey) -> Iterator[UpstreamProcess]:
    process = UpstreamProcess(tmp_path, key).start()
    yield process
    process.stop()


@pytest.fixture
def unresponsive_port() -> Iterator[int]:
    """A listening socket whose accept queue is full: connecting to it never completes."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port: int = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    yield port
    for filler in fillers:
        filler.close()
    listener.close()


@pytest.fixture
def logging_restored() -> Iterator[None]:
    """The gateway's lifespan configures this process's logging; put it back afterwards."""
    root = logging.getLogger()
    handlers = {handler: handler.formatter for handler in root.handlers}
    level = root.level
    config = structlog.get_config()
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    for handler, formatter in handlers.items():
        handler.setFormatter(formatter)
    root.setLevel(level)
    structlog.configure(**config)
    structlog.contextvars.clear_contextvars()


async def test_token_query_values_and_bearer_tokens_never_reach_the_log(
    tmp_path: Path, upstream: UpstreamProcess, key: SigningKey, unresponsive_port: int
) -> None:
    env = upstream_env(
        upstream,
        # DEBUG: uvicorn's own lines (handshakes, request lines) too; websockets stays quiet.
        LOG_LEVEL="DEBUG",
        UPSTREAMS=json.dumps(
            {"files": f"http://127.0.0.1:{unresponsive_port}", "chat": upstream.url}
        ),
        UPSTREAM_CONNECT_TIMEOUT_SECONDS="0.2",
    )
    gateway = GatewayProcess(tmp_path, env).start()
    token, other = key.token(), key.token()
    refused = "not-a-token-but-still-secret"
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
            # aiohttp's connect timeout names the whole upstream URL, query included.
            response = await client.get(
                f"{PREFIX}/echo",
                params={"token": other, "access_token": other, "page": "2"},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert response.status_code == 503
        url = f"ws://127.0.0.1:{gateway.port}/ws"
        async with connect(f"{url}?token={token}&room=7") as websocket:
            await websocket.recv()
        async with connect(url, subprotocols=[Subprotocol("bearer"), Subprotocol(other)]):
            pass
        with pytest.raises(InvalidStatus):
            async with connect(f"{url}?access_token={refused}"):
                pass

        def logged() -> str:
            return gateway.log_path.read_text(errors="replace")

        async def all_logged() -> bool:
            text = logged()
            return all(
                line in text
                for line in (
                    "/echo?token=REDACTED&access_token=REDACTED&page=2",
                    "/ws?token=REDACTED&room=7",
                    "/ws?access_token=REDACTED",
                    "upstream_unavailable",
                )
            )

        await eventually(all_logged, within_seconds=10)
    finally:
        gateway.stop()
    text = logged()
    for secret in (token, other, refused):
        assert secret not in text


async def test_token_query_values_never_reach_a_span(
    upstream: UpstreamProcess,
    key: SigningKey,
    monkeypatch: pytest.MonkeyPatch,
    logging_restored: None,
) -> None:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        trace.set_tracer_provider(TracerProvider())
        provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    for name, value in upstream_env(upstream).items():
        monkeypatch.setenv(name, value)
    app = create_app(GatewaySettings())
    token = key.token()
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
                response = await client.get(
                    f"{PREFIX}/echo",
                    params={"token": token, "access_token": token, "room": "7"},
                    headers={"Authorization": f"Bearer {token}"},
                )
        assert response.status_code == 200, response.text
        spans = exporter.get_finished_spans()
    finally:
        exporter.shutdown()
    server = [span for span in spans if span.kind == SpanKind.SERVER]
    assert server, "the gateway records a server span per request"
    attributes = dict(server[-1].attributes or {})
    assert attributes["url.query"] == "token=REDACTED&access_token=REDACTED&room=7"
    assert all(token not in str(dict(span.attributes or {})) for span in spans)
