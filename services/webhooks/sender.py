"""One HTTP attempt: to the address that passed the safety check, no redirects followed,
a timeout for the whole attempt, and only the first bytes of the response body kept.

Whatever goes wrong ends as an `AttemptResult` with an error text: `send` never raises
(except when cancelled), so that every attempt reaches the attempt log."""

import asyncio
import contextlib
import ssl
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

from services.webhooks.url_safety import (
    IPNetwork,
    Resolver,
    Target,
    Unresolvable,
    UnsafeUrl,
    resolve_checked,
)
from shared.logging import get_logger

log = get_logger(__name__)

ERROR_LIMIT = 500  # characters of the attempt log's error column
USER_AGENT = "Lyceum-Webhooks/1.0"


def storable(text: str, limit: int | None = None) -> str:
    """Text a PostgreSQL text column takes: no NUL characters, no lone surrogates."""
    clean = text.encode("utf-8", errors="replace").decode("utf-8").replace("\x00", "\ufffd")
    return clean if limit is None else clean[:limit]


def describe(exc: BaseException) -> str:
    """A one-line account of an exception for the attempt log, without a stack trace."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return storable(" ".join(text.split()), ERROR_LIMIT)


@dataclass(frozen=True)
class AttemptResult:
    status: int | None
    body: str | None
    duration_ms: int
    error: str | None

    @property
    def succeeded(self) -> bool:
        return self.error is None and self.status is not None and 200 <= self.status < 300


class HostClients:
    """One connection pool per (scheme, host name, port). Requests go to the checked IP
    address, which is what httpx keys its pool on, so a shared pool could hand a
    connection whose TLS certificate was verified for one host name to a request for
    another name on the same address. Separate pools rule that out; the least recently
    used idle pool is closed once there are more than `max_pools`."""

    def __init__(self, timeout_seconds: float, keepalive_per_host: int, max_pools: int) -> None:
        self._timeout = timeout_seconds
        self._keepalive = keepalive_per_host
        self._max_pools = max_pools
        self._tls: ssl.SSLContext = httpx.create_ssl_context(trust_env=False)
        self._pools: OrderedDict[tuple[str, str, int], httpx.AsyncClient] = OrderedDict()
        self._users: Counter[tuple[str, str, int]] = Counter()

    @contextlib.asynccontextmanager
    async def client(self, target: Target) -> AsyncIterator[httpx.AsyncClient]:
        key = (target.scheme, target.host, target.port)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = httpx.AsyncClient(
                follow_redirects=False,
                timeout=self._timeout,
                limits=httpx.Limits(
                    max_connections=None, max_keepalive_connections=self._keepalive
                ),
                verify=self._tls,
                trust_env=False,
            )
        self._pools.move_to_end(key)
        self._users[key] += 1
        try:
            yield pool
        finally:
            self._users[key] -= 1
            if self._users[key] <= 0:
                del self._users[key]
            await self._close_idle_beyond_limit()

    async def _close_idle_beyond_limit(self) -> None:
        excess = len(self._pools) - self._max_pools
        for key in list(self._pools):
            if excess <= 0:
                break
            if key not in self._users:
                await self._pools.pop(key).aclose()
                excess -= 1

    async def close(self) -> None:
        pools = list(self._pools.values())
        self._pools.clear()
        for pool in pools:
            await pool.aclose()


class Sender:
    def __init__(
        self,
        allowed_networks: list[IPNetwork],
        timeout_seconds: float,
        body_limit: int,
        resolver: Resolver,
        *,
        keepalive_per_host: int = 10,
        max_pools: int = 256,
    ) -> None:
        self._allowed = allowed_networks
        self._timeout = timeout_seconds
        self._body_limit = body_limit
        self._resolver = resolver
        self._clients = HostClients(timeout_seconds, keepalive_per_host, max_pools)

    async def close(self) -> None:
        await self._clients.close()

    async def send(self, url: str, headers: dict[str, str], body: str) -> AttemptResult:
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._timeout):
                status, text = await self._post(url, headers, body)
        except Unresolvable as exc:
            return AttemptResult(None, None, _elapsed_ms(started), storable(str(exc), ERROR_LIMIT))
        except UnsafeUrl as exc:
            return AttemptResult(None, None, _elapsed_ms(started), describe_refusal(exc))
        except TimeoutError:
            return AttemptResult(None, None, _elapsed_ms(started), "Timed out")
        except httpx.HTTPError as exc:
            return AttemptResult(None, None, _elapsed_ms(started), describe(exc))
        except Exception as exc:
            # Anything else (a bug, a library's surprise) still ends as a logged failure.
            log.warning("webhook_attempt_unexpected_error", url=url, exc_info=True)
            return AttemptResult(None, None, _elapsed_ms(started), describe(exc))
        failure = None if 200 <= status < 300 else f"HTTP {status}"
        return AttemptResult(status, text, _elapsed_ms(started), failure)

    async def _post(self, url: str, headers: dict[str, str], body: str) -> tuple[int, str]:
        target = await resolve_checked(url, self._allowed, self._resolver)
        # Connect to the checked address; Host and the TLS name stay those of the URL.
        extensions = {} if target.host_is_address else {"sni_hostname": target.host}
        async with self._clients.client(target) as client:
            request = client.build_request(
                "POST",
                target.connect_url,
                content=body.encode(),
                headers={
                    **headers,
                    "host": target.host_header,
                    "user-agent": USER_AGENT,
                    # The body limit counts bytes received, so ask for them uncompressed.
                    "accept-encoding": "identity",
                },
                extensions=extensions,
            )
            response = await client.send(request, stream=True)
            try:
                received = bytearray()
                # Raw bytes as they arrive: a compressed answer is not inflated first.
                async for chunk in response.aiter_raw():
                    received += chunk
                    if len(received) >= self._body_limit:
                        break
            finally:
                await response.aclose()
        kept = bytes(received[: self._body_limit]).decode(errors="replace")
        return response.status_code, storable(kept)


def describe_refusal(exc: UnsafeUrl) -> str:
    return storable(f"Refused: {exc}", ERROR_LIMIT)


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
