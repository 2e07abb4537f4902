"""What the gateway answers when an upstream or Redis fails, and how it recovers by itself:
a gateway process in front of the stub upstream (and, for Redis, the machine's Redis
through a proxy the test can cut)."""

import asyncio
import json
import socket
import struct
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from redis.asyncio import Redis

from shared.testing import TcpProxy, eventually
from tests.component.gateway_helpers import (
    MIB,
    PREFIX,
    SigningKey,
    UpstreamProcess,
    upstream_env,
)
from tests.conftest import REDIS, require_dependencies
from tests.e2e.helpers import assert_envelope, metric
from tests.processes import GatewayProcess


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def upstream(workdir: Path, key: SigningKey) -> Iterator[UpstreamProcess]:
    process = UpstreamProcess(workdir, key).start()
    yield process
    process.stop()


@pytest.fixture
def redis_proxy() -> Iterator[TcpProxy]:
    require_dependencies("Redis")
    proxy = TcpProxy(*REDIS).start()
    yield proxy
    proxy.stop()


class Deployment:
    """The keys of one deployment (QUEUE_PREFIX) in the machine's Redis, where auth would
    keep the revocations; here the test plays auth."""

    def __init__(self) -> None:
        self.prefix = f"test-gw-{uuid.uuid4().hex[:10]}"
        self.redis = Redis.from_url(f"redis://{REDIS[0]}:{REDIS[1]}/0")
        self.marker = f"{self.prefix}:revoked:ready"

    async def revocations_published(self) -> None:
        await self.redis.set(self.marker, "1")

    async def lose_everything(self) -> None:
        keys = [key async for key in self.redis.scan_iter(f"{self.prefix}:*")]
        if keys:
            await self.redis.delete(*keys)


@pytest.fixture
async def deployment() -> AsyncIterator[Deployment]:
    """A deployment whose revocations auth has published (the marker is set)."""
    require_dependencies("Redis")
    deployment = Deployment()
    await deployment.revocations_published()
    yield deployment
    await deployment.lose_everything()
    await deployment.redis.aclose()


async def test_a_killed_upstream_gives_503_then_the_breaker_fails_fast_then_recovers(
    workdir: Path, upstream: UpstreamProcess, key: SigningKey
) -> None:
    env = upstream_env(upstream, BREAKER_FAILURE_THRESHOLD="3", BREAKER_RESET_SECONDS="0.5")
    gateway = GatewayProcess(workdir, env).start()
    headers = {"Authorization": f"Bearer {key.token()}"}
    restarted: UpstreamProcess | None = None
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
            assert (await client.get(f"{PREFIX}/echo", headers=headers)).status_code == 200
            upstream.kill()
            for _ in range(3):
                down = await client.get(f"{PREFIX}/echo", headers=headers)
                body = assert_envelope(down, 503, "SERVICE_UNAVAILABLE")
                assert "files" in body["error"]["message"]
            metrics = (await client.get("/metrics")).text
            assert metric(metrics, "gateway_circuit_breaker_open", upstream="files") == 1
            assert (
                metric(metrics, "gateway_upstream_failures_total", upstream="files", kind="connect")
                >= 3
            )
            # Open: answered at once, without trying the upstream.
            assert_envelope(
                await client.get(f"{PREFIX}/echo", headers=headers), 503, "SERVICE_UNAVAILABLE"
            )

            restarted = UpstreamProcess(workdir, key, port=upstream.port).start()

            async def recovered() -> bool:
                response = await client.get(f"{PREFIX}/echo", headers=headers)
                return response.status_code == 200

            await eventually(recovered, within_seconds=15, interval=0.2)
            metrics = (await client.get("/metrics")).text
            assert metric(metrics, "gateway_circuit_breaker_open", upstream="files") == 0
    finally:
        gateway.stop()
        if restarted is not None:
            restarted.stop()


