"""The gateway in front of a test upstream: identity and trace headers, streamed bodies of
hundreds of MB with flat memory, body limits per route, Server-Sent Events one by one, and a
WebSocket echo."""

import asyncio
import json
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from shared.testing import eventually
from tests.component.gateway_helpers import (
    MIB,
    PREFIX,
    SigningKey,
    UpstreamProcess,
    upstream_env,
)
from tests.e2e.helpers import assert_envelope
from tests.processes import GatewayProcess

TRANSFER_MB = 200
# Uploads (POST /upload) may be large; any other body, PUT /upload included, may not.
MAX_BODY_MB = 4
MAX_UPLOAD_MB = 400
# RSS growth allowed while 200 MB pass through: a fraction of the body, not the body.
MEMORY_BOUND = 60 * MIB


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, key: SigningKey) -> Iterator[GatewayProcess]:
    workdir = tmp_path_factory.mktemp("gateway-proxy")
    upstream = UpstreamProcess(workdir, key).start()
    env = upstream_env(
        upstream,
        MAX_BODY_BYTES=str(MAX_BODY_MB * MIB),
        MAX_UPLOAD_BYTES=str(MAX_UPLOAD_MB * MIB),
        UPLOAD_ROUTES=json.dumps([f"POST {PREFIX}/upload"]),
        CORS_ORIGINS='["https://app.example.com"]',
        # The test client stands for a TLS-terminating proxy (X-Forwarded-Proto → HSTS).
        TRUSTED_PROXIES='["127.0.0.1/32"]',
    )
    process = GatewayProcess(workdir, env).start()
    yield process
    process.stop()
    upstream.stop()


def auth(key: SigningKey, **claims: object) -> dict[str, str]:
    return {"Authorization": f"Bearer {key.token(**claims)}"}


class PeakRss:
    """Samples the gateway's resident memory in a thread while a transfer runs."""

    def __init__(self, gateway: GatewayProcess) -> None:
        self._gateway = gateway
        self._done = threading.Event()
        self.baseline = gateway.rss_bytes()
        self.peak = self.baseline
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(0.05):
            self.peak = max(self.peak, self._gateway.rss_bytes())

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


async def test_identity_and_trace_headers_are_set_by_the_gateway(
    gateway: GatewayProcess, key: SigningKey
) -> None:
    user_id = "3f0e7a52-7c1e-4d7e-9a8e-1f0b8f2c6d11"
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        response = await client.get(
            f"{PREFIX}/echo",
            headers={
                **auth(key, sub=user_id, roles=["instructor"]),
                "X-User-Id": "00000000-0000-0000-0000-000000000000",
                "X-User-Roles": "admin",
                "X-Request-ID": "trace-this-request-42",
                "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01",
            },
        )
    assert response.status_code == 200, response.text
    seen = response.json()["headers"]
    assert seen["x-user-id"] == user_id
    assert seen["x-user-roles"] == "instructor"
    assert seen["x-request-id"] == "trace-this-request-42"
    assert response.headers["x-request-id"] == "trace-this-request-42"
    version, upstream_trace, parent, _flags = seen["traceparent"].split("-")
    assert (version, upstream_trace) == ("00", trace_id)
    assert parent != "00f067aa0ba902b7", "the gateway's own span is the upstream's parent"
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "strict-transport-security" not in response.headers


async def test_a_trace_is_started_when_the_client_sends_none(
    gateway: GatewayProcess, key: SigningKey
) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        response = await client.get(
            f"{PREFIX}/echo", headers={**auth(key), "X-Forwarded-Proto": "https"}
        )
    seen = response.json()["headers"]
    # The client reached the trusted proxy over TLS: the upstream is told so.
    assert seen["x-forwarded-proto"] == "https"
    version, trace_id, parent, _ = seen["traceparent"].split("-")
    assert version == "00"
    assert int(trace_id, 16) != 0
    assert int(parent, 16) != 0
    assert response.headers["strict-transport-security"].startswith("max-age=")


async def test_a_200_mb_download_streams_with_flat_memory(
    gateway: GatewayProcess, key: SigningKey
) -> None:
    received = 0
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as client:
        with PeakRss(gateway) as memory:
            async with client.stream(
                "GET", f"{PREFIX}/download", params={"mb": TRANSFER_MB}, headers=auth(key)
            ) as response:
                assert response.status_code == 200
                assert response.headers["content-length"] == str(TRANSFER_MB * MIB)
                async for chunk in response.aiter_raw():
                    received += len(chunk)
    assert received == TRANSFER_MB * MIB
    print(f"\ndownload: gateway RSS grew {memory.growth / MIB:.1f} MiB for {TRANSFER_MB} MiB")
    assert memory.growth < MEMORY_BOUND


