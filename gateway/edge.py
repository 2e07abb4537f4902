"""Everything the gateway holds while it runs, made in the lifespan and closed after it."""

import asyncio
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httpx

from gateway.admission import Admission
from gateway.metrics import REVOCATION_STORE_ERRORS
from gateway.openapi import MergedOpenApi
from gateway.proxy import HttpProxy, PoolConnector
from gateway.ratelimit import RateLimits, make_storage
from gateway.routing import RouteTable
from gateway.settings import GatewaySettings
from gateway.websocket import WebSocketProxy
from shared import health
from shared.revocation import (
    MemoryRevocationStore,
    RedisRevocationStore,
    RevocationStore,
    revocation_store,
)
from shared.security import JwksKeySource, TokenVerifier

# What `/status` may repeat of a service's own `/health`: a version string, nothing longer.
MAX_VERSION_LENGTH = 64


class Edge:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.routes = RouteTable(
            settings.routes,
            settings.upstreams,
            settings.public_routes,
            settings.websocket_routes,
            settings.upload_routes,
        )
        self._http: HttpProxy | None = None
        self._websockets: WebSocketProxy | None = None
        self._openapi: MergedOpenApi | None = None
        self._client: httpx.AsyncClient | None = None
        self._session: aiohttp.ClientSession | None = None
        self._fresh_session: aiohttp.ClientSession | None = None
        self._revocations: RevocationStore | None = None
        self._rate_limits: RateLimits | None = None
        self._services: dict[str, dict[str, str | None]] = {}
        self._services_checked_at = float("-inf")
        self._services_lock = asyncio.Lock()

    async def start(self) -> None:
        settings = self.settings
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(
                settings.upstream_timeout_seconds,
                connect=settings.upstream_connect_timeout_seconds,
            ),
            limits=httpx.Limits(max_connections=512, max_keepalive_connections=128),
            follow_redirects=False,
        )
        self._rate_limits = RateLimits(settings, make_storage(settings))
        # One Redis client for the rate limits and the revocations: each request asks both
        # in one pipeline (gateway.admission).
        redis = self._rate_limits.redis
        prefix = f"{settings.queue_prefix}:revoked"
        self._revocations = (
            revocation_store(
                settings.redis_url,
                prefix,
                fail_open=settings.revocation_fail_open,
                on_error=REVOCATION_STORE_ERRORS.inc,
            )
            if redis is None
            else RedisRevocationStore(
                redis,
                prefix,
                fail_open=settings.revocation_fail_open,
                on_error=REVOCATION_STORE_ERRORS.inc,
            )
        )
        verifier = TokenVerifier(
            JwksKeySource(
                settings.jwks_url,
                min_refresh_seconds=settings.jwks_min_refresh_seconds,
                max_age_seconds=settings.jwks_cache_seconds,
                client=self._client,
            ),
            self._revocations,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            algorithms=settings.jwt_algorithms,
            leeway_seconds=settings.jwt_leeway_seconds,
        )
        self._session = aiohttp.ClientSession(
            connector=PoolConnector(limit=512, limit_per_host=0, keepalive_timeout=30),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        # Retries go on connections of their own, closed after their answer.
        self._fresh_session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64, limit_per_host=0, force_close=True),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        # One retry policy, the proxy's (UPSTREAM_RETRIES, counted in
        # gateway_upstream_retries_total; which requests: gateway.proxy._may_send_again):
        # aiohttp's own silent retry of idempotent requests on a reset connection is turned
        # off, as its test client does.
        for session in (self._session, self._fresh_session):
            session._retry_connection = False
        self._openapi = MergedOpenApi(
            self.routes,
            self._client,
            settings.openapi_cache_seconds,
            retry_seconds=settings.openapi_retry_seconds,
        )
        self._http = HttpProxy(
            settings,
            self.routes,
            verifier,
            self._rate_limits,
            Admission(verifier, self._rate_limits),
            self._session,
            allowed_methods=self._openapi.allowed_methods,
            fresh_session=self._fresh_session,
        )
        self._websockets = WebSocketProxy(settings, verifier, self._rate_limits)

    async def close(self) -> None:
        for session in (self._session, self._fresh_session):
            if session is not None:
                await session.close()
        if self._client is not None:
            await self._client.aclose()
        if self._revocations is not None and not isinstance(
            self._revocations, MemoryRevocationStore
        ):
            await self._revocations.close()

    @property
    def http(self) -> HttpProxy:
        assert self._http is not None, "Edge.start() not called"
        return self._http

    @property
    def websockets(self) -> WebSocketProxy:
        assert self._websockets is not None, "Edge.start() not called"
        return self._websockets

    @property
    def rate_limits(self) -> RateLimits:
        assert self._rate_limits is not None, "Edge.start() not called"
        return self._rate_limits

    @property
    def openapi(self) -> MergedOpenApi:
        assert self._openapi is not None, "Edge.start() not called"
        return self._openapi

    async def readiness(self) -> dict[str, str]:
        """Each upstream, the rate-limit store (Redis or memory), revocations and the broker."""
        assert self._client is not None
        assert self._rate_limits is not None
        assert self._revocations is not None
        client = self._client

        async def upstream_ok(url: str) -> bool:
            try:
                return (await client.get(f"{url}/health", timeout=2.0)).status_code == 200
            except httpx.HTTPError:
                return False

        names = list(self.routes.upstreams)
        results = await asyncio.gather(
            *(upstream_ok(upstream.url) for upstream in self.routes.upstreams.values()),
            self._rate_limits.ping(),
            self._revocations.ping(),
            self._broker_reachable(),
        )
        checks = {
            name: "ok" if ok else "unavailable"
            for name, ok in zip(
                [*names, "rate_limit_store", "revocation_store", "broker"], results, strict=True
            )
        }
        if not self.settings.amqp_url:
            checks["broker"] = "not_used"
        return checks

    async def status(self) -> dict[str, Any]:
        """The platform's version and uptime, and each service's state and version, by its
        name only. The services' answers are kept for STATUS_CACHE_SECONDS and fetched once
        for all the requests that arrive meanwhile."""
        services = await self._service_states()
        ok = all(state["status"] == "ok" for state in services.values())
        return {
            "status": "ok" if ok else "degraded",
            "version": health.version(),
            "uptime": health.uptime_seconds(),
            "services": services,
        }

    async def _service_states(self) -> dict[str, dict[str, str | None]]:
        async with self._services_lock:
            if time.monotonic() - self._services_checked_at >= self.settings.status_cache_seconds:
                upstreams = self.routes.upstreams
                states = await asyncio.gather(
                    *(self._service_state(upstream.url) for upstream in upstreams.values())
                )
                self._services = dict(zip(upstreams, states, strict=True))
                self._services_checked_at = time.monotonic()
            return self._services

    async def _service_state(self, url: str) -> dict[str, str | None]:
        assert self._client is not None
        try:
            response = await self._client.get(f"{url}/health", timeout=2.0)
            body = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            body = None
        if not isinstance(body, dict):
            return {"status": "unavailable", "version": None}
        version = body.get("version")
        if not isinstance(version, str) or len(version) > MAX_VERSION_LENGTH:
            version = None
        return {"status": "ok", "version": version}

    async def _broker_reachable(self) -> bool:
        if not self.settings.amqp_url:
            return True
        address = urlsplit(self.settings.amqp_url)
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(address.hostname, address.port or 5672), 2.0
            )
        except (OSError, TimeoutError):
            return False
        writer.close()
        return True
