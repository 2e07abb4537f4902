"""One HTTP attempt: to the address that passed the safety check, no redirects followed,
a timeout for the whole attempt, and only the first bytes of the response body kept.

Every attempt of the process goes through one aiohttp session, whose connections are
kept alive between attempts. A request goes to the checked IP address, with the URL's
host name as the `Host` header and as the TLS server name; aiohttp keys its pool on that
server name too, so a connection opened (and its certificate verified) for one host name
is never reused for another name on the same address.

Whatever goes wrong ends as an `AttemptResult` with an error text: `send` never raises
(except when cancelled), so that every attempt reaches the attempt log."""

import asyncio
import ssl
import time
from dataclasses import dataclass

import aiohttp
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
# Idle kept-alive connections are closed after this long.
KEEPALIVE_SECONDS = 5.0
CHECKED_URLS = 10_000


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


class Sender:
    """`connections`: at most this many requests in flight (the dispatcher's own limits
    are lower); any number of them may go to one host, since endpoints that share a host
    are limited one by one by the dispatcher."""

    def __init__(
        self,
        allowed_networks: list[IPNetwork],
        timeout_seconds: float,
        body_limit: int,
        resolver: Resolver,
        *,
        connections: int = 100,
    ) -> None:
        self._allowed = allowed_networks
        self._timeout = timeout_seconds
        self._body_limit = body_limit
        self._resolver = resolver
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        # URLs whose host is an IP address: their check never changes.
        self._checked: dict[str, Target] = {}

    def _client(self) -> aiohttp.ClientSession:
        # Made on first use: an aiohttp session belongs to the event loop it was made on.
        if self._session is None:
            tls: ssl.SSLContext = httpx.create_ssl_context(trust_env=False)
            connector = aiohttp.TCPConnector(
                limit=self._connections,
                limit_per_host=0,
                ssl=tls,
                keepalive_timeout=KEEPALIVE_SECONDS,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                trust_env=False,
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

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
        except aiohttp.ClientError as exc:
            return AttemptResult(None, None, _elapsed_ms(started), describe(exc))
        except Exception as exc:
            # Anything else (a bug, a library's surprise) still ends as a logged failure.
            log.warning("webhook_attempt_unexpected_error", url=url, exc_info=True)
            return AttemptResult(None, None, _elapsed_ms(started), describe(exc))
        failure = None if 200 <= status < 300 else f"HTTP {status}"
        return AttemptResult(status, text, _elapsed_ms(started), failure)

    async def _target(self, url: str) -> Target:
        target = self._checked.get(url)
        if target is None:
            target = await resolve_checked(url, self._allowed, self._resolver)
            if target.host_is_address:
                if len(self._checked) >= CHECKED_URLS:
                    self._checked.clear()
                self._checked[url] = target
        return target

    async def _post(self, url: str, headers: dict[str, str], body: str) -> tuple[int, str]:
        target = await self._target(url)
        request_headers = {
            **headers,
            "host": target.host_header,
            "user-agent": USER_AGENT,
            # The body limit counts bytes received, so ask for them uncompressed.
            "accept-encoding": "identity",
        }
        for value in request_headers.values():
            value.encode("ascii")  # header values are ASCII: refuse before connecting
        session = self._client()
        # Connect to the checked address; Host and the TLS name stay those of the URL.
        async with session.post(
            target.connect_url,
            data=body.encode(),
            headers=request_headers,
            allow_redirects=False,
            server_hostname=None if target.host_is_address else target.host,
        ) as response:
            received = bytearray()
            # Raw bytes as they arrive: a compressed answer is not inflated first.
            while len(received) < self._body_limit:
                chunk = await response.content.read(self._body_limit - len(received))
                if not chunk:
                    break
                received += chunk
            if not response.content.at_eof():
                response.close()  # the rest is not wanted: this connection is not reused
        kept = bytes(received[: self._body_limit]).decode(errors="replace")
        return response.status, storable(kept)


def describe_refusal(exc: UnsafeUrl) -> str:
    return storable(f"Refused: {exc}", ERROR_LIMIT)


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