async def test_a_200_mb_upload_streams_with_flat_memory(
    gateway: GatewayProcess, key: SigningKey
) -> None:
    """An upload route takes bodies over MAX_BODY_BYTES, relayed as they come."""

    async def body() -> AsyncIterator[bytes]:
        chunk = b"y" * MIB
        for _ in range(TRANSFER_MB):
            yield chunk

    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as client:
        with PeakRss(gateway) as memory:
            response = await client.post(f"{PREFIX}/upload", content=body(), headers=auth(key))
    assert response.status_code == 200, response.text
    assert response.json() == {"bytes": TRANSFER_MB * MIB}
    print(f"\nupload: gateway RSS grew {memory.growth / MIB:.1f} MiB for {TRANSFER_MB} MiB")
    assert memory.growth < MEMORY_BOUND


async def megabytes(count: int) -> AsyncIterator[bytes]:
    for _ in range(count):
        yield b"z" * MIB


async def declared_length_status(
    gateway: GatewayProcess, key: SigningKey, method: str, length: int
) -> bytes:
    """The status line answered to headers alone: the body is never sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    token = auth(key)["Authorization"]
    writer.write(
        f"{method} {PREFIX}/upload HTTP/1.1\r\nHost: test\r\nAuthorization: {token}\r\n"
        f"Content-Length: {length}\r\n\r\n".encode()
    )
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    return status_line


async def test_an_upload_over_max_upload_bytes_is_refused(
    gateway: GatewayProcess, key: SigningKey
) -> None:
    over = (MAX_UPLOAD_MB + 1) * MIB
    status_line = await declared_length_status(gateway, key, "POST", over)
    assert status_line.startswith(b"HTTP/1.1 413"), status_line
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as client:
        streamed = await client.post(
            f"{PREFIX}/upload", content=megabytes(MAX_UPLOAD_MB + 1), headers=auth(key)
        )
    body = assert_envelope(streamed, 413, "PAYLOAD_TOO_LARGE")
    assert body["error"]["message"] == f"Body exceeds {MAX_UPLOAD_MB * MIB} bytes"


async def test_a_body_over_max_body_bytes_is_refused_off_the_upload_routes(
    gateway: GatewayProcess, key: SigningKey
) -> None:
    over = (MAX_BODY_MB + 1) * MIB
    status_line = await declared_length_status(gateway, key, "PUT", over)
    assert status_line.startswith(b"HTTP/1.1 413"), status_line
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as client:
        declared = await client.put(f"{PREFIX}/upload", content=b"z" * over, headers=auth(key))
        streamed = await client.put(
            f"{PREFIX}/upload", content=megabytes(MAX_BODY_MB + 1), headers=auth(key)
        )
        within = await client.put(
            f"{PREFIX}/upload", content=megabytes(MAX_BODY_MB), headers=auth(key)
        )
    for refused in (declared, streamed):
        body = assert_envelope(refused, 413, "PAYLOAD_TOO_LARGE")
        assert body["error"]["message"] == f"Body exceeds {MAX_BODY_MB * MIB} bytes"
    assert within.json() == {"bytes": MAX_BODY_MB * MIB}


async def test_server_sent_events_arrive_one_by_one(
    gateway: GatewayProcess, key: SigningKey
) -> None:
    """The upstream sends each event only after the client acknowledged the one before, so
    a gateway that buffered the stream would never deliver the first one."""
    stream = "s1"
    received = []
    async with (
        httpx.AsyncClient(base_url=gateway.url, timeout=30) as client,
        client.stream(
            "GET", f"{PREFIX}/events", params={"stream": stream, "count": 3}, headers=auth(key)
        ) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                number = json.loads(line.removeprefix("data: "))["n"]
                received.append(number)
                ack = await client.post(f"{PREFIX}/events/{stream}/{number}/ack")
                assert ack.status_code == 204
    assert received == [0, 1, 2]


async def test_a_streamed_chat_answer_arrives_event_by_event_and_stops_when_the_client_leaves(
    gateway: GatewayProcess, key: SigningKey
) -> None:
    """As chat streams: a POST answered by sse-starlette, with pauses between events. Each
    event is sent only once the one before was acknowledged, so buffering would stall."""
    received = []
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
        async with client.stream(
            "POST",
            f"{PREFIX}/chat-stream",
            params={"stream": "chat", "count": 3, "pause": 0.2},
            json={"prompt": "hello"},
            headers=auth(key),
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            # What tells a proxy in front of the gateway not to buffer or cache the stream.
            assert response.headers["x-accel-buffering"] == "no"
            assert response.headers["cache-control"] == "no-store"
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    assert line == "event: chat_delta"
                if line.startswith("data: "):
                    number = json.loads(line.removeprefix("data: "))["n"]
                    received.append(number)
                    ack = await client.post(f"{PREFIX}/events/chat/{number}/ack")
                    assert ack.status_code == 204
        assert received == [0, 1, 2]

        async with client.stream(
            "POST",
            f"{PREFIX}/chat-stream",
            params={"stream": "chat-left", "count": 1000, "pause": 0.05},
            json={"prompt": "hello"},
            headers=auth(key),
        ) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    break

        async def closed_upstream() -> bool:
            status = await client.get(f"{PREFIX}/events/chat-left/closed", headers=auth(key))
            return bool(status.json()["closed"])

        await eventually(closed_upstream, within_seconds=10)


async def test_a_client_leaving_an_endless_stream_closes_it_upstream(
    gateway: GatewayProcess, key: SigningKey
) -> None:
    stream = "left"
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
        async with client.stream(
            "GET", f"{PREFIX}/events", params={"stream": stream, "count": 1000}, headers=auth(key)
        ) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    break
        # The upstream is now waiting for an acknowledgement that never comes; the client left.

        async def closed_upstream() -> bool:
            status = await client.get(f"{PREFIX}/events/{stream}/closed", headers=auth(key))
            return bool(status.json()["closed"])

        await eventually(closed_upstream, within_seconds=10)


async def test_a_websocket_echoes_through_the_gateway(
    gateway: GatewayProcess, key: SigningKey
) -> None:
    user_id = "0b8a3a57-5d8f-4a49-a1b6-4f3c1d2e9a10"
    trace_id = "5bf92f3577b34da6a3ce929d0e0e4736"
    url = f"ws://127.0.0.1:{gateway.port}/ws?room=42"
    headers = {
        **auth(key, sub=user_id),
        # Spoofed identity: the upstream must see who the token says, not this.
        "X-User-Id": "00000000-0000-0000-0000-000000000000",
        "X-User-Roles": "admin",
        "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01",
    }
    async with connect(url, additional_headers=headers) as socket:
        hello = json.loads(await socket.recv())
        assert socket.response is not None
        assert "x-ratelimit-remaining" in socket.response.headers
        await socket.send("ping")
        assert await socket.recv() == "ping"
        await socket.send(b"\x00\x01binary")
        assert await socket.recv() == b"\x00\x01binary"
    # The upstream verified the forwarded token itself and saw the real caller.
    assert hello["verified_subject"] == user_id
    assert hello["hello"] == user_id
    assert hello["query"] == "room=42"
    assert hello["x_forwarded_for"] == "127.0.0.1"
    assert hello["traceparent"].split("-")[1] == trace_id
    # Browsers cannot set headers on a WebSocket: the token may come as a query parameter.
    async with connect(f"ws://127.0.0.1:{gateway.port}/ws?access_token={key.token()}") as socket:
        assert json.loads(await socket.recv())["verified_subject"] is not None
        await socket.send("again")
        assert await socket.recv() == "again"


async def test_a_websocket_token_may_come_as_the_token_parameter_or_as_subprotocols(
    gateway: GatewayProcess, key: SigningKey
) -> None:
    user_id = str(uuid.uuid4())
    token = key.token(sub=user_id)
    url = f"ws://127.0.0.1:{gateway.port}/ws"
    # The platform's reference form; the upstream gets the query string as it was sent.
    async with connect(f"{url}?token={token}&room=7") as socket:
        hello = json.loads(await socket.recv())
        assert hello["verified_subject"] == user_id
        assert hello["query"] == f"token={token}&room=7"
    # Out of the URL: `bearer` and the token offered as two subprotocols. The token is
    # neither selected nor offered upstream, which gets it as `Authorization`.
    async with connect(url, subprotocols=[Subprotocol("bearer"), Subprotocol(token)]) as socket:
        hello = json.loads(await socket.recv())
        assert socket.subprotocol == "bearer"
        assert socket.response is not None
        assert socket.response.headers["sec-websocket-protocol"] == "bearer"
        await socket.send("ping")
        assert await socket.recv() == "ping"
    assert hello["verified_subject"] == user_id
    assert hello["subprotocols"] == ["bearer"]
    # One entry, `bearer.<token>`, next to the application's own subprotocol, which the
    # upstream selects.
    offered = [Subprotocol(f"bearer.{token}"), Subprotocol("chat.v1")]
    async with connect(f"{url}?select=chat.v1", subprotocols=offered) as socket:
        hello = json.loads(await socket.recv())
        assert socket.subprotocol == "chat.v1"
    assert hello["verified_subject"] == user_id
    assert hello["subprotocols"] == ["chat.v1"]
    async with connect(url, subprotocols=[Subprotocol(f"bearer.{token}")]) as socket:
        assert json.loads(await socket.recv())["subprotocols"] == []
        assert socket.response is not None
        assert token not in str(socket.response.headers)


async def test_a_websocket_handshake_with_a_bad_or_a_second_token_is_refused(
    gateway: GatewayProcess, key: SigningKey
) -> None:
    url = f"ws://127.0.0.1:{gateway.port}/ws"
    token = key.token()
    for query, offered, code in [
        ("?token=not-a-token", None, "INVALID_TOKEN"),
        ("", [Subprotocol("bearer"), Subprotocol("not-a-token")], "INVALID_TOKEN"),
        ("", [Subprotocol("bearer.not-a-token")], "INVALID_TOKEN"),
        # `bearer` alone carries no token.
        ("", [Subprotocol("bearer")], "AUTHENTICATION_REQUIRED"),
    ]:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url + query, subprotocols=offered):
                pass
        status, body = refused_status(refused)
        assert (status, body["error"]["code"]) == (401, code)
    # Two different tokens: the gateway and the service could act on different ones.
    for query, headers, subprotocols in [
        (f"?token={token}", auth(key), None),
        (f"?token={token}&access_token={key.token()}", {}, None),
        (f"?access_token={token}", {}, [Subprotocol("bearer"), Subprotocol(key.token())]),
    ]:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url + query, additional_headers=headers, subprotocols=subprotocols):
                pass
        status, body = refused_status(refused)
        assert (status, body["error"]["code"]) == (400, "VALIDATION_ERROR")
    # The same token twice is one token.
    async with connect(
        f"{url}?token={token}", additional_headers={"Authorization": f"Bearer {token}"}
    ) as socket:
        assert json.loads(await socket.recv())["verified_subject"] is not None


def refused_status(refused: pytest.ExceptionInfo[InvalidStatus]) -> tuple[int, dict[str, Any]]:
    response = refused.value.response
    body: dict[str, Any] = json.loads(response.body or b"{}")
    assert body["status"] == "error"
    return response.status_code, body


async def test_a_websocket_without_a_valid_token_is_refused_at_the_handshake(
    gateway: GatewayProcess, key: SigningKey
) -> None:
    url = f"ws://127.0.0.1:{gateway.port}/ws"
    expired = key.token(exp=1_000_000, iat=999_000, nbf=999_000)
    cases: list[tuple[dict[str, str], str]] = [
        ({}, "AUTHENTICATION_REQUIRED"),
        ({"Authorization": "Bearer not-a-token"}, "INVALID_TOKEN"),
        ({"Authorization": f"Bearer {expired}"}, "TOKEN_EXPIRED"),
        # Identity headers alone buy nothing.
        ({"X-User-Id": str(uuid.uuid4()), "X-User-Roles": "admin"}, "AUTHENTICATION_REQUIRED"),
    ]
    for headers, code in cases:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, additional_headers=headers):
                pass
        status, body = refused_status(refused)
        assert (status, body["error"]["code"]) == (401, code)
        # A refused handshake counts against the client's address.
        assert "x-ratelimit-remaining" in refused.value.response.headers


async def test_a_websocket_with_two_authorization_headers_is_refused(
    gateway: GatewayProcess, key: SigningKey
) -> None:
    headers = [("Authorization", f"Bearer {key.token()}"), ("Authorization", "Bearer other")]
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"ws://127.0.0.1:{gateway.port}/ws", additional_headers=headers):
            pass
    status, body = refused_status(refused)
    assert (status, body["error"]["code"]) == (400, "VALIDATION_ERROR")


@pytest.mark.parametrize(
    ("status", "code"), [(403, "PERMISSION_DENIED"), (404, "RESOURCE_NOT_FOUND")]
)
async def test_an_upstream_refusing_the_handshake_is_relayed(
    gateway: GatewayProcess, key: SigningKey, status: int, code: str
) -> None:
    url = f"ws://127.0.0.1:{gateway.port}{PREFIX}/ws-refuse?status={status}"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, additional_headers=auth(key)):
            pass
    assert refused_status(refused)[0] == status
    assert refused_status(refused)[1]["error"]["code"] == code


async def test_cors_allows_only_the_configured_origins(gateway: GatewayProcess) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        preflight = await client.options(
            f"{PREFIX}/echo",
            headers={
                "Origin": "https://app.example.com",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://app.example.com"
        stranger = await client.options(
            f"{PREFIX}/echo",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        )
        assert stranger.status_code == 400
        assert "access-control-allow-origin" not in stranger.headers
        # A script on the allowed origin may read the rate-limit and request-id headers.
        simple = await client.get("/health", headers={"Origin": "https://app.example.com"})
        exposed = {
            name.strip().lower()
            for name in simple.headers["access-control-expose-headers"].split(",")
        }
        assert exposed >= {
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
            "ratelimit",
            "ratelimit-policy",
            "retry-after",
            "x-request-id",
        }
