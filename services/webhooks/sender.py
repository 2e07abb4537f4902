"""One HTTP attempt: to the address that passed the safety check, no redirects followed,
a timeout for the whole attempt, and only the start of the response body kept."""

import asyncio
import ipaddress
import time
from dataclasses import dataclass

import httpx

from services.webhooks.url_safety import IPNetwork, UnsafeUrl, resolve_checked


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
    def __init__(
        self, allowed_networks: list[IPNetwork], timeout_seconds: float, body_limit: int
    ) -> None:
        self._allowed = allowed_networks
        self._timeout = timeout_seconds
        self._body_limit = body_limit
        self._client = httpx.AsyncClient(
            follow_redirects=False,
            timeout=timeout_seconds,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=200),
            trust_env=False,
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def send(self, url: str, headers: dict[str, str], body: str) -> AttemptResult:
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._timeout):
                status, text = await self._post(url, headers, body)
        except UnsafeUrl as exc:
            return AttemptResult(None, None, _elapsed_ms(started), f"Refused: {exc}")
        except TimeoutError:
            return AttemptResult(None, None, _elapsed_ms(started), "Timed out")
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return AttemptResult(None, None, _elapsed_ms(started), error[:500])
        failure = None if 200 <= status < 300 else f"HTTP {status}"
        return AttemptResult(status, text, _elapsed_ms(started), failure)

    async def _post(self, url: str, headers: dict[str, str], body: str) -> tuple[int, str]:
        parts, address = await resolve_checked(url, self._allowed)
        host = parts.hostname
        assert host is not None
        # Connect to the checked address; Host and TLS name stay those of the URL.
        ip = f"[{address}]" if isinstance(address, ipaddress.IPv6Address) else str(address)
        netloc = f"{ip}:{parts.port}" if parts.port else ip
        target = parts._replace(netloc=netloc).geturl()
        request = self._client.build_request(
            "POST",
            target,
            content=body.encode(),
            headers={**headers, "host": parts.netloc, "user-agent": "Lyceum-Webhooks/1.0"},
            extensions={"sni_hostname": host},
        )
        response = await self._client.send(request, stream=True)
        try:
            received = bytearray()
            async for chunk in response.aiter_bytes():
                received += chunk
                if len(received) >= self._body_limit:
                    break
        finally:
            await response.aclose()
        return response.status_code, bytes(received[: self._body_limit]).decode(errors="replace")


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
