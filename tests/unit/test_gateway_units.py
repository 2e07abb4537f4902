"""The gateway's small parts: route patterns, client address and scheme, rate-limit headers
and policy choice, the circuit breaker, merging OpenAPI documents; and the HTTP proxy run
in-process against a real upstream socket: breaker trials, timeouts, retries."""

import asyncio
import contextlib
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web
from limits import parse
from limits.aio.storage import MemoryStorage
from prometheus_client import REGISTRY
from starlette.types import Message

from gateway.admission import Admission
from gateway.breaker import CircuitBreaker
from gateway.metrics import method_label
from gateway.openapi import MergedOpenApi, _rename_conflicting_schemas
from gateway.proxy import HttpProxy
from gateway.ratelimit import ClientAddress, Decision, Policy, RateLimits
from gateway.routing import RouteTable, Upstream
from gateway.settings import GatewaySettings
from shared.errors import RateLimitExceeded
from shared.revocation import MemoryRevocationStore
from shared.routes import RoutePatterns
from shared.security import CallableKeySource, Identity, TokenVerifier
from shared.testing import free_port_block


def identity(*roles: str) -> Identity:
    return Identity(user_id=uuid.uuid4(), roles=roles, jti="j", expires_at=0)


def test_route_patterns_match_method_and_wildcards() -> None:
    patterns = RoutePatterns(["POST /api/v1/auth/login", "* /api/v1/users/*-*-*-*-*"])
    assert patterns.match("POST", "/api/v1/auth/login")
    assert not patterns.match("GET", "/api/v1/auth/login")
    assert patterns.match("DELETE", f"/api/v1/users/{uuid.uuid4()}")
    assert not patterns.match("GET", "/api/v1/users/me")


def test_route_table_longest_prefix_websocket_and_upload_routes() -> None:
    table = RouteTable(
        {"/api/v1": "a", "/api/v1/users": "b"},
        {"a": "http://a", "b": "http://b/"},
        [],
        {"/ws": "chat"},
        ["POST /api/v1/documents"],
    )
    assert table.resolve("/api/v1/users/me") == table.upstreams["b"]
    assert table.resolve("/api/v1/usersx") == table.upstreams["a"]
    assert table.resolve("/other") is None
    assert table.resolve_websocket("/ws") == ("chat", None)
    assert table.is_upload("POST", "/api/v1/documents")
    assert not table.is_upload("PUT", "/api/v1/documents")
    assert not table.is_upload("POST", "/api/v1/documents/search")


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    untrusted = ClientAddress([])
    assert untrusted.resolve("10.0.0.5", "1.2.3.4") == "10.0.0.5"
    trusted = ClientAddress(["10.0.0.0/8"])
    assert trusted.resolve("10.0.0.5", "1.2.3.4, 10.0.0.9") == "1.2.3.4"
    assert trusted.resolve("192.168.1.1", "1.2.3.4") == "192.168.1.1"
    assert trusted.resolve("10.0.0.5", "not-an-ip") == "10.0.0.5"


def test_decision_headers_follow_both_conventions() -> None:
    policy = Policy("auth", parse("5/minute"))
    headers = dict(Decision(policy, False, 0, 42).headers())
    assert headers[b"x-ratelimit-limit"] == b"5"
    assert headers[b"x-ratelimit-remaining"] == b"0"
    assert int(headers[b"x-ratelimit-reset"]) >= int(time.time()) + 41
    assert headers[b"ratelimit-policy"] == b'"auth";q=5;w=60'
    assert headers[b"ratelimit"] == b'"auth";r=0;t=42'
    assert headers[b"retry-after"] == b"42"


def test_policy_choice() -> None:
    limits = RateLimits(GatewaySettings(), MemoryStorage())
    admin, student = identity("admin"), identity("student")
    assert limits.policy_for("POST", "/api/v1/auth/login", None, "1.1.1.1") == (
        limits.auth,
        "ip:1.1.1.1",
    )
    assert limits.policy_for("GET", "/api/v1/users", admin, "ip")[0] is limits.admin
    assert limits.policy_for("GET", "/api/v1/users/me", admin, "ip")[0] is limits.default
    assert limits.policy_for("GET", "/api/v1/users", student, "ip") == (
        limits.default,
        f"user:{student.user_id}",
    )
    assert limits.policy_for("GET", "/x", None, "2.2.2.2") == (limits.default, "ip:2.2.2.2")


