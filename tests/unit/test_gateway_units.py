"""The gateway's small parts: route patterns, client address, rate-limit headers and policy
choice, the circuit breaker, and schema renaming when merging OpenAPI documents."""

import time
import uuid

from limits import parse
from limits.aio.storage import MemoryStorage

from gateway.breaker import CircuitBreaker
from gateway.openapi import _rename_conflicting_schemas
from gateway.ratelimit import ClientAddress, Decision, Policy, RateLimits
from gateway.routing import RoutePatterns, RouteTable
from gateway.settings import GatewaySettings
from shared.security import Identity


def identity(*roles: str) -> Identity:
    return Identity(user_id=uuid.uuid4(), roles=roles, jti="j", expires_at=0)


def test_route_patterns_match_method_and_wildcards() -> None:
    patterns = RoutePatterns(["POST /api/v1/auth/login", "* /api/v1/users/*-*-*-*-*"])
    assert patterns.match("POST", "/api/v1/auth/login")
    assert not patterns.match("GET", "/api/v1/auth/login")
    assert patterns.match("DELETE", f"/api/v1/users/{uuid.uuid4()}")
    assert not patterns.match("GET", "/api/v1/users/me")


def test_route_table_longest_prefix_and_websocket_routes() -> None:
    table = RouteTable(
        {"/api/v1": "a", "/api/v1/users": "b"},
        {"a": "http://a", "b": "http://b/"},
        [],
        {"/ws": "chat"},
    )
    assert table.resolve("/api/v1/users/me") == table.upstreams["b"]
    assert table.resolve("/api/v1/usersx") == table.upstreams["a"]
    assert table.resolve("/other") is None
    assert table.resolve_websocket("/ws") == ("chat", None)


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
