"""Webhook URL safety, filters and signatures, without a stack."""

import ipaddress
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook

from services.webhooks.filters import is_valid_filter, matches_any
from services.webhooks.sender import Sender
from services.webhooks.signing import new_secret, signed_headers
from services.webhooks.url_safety import UnsafeUrl, is_internal, parse_networks, resolve_checked


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
        "::ffff:10.0.0.1",
    ],
)
def test_internal_addresses(address: str) -> None:
    assert is_internal(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses(address: str) -> None:
    assert not is_internal(ipaddress.ip_address(address))


async def test_names_are_checked_by_what_they_resolve_to() -> None:
    with pytest.raises(UnsafeUrl, match="internal"):
        await resolve_checked("http://localhost:8080/hook", [])
    parts, address = await resolve_checked(
        "http://localhost:8080/hook", parse_networks("127.0.0.0/8, ::1/128")
    )
    assert parts.hostname == "localhost"
    assert address.is_loopback


@pytest.mark.parametrize(
    "url", ["ftp://example.com/", "http:///x", "http://a:b@example.com/", "http://h:99999/"]
)
async def test_malformed_urls(url: str) -> None:
    with pytest.raises(UnsafeUrl):
        await resolve_checked(url, [])


async def test_the_sender_refuses_at_delivery_time_without_connecting() -> None:
    sender = Sender(allowed_networks=[], timeout_seconds=2, body_limit=100)
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