async def test_rate_limit_counts_down_in_memory() -> None:
    limits = RateLimits(GatewaySettings(rate_limit_auth="2/minute"), MemoryStorage())
    first = await limits.check(limits.auth, "ip:x")
    second = await limits.check(limits.auth, "ip:x")
    third = await limits.check(limits.auth, "ip:x")
    assert first is not None
    assert second is not None
    assert third is not None
    assert (first.allowed, first.remaining) == (True, 1)
    assert (second.allowed, second.remaining) == (True, 0)
    assert not third.allowed


def test_breaker_opens_fails_fast_and_closes_after_a_successful_trial() -> None:
    breaker = CircuitBreaker("unit", failure_threshold=2, reset_seconds=0.05)
    breaker.failed()
    assert breaker.allow()
    breaker.failed()
    assert breaker.is_open
    assert not breaker.allow()
    time.sleep(0.06)
    assert breaker.allow(), "one trial after the pause"
    assert not breaker.allow(), "only one trial at a time"
    breaker.succeeded()
    assert not breaker.is_open
    assert breaker.allow()


def test_conflicting_schemas_are_renamed_with_their_refs() -> None:
    merged = {"Thing": {"type": "string"}}
    spec = {
        "paths": {"/x": {"get": {"schema": {"$ref": "#/components/schemas/Thing"}}}},
        "components": {"schemas": {"Thing": {"type": "integer"}, "Same": {}}},
    }
    renamed = _rename_conflicting_schemas("svc", spec, merged)
    assert "svc_Thing" in renamed["components"]["schemas"]
    assert renamed["paths"]["/x"]["get"]["schema"]["$ref"] == "#/components/schemas/svc_Thing"
    assert _rename_conflicting_schemas("svc", {"components": {"schemas": merged}}, merged) == {
        "components": {"schemas": merged}
    }


def test_a_trial_without_a_verdict_is_given_back() -> None:
    breaker = CircuitBreaker("unit-release", failure_threshold=1, reset_seconds=0)
    breaker.failed()
    trial = breaker.allow()
    assert trial is not None
    assert trial.trial
    assert breaker.allow() is None, "one trial at a time"
    breaker.release(trial)  # e.g. the body was over the limit: nothing learnt
    assert breaker.is_open
    again = breaker.allow()
    assert again is not None, "the next request may try"
    assert again.trial
    breaker.release(trial)  # a stale permit does not free somebody else's trial
    assert breaker.trial_running
    assert breaker.allow() is None
    breaker.failed()
    assert breaker.is_open
    assert not breaker.trial_running
    breaker.release(again)  # a permit whose verdict was given: nothing changes
    assert breaker.is_open


def test_a_failed_trial_opens_the_breaker_again() -> None:
    breaker = CircuitBreaker("unit-failed-trial", failure_threshold=1, reset_seconds=60)
    breaker.failed()
    assert breaker.allow() is None
    breaker._opened_at = time.monotonic() - 61  # the pause is over
    trial = breaker.allow()
    assert trial is not None
    breaker.failed()
    assert breaker.allow() is None, "a failed trial starts a new pause"
    breaker.release(trial)
    assert breaker.allow() is None


def test_a_closed_breaker_hands_out_plain_permits() -> None:
    breaker = CircuitBreaker("unit-closed", failure_threshold=3, reset_seconds=1)
    permit = breaker.allow()
    assert permit is not None
    assert not permit.trial
    breaker.release(permit)
    assert not breaker.is_open


def test_the_client_scheme_comes_from_a_trusted_proxy_only() -> None:
    trusted = ClientAddress(["10.0.0.0/8"])
    assert trusted.scheme("10.0.0.5", "http", b"https") == "https"
    assert trusted.scheme("10.0.0.5", "http", b"HTTPS, http") == "https"
    assert trusted.scheme("10.0.0.5", "http", b"gopher") == "http"
    assert trusted.scheme("192.168.1.1", "http", b"https") == "http"
    assert trusted.scheme("10.0.0.5", "https", None) == "https"
    assert ClientAddress([]).scheme("10.0.0.5", "http", b"https") == "http"


def test_made_up_methods_share_one_metric_label() -> None:
    assert method_label("GET") == "GET"
    assert method_label("FOO") == "OTHER"