async def test_slow_upstream_is_504_and_failing_upstream_hides_its_internals(
    workdir: Path, upstream: UpstreamProcess, key: SigningKey
) -> None:
    env = upstream_env(upstream, UPSTREAM_TIMEOUTS='{"files": 0.5}')
    gateway = GatewayProcess(workdir, env).start()
    headers = {"Authorization": f"Bearer {key.token()}"}

    async def slow_upload() -> AsyncIterator[bytes]:
        for _ in range(8):
            await asyncio.sleep(0.25)
            yield b"s" * MIB

    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
            slow = await client.get(f"{PREFIX}/slow", params={"seconds": 3}, headers=headers)
            assert_envelope(slow, 504, "UPSTREAM_TIMEOUT")
            # The timeout is the wait for an answer, not the time the client takes to send:
            # an upload streamed for several times the timeout goes through.
            upload = await client.post(f"{PREFIX}/upload", content=slow_upload(), headers=headers)
            assert upload.status_code == 200, upload.text
            assert upload.json() == {"bytes": 8 * MIB}
            boom = await client.get(f"{PREFIX}/boom", headers=headers)
            assert_envelope(boom, 500, "INTERNAL_ERROR")
            for leaked in ("Traceback", "hunter2", "db.internal", "psycopg"):
                assert leaked not in boom.text
    finally:
        gateway.stop()


async def test_chat_gets_the_registry_s_longer_timeout_unless_configured_otherwise(
    workdir: Path, upstream: UpstreamProcess, key: SigningKey
) -> None:
    """Chat's upstream_timeout_seconds in the registry outlasts UPSTREAM_TIMEOUT_SECONDS,
    even when UPSTREAM_TIMEOUTS names other upstreams; naming chat there overrides it."""
    headers = {"Authorization": f"Bearer {key.token()}"}
    # The stub's slow endpoint stands for chat.
    routes = json.dumps({PREFIX: "files", f"{PREFIX}/slow": "chat"})
    for timeouts, status in (('{"files": 0.5}', 200), ('{"chat": 0.5}', 504)):
        env = upstream_env(
            upstream, ROUTES=routes, UPSTREAM_TIMEOUT_SECONDS="0.5", UPSTREAM_TIMEOUTS=timeouts
        )
        gateway = GatewayProcess(workdir, env).start()
        try:
            async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
                slow = await client.get(f"{PREFIX}/slow", params={"seconds": 1.5}, headers=headers)
        finally:
            gateway.stop()
        assert slow.status_code == status, (timeouts, slow.text)


async def test_an_upstream_502_or_504_in_the_envelope_reaches_the_client_as_it_is(
    workdir: Path, upstream: UpstreamProcess, key: SigningKey
) -> None:
    env = upstream_env(upstream, BREAKER_FAILURE_THRESHOLD="2")
    gateway = GatewayProcess(workdir, env).start()
    headers = {"Authorization": f"Bearer {key.token()}"}
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
            relayed: list[tuple[dict[str, str | int], int, str]] = [
                ({"status": 502, "code": "PROVIDER_ERROR"}, 502, "PROVIDER_ERROR"),
                ({"status": 504, "code": "UPSTREAM_TIMEOUT"}, 504, "UPSTREAM_TIMEOUT"),
                ({"status": 502, "chunked": 1, "pad": 20000}, 502, "PROVIDER_ERROR"),
            ]
            for params, status, code in relayed:
                request_id = f"relayed-{uuid.uuid4()}"
                response = await client.get(
                    f"{PREFIX}/failing",
                    params=params,
                    headers={**headers, "X-Request-ID": request_id},
                )
                body = assert_envelope(response, status, code)
                assert body["error"]["message"] == "The AI provider failed"
                assert body["error"]["details"]["provider"] == "lyceum-dev"
                assert response.headers["x-request-id"] == request_id
                assert response.headers["retry-after"] == "7"
                assert "x-ratelimit-remaining" in response.headers
            metrics = (await client.get("/metrics")).text
            # The service answered: no upstream failure, and its breaker stays closed.
            assert metric(metrics, "gateway_circuit_breaker_open", upstream="files") == 0
            assert (
                metric(metrics, "gateway_upstream_failures_total", upstream="files", kind="5xx")
                == 0
            )
            assert (await client.get(f"{PREFIX}/echo", headers=headers)).status_code == 200

            # Anything else stays behind the gateway's own envelope.
            hidden_errors: list[tuple[dict[str, str | int], int, str]] = [
                ({"status": 502, "html": 1}, 503, "SERVICE_UNAVAILABLE"),
                ({"status": 502, "pad": 70000}, 503, "SERVICE_UNAVAILABLE"),
                ({"status": 502, "pad": 70000, "chunked": 1}, 503, "SERVICE_UNAVAILABLE"),
                ({"status": 504, "code": "SOMETHING_ELSE"}, 504, "UPSTREAM_TIMEOUT"),
                ({"status": 503, "code": "SERVICE_UNAVAILABLE"}, 503, "SERVICE_UNAVAILABLE"),
                ({"status": 500, "code": "INTERNAL_ERROR"}, 500, "INTERNAL_ERROR"),
            ]
            for params, status, code in hidden_errors:
                hidden = await client.get(f"{PREFIX}/failing", params=params, headers=headers)
                body = assert_envelope(hidden, status, code)
                assert "details" not in body["error"]
                for leaked in ("nginx", "lyceum-dev", "SOMETHING_ELSE"):
                    assert leaked not in hidden.text
    finally:
        gateway.stop()


