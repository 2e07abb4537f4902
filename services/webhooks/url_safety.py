"""Refuses webhook targets inside private, loopback, link-local or other internal networks,
unless configuration allows them; checked when an endpoint is saved and at every attempt."""

import asyncio
import ipaddress
import socket
from urllib.parse import SplitResult, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class UnsafeUrl(ValueError):
    """The URL may not be called; the message says why, for the client or the attempt log."""


def parse_networks(cidrs: str) -> list[IPNetwork]:
    return [
        ipaddress.ip_network(cidr.strip(), strict=False)
        for cidr in cidrs.split(",")
        if cidr.strip()
    ]


def is_internal(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return is_internal(address.ipv4_mapped)
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


def check_address(address: IPAddress, allowed: list[IPNetwork]) -> None:
    if any(address in network for network in allowed):
        return
    if is_internal(address):
        raise UnsafeUrl(f"{address} is an internal address")


def split_url(url: str) -> SplitResult:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrl("Only http and https URLs are allowed")
    if not parts.hostname:
        raise UnsafeUrl("The URL has no host")
    if parts.username or parts.password:
        raise UnsafeUrl("Credentials in the URL are not allowed")
    try:
        parts.port  # noqa: B018  (raises on a malformed port)
    except ValueError as exc:
        raise UnsafeUrl("The URL has an invalid port") from exc
    return parts


async def resolve_checked(url: str, allowed: list[IPNetwork]) -> tuple[SplitResult, IPAddress]:
    """The address to connect to: every address the host resolves to must be allowed, so
    that no answer of a name under someone else's control reaches inside."""
    parts = split_url(url)
    host = parts.hostname
    assert host is not None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise UnsafeUrl(f"The host {host} does not resolve") from exc
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
        if not addresses:
            raise UnsafeUrl(f"The host {host} does not resolve")
    for address in addresses:
        check_address(address, allowed)
    return parts, addresses[0]
