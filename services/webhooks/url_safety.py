"""Refuses webhook targets inside private, loopback, link-local or other internal networks,
unless configuration allows them; checked when an endpoint is saved and at every attempt.

Host names are resolved on a small thread pool of their own (`Resolver`), never on the
event loop's default executor: a name server that never answers ties up at most
`per_host` of its threads per host name, and nothing else of the process waits for it."""

import asyncio
import contextlib
import functools
import ipaddress
import socket
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import idna

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# RFC 6052: the well-known NAT64 prefix; the last 32 bits are the IPv4 address reached.
NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")


class UnsafeUrl(ValueError):
    """The URL may not be called; the message says why, for the client or the attempt log."""


class Unresolvable(UnsafeUrl):
    """The host name did not resolve (or not in time)."""


def parse_networks(cidrs: str) -> list[IPNetwork]:
    return [
        ipaddress.ip_network(cidr.strip(), strict=False)
        for cidr in cidrs.split(",")
        if cidr.strip()
    ]


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address leads to: IPv4-mapped, NAT64, 6to4 or Teredo."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in NAT64_PREFIX:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # the client, the host behind the Teredo relay
    return None


def _is_internal_itself(address: IPAddress) -> bool:
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


def is_internal(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None:
            if _is_internal_itself(inner):
                return True
            if address.ipv4_mapped is not None or address in NAT64_PREFIX:
                # The IPv4 address decides (the prefixes themselves count as reserved).
                return False
    return _is_internal_itself(address)


def check_address(address: IPAddress, allowed: list[IPNetwork]) -> None:
    candidates: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        candidates.append(address.ipv4_mapped)  # the very same destination
    if any(candidate in network for candidate in candidates for network in allowed):
        return
    if is_internal(address):
        raise UnsafeUrl(f"{address} is an internal address")


def ascii_host(host: str) -> str:
    """The host as it goes on the wire: IDNA 2008 (with UTS 46 mapping) for names that are
    not plain ASCII, as browsers and httpx do."""
    if host.isascii():
        return host.lower()
    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise UnsafeUrl(f"The host is not a valid internationalised domain name: {exc}") from exc


@dataclass(frozen=True)
class Target:
    """Where one attempt goes: the URL's host and port, and the checked address."""

    scheme: str
    host: str  # ASCII, lower case, without brackets
    port: int
    explicit_port: bool
    path: str  # path and query
    address: IPAddress
    host_is_address: bool

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" if self.explicit_port else host

    @functools.cached_property
    def connect_url(self) -> str:
        """The URL with the checked address in place of the host name."""
        ip = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return f"{self.scheme}://{ip}:{self.port}{self.path}"


@dataclass(frozen=True)
class ParsedUrl:
    scheme: str
    host: str
    port: int
    explicit_port: bool
    path: str
    literal: IPAddress | None


def parse_url(url: str) -> ParsedUrl:
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise UnsafeUrl(f"The URL is malformed: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeUrl("Only http and https URLs are allowed")
    if not parts.hostname:
        raise UnsafeUrl("The URL has no host")
    if parts.username or parts.password:
        raise UnsafeUrl("Credentials in the URL are not allowed")
    try:
        explicit = parts.port
    except ValueError as exc:
        raise UnsafeUrl("The URL has an invalid port") from exc
    if explicit == 0:
        raise UnsafeUrl("The URL has an invalid port")
    try:
        literal: IPAddress | None = ipaddress.ip_address(parts.hostname)
    except ValueError:
        literal = None
    host = str(literal) if literal is not None else ascii_host(parts.hostname)
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    port = explicit or (443 if scheme == "https" else 80)
    return ParsedUrl(scheme, host, port, explicit is not None, path, literal)


# socket.getaddrinfo, or a stand-in with its signature (tests).
Lookup = Callable[..., list[tuple[Any, ...]]]


class Resolver:
    """getaddrinfo on `threads` threads of its own, at most `per_host` lookups of one name
    at a time, each given up after `timeout_seconds`. A lookup that hangs keeps its thread
    and its slots until it really returns, so hung lookups can never pile up beyond those
    limits; callers waiting for a slot give up at their own timeout."""

    def __init__(
        self,
        threads: int = 16,
        per_host: int = 2,
        timeout_seconds: float = 5.0,
        lookup: Lookup = socket.getaddrinfo,
    ) -> None:
        self._lookup = lookup
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="webhook-dns")
        self._threads = asyncio.Semaphore(threads)
        self._per_host = per_host
        self._hosts: dict[str, asyncio.Semaphore] = {}
        self._users: Counter[str] = Counter()
        self._timeout = timeout_seconds

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        try:
            async with asyncio.timeout(self._timeout):
                infos = await self._getaddrinfo(host, port)
        except TimeoutError as exc:
            raise Unresolvable(
                f"The host {host} did not resolve within {self._timeout:g} s"
            ) from exc
        except (OSError, UnicodeError) as exc:
            raise Unresolvable(f"The host {host} does not resolve") from exc
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
        if not addresses:
            raise Unresolvable(f"The host {host} does not resolve")
        return addresses

    async def _getaddrinfo(self, host: str, port: int) -> list[Any]:
        loop = asyncio.get_running_loop()
        host_slots = self._hosts.setdefault(host, asyncio.Semaphore(self._per_host))
        self._users[host] += 1
        held: list[asyncio.Semaphore] = []

        def release() -> None:
            for slots in held:
                slots.release()
            held.clear()
            self._users[host] -= 1
            if self._users[host] <= 0:
                del self._users[host]
                self._hosts.pop(host, None)

        try:
            await host_slots.acquire()
            held.append(host_slots)
            await self._threads.acquire()
            held.append(self._threads)
            lookup: Future[list[Any]] = self._executor.submit(
                self._lookup, host, port, type=socket.SOCK_STREAM
            )
        except BaseException:
            release()
            raise

        def done(_: object) -> None:
            # The slots go back when the thread is done, not when the caller stops waiting.
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to free
                loop.call_soon_threadsafe(release)

        lookup.add_done_callback(done)
        return await asyncio.wrap_future(lookup)


async def resolve_checked(url: str, allowed: list[IPNetwork], resolver: Resolver) -> Target:
    """Where to connect: every address the host resolves to must be allowed (one internal
    answer refuses the URL), and the connection goes to the first of those checked."""
    parsed = parse_url(url)
    if parsed.literal is not None:
        addresses: list[IPAddress] = [parsed.literal]
    else:
        addresses = await resolver.resolve(parsed.host, parsed.port)
    for address in addresses:
        check_address(address, allowed)
    return Target(
        scheme=parsed.scheme,
        host=parsed.host,
        port=parsed.port,
        explicit_port=parsed.explicit_port,
        path=parsed.path,
        address=addresses[0],
        host_is_address=parsed.literal is not None,
    )