async def test_the_gateway_answers_its_own_errors_in_the_envelope(
    workdir: Path, upstream: UpstreamProcess, key: SigningKey
) -> None:
    gateway = GatewayProcess(workdir, upstream_env(upstream)).start()
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
            assert_envelope(await client.get("/api/v1/nothing-here"), 404, "RESOURCE_NOT_FOUND")
            assert_envelope(await client.post("/health"), 405, "METHOD_NOT_ALLOWED")
            metrics = (await client.get("/metrics")).text
            for status in ("404", "405"):
                assert (
                    metric(
                        metrics,
                        "gateway_requests_total",
                        route="unmatched",
                        status=status,
                        upstream="gateway",
                    )
                    >= 1
                )
            # X-Forwarded-Proto from a client that is not a trusted proxy earns no HSTS,
            # and the upstream is told the scheme the gateway saw.
            spoofed = await client.get("/health", headers={"X-Forwarded-Proto": "https"})
            assert "strict-transport-security" not in spoofed.headers
            assert spoofed.headers["x-content-type-options"] == "nosniff"
            echoed = await client.get(
                f"{PREFIX}/echo",
                headers={"Authorization": f"Bearer {key.token()}", "X-Forwarded-Proto": "https"},
            )
            assert echoed.json()["headers"]["x-forwarded-proto"] == "http"
            # Two Authorization headers: the gateway and the service could act on different
            # tokens, so the request goes nowhere.
            twice = await client.get(
                f"{PREFIX}/echo",
                headers=[
                    ("Authorization", f"Bearer {key.token()}"),
                    ("Authorization", f"Bearer {key.token(roles=['admin'])}"),
                ],
            )
            body = assert_envelope(twice, 400, "VALIDATION_ERROR")
            assert body["error"]["details"]["field"] == "Authorization"
            assert_envelope(await client.get(f"{PREFIX}/echo"), 401, "AUTHENTICATION_REQUIRED")
            expired = key.token(exp=1_000_000, iat=999_000, nbf=999_000)
            assert_envelope(
                await client.get(f"{PREFIX}/echo", headers={"Authorization": f"Bearer {expired}"}),
                401,
                "TOKEN_EXPIRED",
            )
            wrong_audience = key.token(aud="someone-else")
            assert_envelope(
                await client.get(
                    f"{PREFIX}/echo", headers={"Authorization": f"Bearer {wrong_audience}"}
                ),
                401,
                "INVALID_TOKEN",
            )
    finally:
        gateway.stop()


async def test_with_redis_down_requests_still_pass_and_the_metric_counts_it(
    workdir: Path,
    upstream: UpstreamProcess,
    key: SigningKey,
    redis_proxy: TcpProxy,
    deployment: Deployment,
) -> None:
    env = upstream_env(
        upstream,
        REDIS_URL=f"redis://127.0.0.1:{redis_proxy.port}/0",
        QUEUE_PREFIX=deployment.prefix,
    )
    gateway = GatewayProcess(workdir, env).start()
    headers = {"Authorization": f"Bearer {key.token()}"}
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
            limited = await client.get(f"{PREFIX}/echo", headers=headers)
            assert limited.status_code == 200
            assert "x-ratelimit-remaining" in limited.headers
            redis_proxy.cut()
            try:
                for _ in range(3):
                    unlimited = await client.get(f"{PREFIX}/echo", headers=headers)
                    assert unlimited.status_code == 200, unlimited.text
                    assert "x-ratelimit-remaining" not in unlimited.headers
                metrics = (await client.get("/metrics")).text
                assert metric(metrics, "gateway_rate_limit_storage_errors_total") >= 3
                ready = (await client.get("/ready")).json()
                assert ready["checks"]["rate_limit_store"] == "unavailable"
            finally:
                redis_proxy.restore()

            async def limited_again() -> bool:
                response = await client.get(f"{PREFIX}/echo", headers=headers)
                return "x-ratelimit-remaining" in response.headers

            await eventually(limited_again, within_seconds=10, interval=0.2)
    finally:
        gateway.stop()