async def test_enforce_adds_the_headers_and_refuses_over_the_limit() -> None:
    limits = RateLimits(GatewaySettings(rate_limit_default="1/minute"), MemoryStorage())
    headers: list[tuple[bytes, bytes]] = []
    await limits.enforce("GET", "/api/v1/x", None, "9.9.9.9", headers)
    assert dict(headers)[b"x-ratelimit-remaining"] == b"0"
    with pytest.raises(RateLimitExceeded):
        await limits.enforce("GET", "/api/v1/x", None, "9.9.9.9", headers)
    assert b"retry-after" in dict(headers)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_openapi_retries_a_missing_service_sooner_and_keeps_its_last_document(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    monkeypatch.setattr("gateway.openapi.time.monotonic", clock)
    failing = {"b": True}
    fetched: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        host = request.url.host
        fetched.append(host)
        if failing.get(host):
            return httpx.Response(503)
        return httpx.Response(200, json={"paths": {f"/api/v1/{host}/x": {"get": {}}}})

    routes = RouteTable(
        {"/api/v1/a": "a", "/api/v1/b": "b"}, {"a": "http://a", "b": "http://b"}, []
    )
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        merged = MergedOpenApi(routes, client, cache_seconds=30, retry_seconds=2)
        first = await merged.document()
        assert set(first["paths"]) == {"/api/v1/a/x", "/status"}
        clock.now += 1
        await merged.document()
        assert len(fetched) == 2, "within the retry pause the document is kept"
        clock.now += 1.5
        failing["b"] = False
        second = await merged.document()
        assert set(second["paths"]) == {"/api/v1/a/x", "/api/v1/b/x", "/status"}
        assert len(fetched) == 4, "a missing service is asked again after the retry pause"
        clock.now += 20
        await merged.document()
        assert len(fetched) == 4, "a complete document is kept for the cache period"
        failing["b"] = True
        clock.now += 11
        third = await merged.document()
        assert "/api/v1/b/x" in third["paths"], "a service that fails keeps its last document"
        assert len(fetched) == 6


# --- the proxy in-process, against a real upstream socket ----------------------------------

UPSTREAM_PREFIX = "/api/v1/files"


async def _upload(request: web.Request) -> web.Response:
    received = 0
    async for chunk in request.content.iter_any():
        received += len(chunk)
    return web.json_response({"bytes": received})


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("seconds", "1")))
    return web.json_response({"slept": True})


async def _pausing_stream(request: web.Request) -> web.StreamResponse:
    """Headers at once, then the body after a pause longer than the time-to-first-byte."""
    response = web.StreamResponse()
    await response.prepare(request)
    await response.write(b"first ")
    await asyncio.sleep(float(request.query.get("pause", "0.5")))
    await response.write(b"second")
    await response.write_eof()
    return response


