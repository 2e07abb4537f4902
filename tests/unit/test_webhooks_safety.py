"""Webhook URL safety, name resolution, filters, signatures and settings, without a stack."""

import asyncio
import contextlib
import ipaddress
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from standardwebhooks.webhooks import Webhook

from services.webhooks.dispatcher import signing_secrets
from services.webhooks.filters import is_valid_filter, matches_any
from services.webhooks.models import Endpoint
from services.webhooks.sender import Sender
from services.webhooks.settings import DEFAULT_RETRY_SCHEDULE, WebhooksSettings, retry_delays
from services.webhooks.signing import new_secret, signed_headers
from services.webhooks.url_safety import (
    Resolver,
    Unresolvable,
    UnsafeUrl,
    is_internal,
    parse_networks,
    parse_url,
    resolve_checked,
)

AddrInfo = list[tuple[Any, ...]]


@pytest.fixture
def resolver() -> Iterator[Resolver]:
    resolver = Resolver(threads=4, per_host=2, timeout_seconds=5)
    yield resolver
    resolver.close()


class FakeDns:
    """A getaddrinfo that answers from a table and remembers the names asked."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def __call__(self, host: str, port: int, *args: Any, **kwargs: Any) -> AddrInfo:
        self.asked.append(host)
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in self.answers[host]
        ]


@contextlib.contextmanager
def resolving(answers: dict[str, list[str]]) -> Iterator[tuple[Resolver, FakeDns]]:
    dns = FakeDns(answers)
    resolver = Resolver(threads=2, per_host=2, timeout_seconds=5, lookup=dns)
    try:
        yield resolver, dns
    finally:
        resolver.close()


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        # IPv4-mapped, IPv4-compatible and IPv4-translated forms of internal addresses
        "::ffff:10.0.0.1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "::127.0.0.1",
        "::ffff:0:127.0.0.1",
        # 6to4 (2002::/16) of loopback, private and link-local (metadata) addresses
        "2002:7f00:1::1",
        "2002:a00:1::1",
        "2002:c0a8:101::",
        "2002:a9fe:a9fe::1",
        # Teredo (2001::/32), here with the client 10.0.0.1 (obfuscated) and any at all
        "2001:0:4136:e378:8000:63bf:f5ff:fffe",
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        # NAT64: the well-known prefix in front of internal addresses, and the local prefix
        "64:ff9b::127.0.0.1",
        "64:ff9b::10.0.0.1",
        "64:ff9b::169.254.169.254",
        "64:ff9b:1::8.8.8.8",
    ],
)
def test_internal_addresses(address: str) -> None:
    assert is_internal(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address",
    [
        "93.184.216.34",
        "1.1.1.1",
        "2606:4700:4700::1111",
        "::ffff:8.8.8.8",  # IPv4-mapped public
        "2002:808:808::1",  # 6to4 of 8.8.8.8
        "64:ff9b::8.8.8.8",  # NAT64 of a public address
    ],
)
def test_public_addresses(address: str) -> None:
    assert not is_internal(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/hook", "http://localhost:8080/hook", "http://[::1]:8080/hook"]
)
async def test_loopback_is_refused_by_default_and_allowed_when_configured(
    url: str, resolver: Resolver
) -> None:
    with pytest.raises(UnsafeUrl, match="internal"):
        await resolve_checked(url, [], resolver)
    with pytest.raises(UnsafeUrl, match="internal"):
        await resolve_checked(url, parse_networks("127.0.0.2/32"), resolver)
    target = await resolve_checked(url, parse_networks("127.0.0.0/8, ::1/128"), resolver)
    assert target.address.is_loopback
    assert target.port == 8080
    assert target.host_header == url.split("/")[2]
    assert target.connect_url.endswith(":8080/hook")


async def test_ipv4_mapped_loopback_follows_the_allowed_ipv4_network(resolver: Resolver) -> None:
    url = "http://[::ffff:127.0.0.2]:9/hook"
    await resolve_checked(url, parse_networks("127.0.0.2/32"), resolver)
    with pytest.raises(UnsafeUrl):
        await resolve_checked(url, [], resolver)
    # An allowed IPv4 network does not let NAT64 or 6to4 forms through: other routes.
    for other in ("http://[64:ff9b::127.0.0.2]/", "http://[2002:7f00:2::]/"):
        with pytest.raises(UnsafeUrl):
            await resolve_checked(other, parse_networks("127.0.0.2/32"), resolver)


@pytest.mark.parametrize(
    "answers",
    [
        ["93.184.216.34", "127.0.0.1"],
        ["127.0.0.1", "93.184.216.34"],
        ["2606:4700:4700::1111", "2002:a9fe:a9fe::1"],
        ["93.184.216.34", "::ffff:10.0.0.1"],
    ],
)
async def test_one_internal_answer_refuses_the_name(answers: list[str]) -> None:
    with (
        resolving({"mixed.example": answers}) as (resolver, _),
        pytest.raises(UnsafeUrl, match="internal"),
    ):
        await resolve_checked("https://mixed.example/hook", [], resolver)


async def test_the_connection_goes_to_a_checked_address() -> None:
    with resolving({"public.example": ["93.184.216.34", "2606:4700:4700::1111"]}) as (
        resolver,
        _,
    ):
        target = await resolve_checked("https://public.example/hook?x=1", [], resolver)
    assert str(target.address) == "93.184.216.34"
    assert target.connect_url == "https://93.184.216.34:443/hook?x=1"
    assert target.host_header == "public.example"


async def test_international_names_are_looked_up_in_idna_form() -> None:
    with resolving({"xn--bcher-kva.example": ["93.184.216.34"]}) as (resolver, dns):
        target = await resolve_checked("https://Bücher.example:8443/hook", [], resolver)
    assert dns.asked == ["xn--bcher-kva.example"]
    assert target.host == "xn--bcher-kva.example"
    assert target.host_header == "xn--bcher-kva.example:8443"
    assert parse_url("http://bücher.de/").host == "xn--bcher-kva.de"
    for bad in ("http://☃.example/", "http://-ü.example/", "http://a\u200d.example/"):
        with pytest.raises(UnsafeUrl, match="internationalised"):
            parse_url(bad)


async def test_a_name_that_does_not_resolve() -> None:
    with resolving({}) as (resolver, _), pytest.raises(Unresolvable, match="does not resolve"):
        await resolve_checked("http://nowhere.example/", [], resolver)


async def test_hanging_lookups_hold_few_threads_and_other_names_still_resolve() -> None:
    release = threading.Event()
    blocked: list[str] = []

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> AddrInfo:
        if host == "hang.example":
            blocked.append(host)
            release.wait(30)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port))]

    resolver = Resolver(threads=3, per_host=2, timeout_seconds=0.3, lookup=getaddrinfo)
    try:
        outcomes = await asyncio.gather(
            *(resolver.resolve("hang.example", 443) for _ in range(6)), return_exceptions=True
        )
        assert all(isinstance(o, Unresolvable) for o in outcomes), outcomes
        assert "did not resolve within" in str(outcomes[0])
        # The hung lookups still hold two threads; the third serves everyone else.
        assert len(blocked) <= 2
        for _ in range(3):
            assert await resolver.resolve("fine.example", 443) == [
                ipaddress.ip_address("93.184.216.34")
            ]
        assert len(blocked) <= 2
    finally:
        release.set()
        resolver.close()


async def test_lookups_do_not_use_the_default_executor(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()

    def forbidden(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("name lookup on the default executor")

    monkeypatch.setattr(loop, "getaddrinfo", forbidden)
    monkeypatch.setattr(loop, "run_in_executor", forbidden)
    with resolving({"public.example": ["93.184.216.34"]}) as (resolver, _):
        await resolve_checked("http://public.example/", [], resolver)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/",
        "http:///x",
        "http://a:b@example.com/",
        "http://h:99999/",
        "http://h:0/",
        "http://[::1/",
    ],
)
async def test_malformed_urls(url: str, resolver: Resolver) -> None:
    with pytest.raises(UnsafeUrl):
        await resolve_checked(url, [], resolver)


async def test_the_sender_refuses_at_delivery_time_without_connecting(
    resolver: Resolver,
) -> None:
    sender = Sender(allowed_networks=[], timeout_seconds=2, body_limit=100, resolver=resolver)
    try:
        result = await sender.send("http://127.0.0.2:9/hook", {}, "{}")
    finally:
        await sender.close()
    assert not result.succeeded
    assert result.status is None
    assert result.error is not None
    assert result.error.startswith("Refused")


def test_filters() -> None:
    assert matches_any(["*"], "course.published")
    assert matches_any(["user.*"], "user.created")
    assert matches_any(["webhook.*"], "webhook.endpoint.disabled")
    assert not matches_any(["user.*"], "users.created")
    assert not matches_any(["course.*"], "user.created")
    assert matches_any(["course.published"], "course.published")
    assert not matches_any(["course.published"], "course.created")
    for good in ("*", "user.*", "course.published", "webhook.endpoint.*"):
        assert is_valid_filter(good)
    for bad in ("", "User", "user.", "*.created", "user.**", "user created"):
        assert not is_valid_filter(bad)


def test_signatures_verify_with_the_standard_library_under_both_secrets() -> None:
    old, new = new_secret(), new_secret()
    assert old.startswith("whsec_")
    body = '{"type":"user.created","timestamp":"2026-01-01T00:00:00Z","data":{}}'
    headers = signed_headers("msg-1", datetime.now(UTC), body, [new, old])
    assert headers["webhook-id"] == "msg-1"
    for secret in (old, new):
        assert Webhook(secret).verify(body, headers)["type"] == "user.created"
    with pytest.raises(Exception, match="signature"):
        Webhook(new_secret()).verify(body, headers)


def test_the_old_secret_stops_signing_when_the_overlap_ends() -> None:
    old, new = new_secret(), new_secret()
    now = datetime.now(UTC)
    endpoint = Endpoint(
        url="https://example.com/hook",
        event_types=["*"],
        secret=new,
        previous_secret=old,
        previous_secret_expires_at=now + timedelta(hours=1),
    )
    assert signing_secrets(endpoint, now) == [new, old]
    after = now + timedelta(hours=1, seconds=1)
    assert signing_secrets(endpoint, after) == [new]
    body = '{"type":"webhook.test","timestamp":"2026-01-01T00:00:00Z","data":{}}'
    headers = signed_headers("msg-2", now, body, signing_secrets(endpoint, after))
    assert len(headers["webhook-signature"].split(" ")) == 1
    Webhook(new).verify(body, headers)
    with pytest.raises(Exception, match="signature"):
        Webhook(old).verify(body, headers)


def test_retry_schedule_parsing() -> None:
    assert retry_delays("5, 300 ,1800,") == [5.0, 300.0, 1800.0]
    assert retry_delays("0.5") == [0.5]
    assert retry_delays("") == []
    settings = WebhooksSettings(webhook_retry_schedule="1,2,4")
    assert settings.retry_delays() == [1.0, 2.0, 4.0]
    for bad in ("5,soon", "-1,5", "5,nan", "inf"):
        with pytest.raises(ValidationError):
            WebhooksSettings(webhook_retry_schedule=bad)


def test_retry_schedule_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_RETRY_SCHEDULE", "0.5,1,1,2")
    assert WebhooksSettings().retry_delays() == [0.5, 1.0, 1.0, 2.0]


def test_the_default_schedule_goes_from_seconds_to_hours_over_about_a_day() -> None:
    delays = WebhooksSettings().retry_delays()
    assert delays == retry_delays(DEFAULT_RETRY_SCHEDULE)
    assert delays == sorted(delays)
    assert delays[0] < 60  # seconds
    assert any(60 <= d < 3600 for d in delays)  # minutes
    assert delays[-1] >= 3600  # hours
    assert timedelta(hours=20) <= timedelta(seconds=sum(delays)) <= timedelta(hours=36)


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValidationError):
        WebhooksSettings(webhook_endpoint_concurrency=0)
    with pytest.raises(ValidationError):
        WebhooksSettings(webhook_dns_threads=0)
    settings = WebhooksSettings()
    assert settings.webhook_endpoint_concurrency < settings.failing_concurrency()
    assert settings.webhook_failing_endpoint_concurrency <= settings.webhook_endpoint_concurrency