async def test_with_redis_down_a_fail_closed_gateway_refuses(
    workdir: Path,
    upstream: UpstreamProcess,
    key: SigningKey,
    redis_proxy: TcpProxy,
    deployment: Deployment,
) -> None:
    env = upstream_env(
        upstream,
        REDIS_URL=f"redis://127.0.0.1:{redis_proxy.port}/0",
        QUEUE_PREFIX=deployment.prefix,
        RATE_LIMIT_FAIL_OPEN="false",
    )
    gateway = GatewayProcess(workdir, env).start()
    headers = {"Authorization": f"Bearer {key.token()}"}
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
            redis_proxy.cut()
            refused = await client.get(f"{PREFIX}/echo", headers=headers)
            assert_envelope(refused, 503, "SERVICE_UNAVAILABLE")
    finally:
        redis_proxy.restore()
        gateway.stop()


async def test_with_redis_down_a_fail_closed_revocation_check_is_503(
    workdir: Path,
    upstream: UpstreamProcess,
    key: SigningKey,
    redis_proxy: TcpProxy,
    deployment: Deployment,
) -> None:
    env = upstream_env(
        upstream,
        REDIS_URL=f"redis://127.0.0.1:{redis_proxy.port}/0",
        QUEUE_PREFIX=deployment.prefix,
        REVOCATION_FAIL_OPEN="false",
    )
    gateway = GatewayProcess(workdir, env).start()
    headers = {"Authorization": f"Bearer {key.token()}"}
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
            assert (await client.get(f"{PREFIX}/echo", headers=headers)).status_code == 200
            redis_proxy.cut()
            refused = await client.get(f"{PREFIX}/echo", headers=headers)
            assert_envelope(refused, 503, "SERVICE_UNAVAILABLE")
            metrics = (await client.get("/metrics")).text
            assert metric(metrics, "gateway_revocation_store_errors_total") >= 1
    finally:
        redis_proxy.restore()
        gateway.stop()


async def test_a_redis_that_lost_the_revocations_is_503_even_failing_open_until_refilled(
    workdir: Path, upstream: UpstreamProcess, key: SigningKey, deployment: Deployment
) -> None:
    """A Redis that answers without the marker (flushed, restarted empty, failed over) is
    not an outage: REVOCATION_FAIL_OPEN (true here, the default) does not let tokens through
    it. A token it still lists as revoked stays 401."""
    env = upstream_env(
        upstream,
        REDIS_URL=f"redis://{REDIS[0]}:{REDIS[1]}/0",
        QUEUE_PREFIX=deployment.prefix,
        REVOCATION_FAIL_OPEN="true",
    )
    gateway = GatewayProcess(workdir, env).start()
    good = key.token()
    revoked = key.token()
    revoked_jti = jwt.decode(revoked, options={"verify_signature": False})["jti"]
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:

            async def answer(token: str) -> httpx.Response:
                return await client.get(
                    f"{PREFIX}/echo", headers={"Authorization": f"Bearer {token}"}
                )

            assert (await answer(good)).status_code == 200
            await deployment.lose_everything()
            assert_envelope(await answer(good), 503, "SERVICE_UNAVAILABLE")
            await deployment.redis.set(f"{deployment.prefix}:revoked:jti:{revoked_jti}", 1, ex=60)
            assert_envelope(await answer(revoked), 401, "INVALID_TOKEN")
            metrics = (await client.get("/metrics")).text
            assert metric(metrics, "gateway_revocation_store_errors_total") >= 1

            await deployment.revocations_published()
            assert (await answer(good)).status_code == 200
            assert_envelope(await answer(revoked), 401, "INVALID_TOKEN")
    finally:
        gateway.stop()