@pytest.fixture
async def upstream_url() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post(f"{UPSTREAM_PREFIX}/upload", _upload)
    app.router.add_get(f"{UPSTREAM_PREFIX}/slow", _slow)
    app.router.add_get(f"{UPSTREAM_PREFIX}/stream", _pausing_stream)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port_block(1)
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
def unresponsive_url() -> Iterator[str]:
    """A listening socket whose accept queue is full: connecting to it never completes."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    yield f"http://127.0.0.1:{port}"
    for filler in fillers:
        filler.close()
    listener.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as client:
        client._retry_connection = False  # as the gateway's session (gateway/edge.py)
        yield client


def make_proxy(
    name: str, url: str, session: aiohttp.ClientSession, **overrides: Any
) -> tuple[HttpProxy, Upstream]:
    settings = GatewaySettings(
        upstreams={name: url},
        routes={UPSTREAM_PREFIX: name},
        public_routes=[f"* {UPSTREAM_PREFIX}/*"],
        redis_url=None,
        **overrides,
    )
    routes = RouteTable(settings.routes, settings.upstreams, settings.public_routes)
    verifier = TokenVerifier(
        CallableKeySource(_no_key),
        MemoryRevocationStore(),
        issuer="lyceum",
        audience="lyceum-api",
        algorithms=["EdDSA"],
    )
    rate_limits = RateLimits(settings, MemoryStorage())
    admission = Admission(verifier, rate_limits)
    proxy = HttpProxy(settings, routes, verifier, rate_limits, admission, session)
    return proxy, routes.upstreams[name]


async def _no_key(kid: str) -> None:
    return None


async def call(
    proxy: HttpProxy,
    upstream: Upstream,
    method: str,
    path: str,
    chunks: list[bytes] | None = None,
    *,
    disconnect_after: int | None = None,
    pause: float = 0.0,
) -> tuple[int, bytes]:
    """One request through the proxy; `chunks` are streamed as the body (chunked)."""
    messages: list[Message] = []
    if chunks is not None:
        for index, chunk in enumerate(chunks):
            if disconnect_after is not None and index == disconnect_after:
                messages.append({"type": "http.disconnect"})
                break
            messages.append({"type": "http.request", "body": chunk, "more_body": True})
        else:
            messages.append({"type": "http.request", "body": b"", "more_body": False})
    pending = iter(messages)

    async def receive() -> Message:
        await asyncio.sleep(pause)
        message = next(pending, None)
        if message is None:
            await asyncio.Event().wait()  # nothing more until the client leaves
        assert message is not None
        return message

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    path_only, _, query = path.partition("?")
    headers = [(b"host", b"gateway.test")]
    if chunks is not None:
        headers.append((b"transfer-encoding", b"chunked"))
    scope = {
        "type": "http",
        "method": method,
        "path": path_only,
        "raw_path": path_only.encode(),
        "query_string": query.encode(),
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
    }
    await proxy(scope, receive, send, UPSTREAM_PREFIX, upstream)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], body


async def test_a_trial_ending_in_413_frees_the_breaker(
    upstream_url: str, session: aiohttp.ClientSession
) -> None:
    proxy, upstream = make_proxy(
        "files-413",
        upstream_url,
        session,
        max_body_bytes=4096,
        breaker_failure_threshold=1,
        breaker_reset_seconds=0,
    )
    breaker = proxy.breakers[upstream.name]
    breaker.failed()
    assert breaker.is_open
    status, _ = await call(proxy, upstream, "POST", f"{UPSTREAM_PREFIX}/upload", [b"x" * 1024] * 8)
    assert status == 413
    assert not breaker.trial_running, "the trial ended without a verdict and was given back"
    status, body = await call(proxy, upstream, "POST", f"{UPSTREAM_PREFIX}/upload", [b"x" * 100])
    assert status == 200, body
    assert not breaker.is_open, "the next trial went through and closed the breaker"


async def test_a_trial_whose_client_leaves_mid_upload_frees_the_breaker(
    upstream_url: str, session: aiohttp.ClientSession
) -> None:
    proxy, upstream = make_proxy(
        "files-gone", upstream_url, session, breaker_failure_threshold=1, breaker_reset_seconds=0
    )
    breaker = proxy.breakers[upstream.name]
    breaker.failed()
    status, _ = await call(
        proxy, upstream, "POST", f"{UPSTREAM_PREFIX}/upload", [b"x" * 1024] * 8, disconnect_after=3
    )
    assert status == 400
    assert not breaker.trial_running
    assert breaker.is_open, "a client leaving says nothing about the upstream"
    assert breaker.allow() is not None


async def test_a_slow_upload_outlasting_the_timeout_succeeds(
    upstream_url: str, session: aiohttp.ClientSession
) -> None:
    proxy, upstream = make_proxy(
        "files-slow-upload", upstream_url, session, upstream_timeout_seconds=0.2
    )
    chunks = [b"u" * 1000] * 10
    status, body = await call(
        proxy, upstream, "POST", f"{UPSTREAM_PREFIX}/upload", chunks, pause=0.1
    )
    assert status == 200, body
    assert json.loads(body) == {"bytes": 10_000}
    # The same timeout still bounds the wait for the answer once the request is sent.
    status, body = await call(proxy, upstream, "GET", f"{UPSTREAM_PREFIX}/slow?seconds=2")
    assert status == 504
    assert json.loads(body)["error"]["code"] == "UPSTREAM_TIMEOUT"


async def test_once_the_answer_started_a_stream_may_pause_longer_than_the_timeout(
    upstream_url: str, session: aiohttp.ClientSession
) -> None:
    proxy, upstream = make_proxy(
        "files-stream-idle",
        upstream_url,
        session,
        upstream_timeout_seconds=0.2,
        upstream_stream_idle_seconds=5,
    )
    status, body = await call(proxy, upstream, "GET", f"{UPSTREAM_PREFIX}/stream?pause=0.6")
    assert status == 200
    assert body == b"first second"


async def test_a_connect_timeout_is_503_and_retried_for_idempotent_methods(
    unresponsive_url: str, session: aiohttp.ClientSession
) -> None:
    name = "files-connect-timeout"
    proxy, upstream = make_proxy(
        name, unresponsive_url, session, upstream_connect_timeout_seconds=0.2
    )

    def retries() -> float:
        return REGISTRY.get_sample_value("gateway_upstream_retries_total", {"upstream": name}) or 0

    status, body = await call(proxy, upstream, "GET", f"{UPSTREAM_PREFIX}/slow")
    assert status == 503
    assert json.loads(body)["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert retries() == 1
    status, body = await call(proxy, upstream, "POST", f"{UPSTREAM_PREFIX}/upload", [b"x"])
    assert status == 503
    assert retries() == 1, "a POST is not sent twice"
