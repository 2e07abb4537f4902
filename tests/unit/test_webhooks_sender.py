"""One webhook attempt against a raw HTTP server on 127.0.0.2: redirects are not followed,
the body limit counts bytes received, timeouts and surprises end as logged failures, and
connections are never shared between host names."""

import asyncio
import contextlib
import gzip
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from services.webhooks.sender import Sender
from services.webhooks.url_safety import Lookup, Resolver, parse_networks

HOST = "127.0.0.2"
ALLOWED = parse_networks(f"{HOST}/32")
BIG = b"x" * 100_000
INFLATES = gzip.compress(b"0" * 1_000_000)  # about a kilobyte that inflates to a megabyte


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    connection: int


@dataclass
class RawServer:
    """HTTP/1.1 with keep-alive, answering by path; records each request and the
    connection it came on."""

    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    hang: asyncio.Event = field(default_factory=asyncio.Event)

    def answer(self, path: str) -> tuple[str, dict[str, str], bytes]:
        if path == "/redirect":
            return "302 Found", {"location": "/elsewhere"}, b""
        if path == "/big":
            return "200 OK", {}, BIG
        if path == "/gzip":
            return "200 OK", {"content-encoding": "gzip"}, INFLATES
        if path == "/nul":
            return "500 Internal Server Error", {}, b"bad\x00news\xff"
        return "204 No Content", {}, b""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        connection = self.connections
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                headers = {
                    name.strip().lower(): value.strip()
                    for name, value in (line.split(":", 1) for line in lines[1:] if line)
                }
                await reader.readexactly(int(headers.get("content-length", "0")))
                self.seen.append(Seen(path, headers, connection))
                if path == "/hang":
                    await self.hang.wait()
                    return
                status, extra, body = self.answer(path)
                response = [f"HTTP/1.1 {status}", f"content-length: {len(body)}"]
                response += [f"{name}: {value}" for name, value in extra.items()]
                writer.write(("\r\n".join(response) + "\r\n\r\n").encode() + body)
                await writer.drain()
        writer.close()


@contextlib.asynccontextmanager
async def raw_server() -> AsyncIterator[RawServer]:
    state = RawServer()
    server = await asyncio.start_server(state.handle, HOST, 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        state.hang.set()
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 5)


def to_the_server(*names: str) -> Lookup:
    """A getaddrinfo under which `names` resolve to the test server's address."""

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        if host not in names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (HOST, port))]

    return getaddrinfo


@contextlib.asynccontextmanager
async def sender(
    attempt_seconds: float = 5, body_limit: int = 1000, names: tuple[str, ...] = ()
) -> AsyncIterator[Sender]:
    resolver = Resolver(threads=2, per_host=2, timeout_seconds=5, lookup=to_the_server(*names))
    sending = Sender(ALLOWED, attempt_seconds, body_limit, resolver)
    try:
        yield sending
    finally:
        await sending.close()
        resolver.close()


HEADERS = {"webhook-id": "msg-1", "content-type": "application/json"}


async def test_a_redirect_is_a_failed_attempt_and_is_not_followed() -> None:
    async with raw_server() as server, sender() as sending:
        result = await sending.send(f"http://{HOST}:{server.port}/redirect", HEADERS, "{}")
    assert not result.succeeded
    assert (result.status, result.error) == (302, "HTTP 302")
    assert [s.path for s in server.seen] == ["/redirect"]


async def test_only_the_first_bytes_of_the_answer_are_kept() -> None:
    async with raw_server() as server, sender(body_limit=1000) as sending:
        result = await sending.send(f"http://{HOST}:{server.port}/big", HEADERS, "{}")
    assert result.succeeded
    assert result.body == "x" * 1000


async def test_the_limit_counts_bytes_received_not_inflated() -> None:
    async with raw_server() as server, sender(body_limit=100) as sending:
        result = await sending.send(f"http://{HOST}:{server.port}/gzip", HEADERS, "{}")
    assert result.succeeded
    assert result.body is not None
    assert len(result.body) <= 100
    assert "0" * 100 not in result.body  # the compressed bytes, never inflated
    assert server.seen[0].headers["accept-encoding"] == "identity"


async def test_an_answer_with_nul_bytes_is_stored_without_them() -> None:
    async with raw_server() as server, sender() as sending:
        result = await sending.send(f"http://{HOST}:{server.port}/nul", HEADERS, "{}")
    assert (result.status, result.error) == (500, "HTTP 500")
    assert result.body == "bad\ufffdnews\ufffd"


async def test_an_attempt_that_gets_no_answer_times_out() -> None:
    async with raw_server() as server, sender(attempt_seconds=0.5) as sending:
        result = await sending.send(f"http://{HOST}:{server.port}/hang", HEADERS, "{}")
    assert not result.succeeded
    assert (result.status, result.body, result.error) == (None, None, "Timed out")


async def test_an_unexpected_exception_is_a_failed_attempt_not_a_crash() -> None:
    async with raw_server() as server, sender() as sending:
        # Header values that are not ASCII make httpx raise UnicodeEncodeError.
        result = await sending.send(
            f"http://{HOST}:{server.port}/hook", {**HEADERS, "x-odd": "€"}, "{}"
        )
    assert not result.succeeded
    assert result.status is None
    assert result.error is not None
    assert result.error.startswith("UnicodeEncodeError")
    assert "Traceback" not in result.error
    assert server.seen == []


async def test_an_international_host_name_is_sent_in_idna_form() -> None:
    async with raw_server() as server, sender(names=("xn--bcher-kva.test",)) as sending:
        result = await sending.send(f"http://bücher.test:{server.port}/hook", HEADERS, "{}")
    assert result.succeeded, result.error
    assert server.seen[0].headers["host"] == f"xn--bcher-kva.test:{server.port}"


async def test_connections_are_reused_for_one_host_name_only() -> None:
    async with raw_server() as server, sender(names=("a.test", "b.test")) as sending:
        for name in ("a.test", "a.test", "b.test", "a.test", "b.test"):
            result = await sending.send(f"http://{name}:{server.port}/hook", HEADERS, "{}")
            assert result.succeeded, result.error
    by_host: dict[str, set[int]] = {}
    for seen in server.seen:
        by_host.setdefault(seen.headers["host"].split(":")[0], set()).add(seen.connection)
    assert by_host["a.test"].isdisjoint(by_host["b.test"])
    # ... while each name keeps its own connection alive between attempts.
    assert (len(by_host["a.test"]), len(by_host["b.test"])) == (1, 1)
    assert len(server.seen) == 5