def gateway_behind(front: TcpProxy, upstream: UpstreamProcess, workdir: Path) -> GatewayProcess:
    """Starts `front` and a gateway whose upstream is reached through it."""
    front.start()
    env = upstream_env(upstream)
    env["UPSTREAMS"] = env["UPSTREAMS"].replace(upstream.url, f"http://127.0.0.1:{front.port}")
    return GatewayProcess(workdir, env).start()


class ResetFirst(TcpProxy):
    """In front of the upstream: resets the next `resets` connections before reading a byte
    (the upstream never sees those requests), then forwards."""

    def __init__(self, target_port: int) -> None:
        super().__init__("127.0.0.1", target_port)
        self.resets = 0
        self.connections = 0

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.resets > 0:
            self.resets -= 1
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.close()
            return
        await super()._accept(reader, writer)


async def test_a_get_is_retried_after_a_refused_connection_and_a_post_is_not(
    workdir: Path, upstream: UpstreamProcess, key: SigningKey
) -> None:
    front = ResetFirst(upstream.port)
    gateway = gateway_behind(front, upstream, workdir)
    headers = {"Authorization": f"Bearer {key.token()}"}
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
            front.resets = 1
            posted = await client.post(f"{PREFIX}/echo", json={"n": 1}, headers=headers)
            assert_envelope(posted, 503, "SERVICE_UNAVAILABLE")
            assert front.connections == 1, "a POST is never sent twice"

            front.resets = 1
            got = await client.get(f"{PREFIX}/echo", headers=headers)
            assert got.status_code == 200, got.text
            assert front.connections == 3, "the GET was sent again on a new connection"
            metrics = (await client.get("/metrics")).text
            assert metric(metrics, "gateway_upstream_retries_total", upstream="files") == 1
    finally:
        gateway.stop()
        front.stop()


class CloseWhenReused(TcpProxy):
    """In front of the upstream: with `drops` set, the next request sent on a connection
    that has already carried an answer is not forwarded; the connection is closed instead,
    as a server closes an idle keep-alive connection just as a request is sent on it."""

    def __init__(self, target_port: int) -> None:
        super().__init__("127.0.0.1", target_port)
        self.drops = 0
        self.connections = 0
        self.forwarded_requests = 0

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        target_reader, target_writer = await asyncio.open_connection(*self.target)
        answered = asyncio.Event()

        async def answers() -> None:
            while data := await target_reader.read(65536):
                writer.write(data)
                await writer.drain()
                answered.set()

        relaying = asyncio.create_task(answers())
        try:
            carrying = False
            while data := await reader.read(65536):
                if answered.is_set() and self.drops > 0:
                    self.drops -= 1
                    return
                if not carrying or answered.is_set():
                    self.forwarded_requests += 1
                    answered.clear()
                carrying = True
                target_writer.write(data)
                await target_writer.drain()
        finally:
            relaying.cancel()
            writer.transport.abort()
            target_writer.transport.abort()


async def test_a_post_on_a_pooled_connection_the_upstream_closed_is_sent_again_on_a_new_one(
    workdir: Path, upstream: UpstreamProcess, key: SigningKey
) -> None:
    front = CloseWhenReused(upstream.port)
    gateway = gateway_behind(front, upstream, workdir)
    headers = {"Authorization": f"Bearer {key.token()}"}
    body = b"p" * 5000
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
            first = await client.post(f"{PREFIX}/upload", content=body, headers=headers)
            assert first.json() == {"bytes": len(body)}
            assert front.connections == 1

            front.drops = 1
            again = await client.post(f"{PREFIX}/upload", content=body, headers=headers)
            assert again.status_code == 200, again.text
            assert again.json() == {"bytes": len(body)}
            assert front.drops == 0, "the pooled connection was used, and closed"
            assert front.connections == 2
            assert front.forwarded_requests == 2, "the upstream got the POST once"
            metrics = (await client.get("/metrics")).text
            assert metric(metrics, "gateway_upstream_retries_total", upstream="files") == 1
    finally:
        gateway.stop()
        front.stop()
