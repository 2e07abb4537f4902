"""Rate limits with the documented defaults, on a gateway started for the test in front of
the stack's services: in memory in the embedded mode, shared through Redis in the full one."""

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared.testing import Stack
from tests.e2e.helpers import PASSWORD, admin_tokens, assert_envelope, bearer, signed_up
from tests.processes import GatewayProcess

REDIS_URL = "redis://127.0.0.1:6379/0"
# The limits are per minute, counted in windows that start on the minute (the sliding window
# counter weighs the previous window's count by what is left of it): a test that counts the
# remaining requests one by one starts with at least this long before the next window.
WINDOW_SECONDS = 60
TIME_A_TEST_TAKES = 15


@pytest.fixture(autouse=True)
def a_window_with_time_left() -> None:
    left = WINDOW_SECONDS - time.time() % WINDOW_SECONDS
    if left < TIME_A_TEST_TAKES:
        time.sleep(left + 0.1)


def gateway_env(stack: Stack, **extra: str) -> dict[str, str]:
    env = {
        "UPSTREAMS": json.dumps({"auth": stack.service_url(1), "users": stack.service_url(2)}),
        "ROUTES": json.dumps({"/api/v1/auth": "auth", "/api/v1/users": "users"}),
        "JWKS_URL": f"{stack.service_url(1)}/api/v1/auth/.well-known/jwks.json",
    }
    if stack.mode == "full":
        # The stack's own key prefix: its revocations, and the marker saying they are all there.
        env.update(REDIS_URL=REDIS_URL, WORKERS="2", QUEUE_PREFIX=stack.queue_prefix)
    env.update(extra)
    return env


@pytest.fixture
def gateway(stack: Stack, tmp_path: Path) -> Iterator[GatewayProcess]:
    process = GatewayProcess(tmp_path, gateway_env(stack)).start()
    yield process
    process.stop()


async def test_the_sixth_login_in_a_minute_is_refused(
    stack: Stack, gateway: GatewayProcess
) -> None:
    async with stack.client() as client:
        account, _ = await signed_up(client)
    credentials = {"email": account["email"], "password": PASSWORD}
    async with httpx.AsyncClient(base_url=gateway.url, timeout=15) as client:
        for expected_remaining in (4, 3, 2, 1, 0):
            # A client cannot buy itself a fresh budget with a made-up X-Forwarded-For.
            spoofed = {"X-Forwarded-For": f"203.0.113.{expected_remaining}"}
            response = await client.post("/api/v1/auth/login", json=credentials, headers=spoofed)
            assert response.status_code == 200, response.text
            assert response.headers["x-ratelimit-limit"] == "5"
            assert response.headers["x-ratelimit-remaining"] == str(expected_remaining)
            assert int(response.headers["x-ratelimit-reset"]) > 0
            assert response.headers["ratelimit-policy"] == '"auth";q=5;w=60'
            assert response.headers["ratelimit"].startswith(f'"auth";r={expected_remaining};t=')
        refused = await client.post("/api/v1/auth/login", json=credentials)
        body = assert_envelope(refused, 429, "RATE_LIMIT_EXCEEDED")
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert refused.headers["x-ratelimit-remaining"] == "0"
        assert body["error"]["details"]["policy"] == "auth"
        metrics = (await client.get("/metrics")).text
        assert 'gateway_rate_limit_refusals_total{policy="auth"}' in metrics


async def test_authenticated_requests_count_per_user(stack: Stack, tmp_path: Path) -> None:
    env = gateway_env(stack, RATE_LIMIT_DEFAULT="3/minute")
    gateway = GatewayProcess(tmp_path, env).start()
    try:
        async with stack.client() as client:
            _, first = await signed_up(client)
            _, second = await signed_up(client)
        async with httpx.AsyncClient(base_url=gateway.url, timeout=15) as client:
            for remaining in (2, 1, 0):
                response = await client.get("/api/v1/users/me", headers=bearer(first))
                assert response.status_code == 200, response.text
                assert response.headers["x-ratelimit-remaining"] == str(remaining)
            assert_envelope(
                await client.get("/api/v1/users/me", headers=bearer(first)),
                429,
                "RATE_LIMIT_EXCEEDED",
            )
            # Another user from the same address has a budget of their own.
            other = await client.get("/api/v1/users/me", headers=bearer(second))
            assert other.status_code == 200
            assert other.headers["x-ratelimit-remaining"] == "2"
    finally:
        gateway.stop()


async def test_admin_routes_have_the_admin_policy(stack: Stack, gateway: GatewayProcess) -> None:
    async with stack.client() as client:
        tokens = await admin_tokens(client)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=15) as client:
        listed = await client.get("/api/v1/users", headers=bearer(tokens))
        assert listed.status_code == 200, listed.text
        assert listed.headers["x-ratelimit-limit"] == "50"
        assert listed.headers["ratelimit-policy"].startswith('"admin";q=50;')
        own = await client.get("/api/v1/users/me", headers=bearer(tokens))
        assert own.headers["x-ratelimit-limit"] == "100"


async def test_x_forwarded_for_counts_only_from_a_trusted_proxy(
    stack: Stack, tmp_path: Path
) -> None:
    env = gateway_env(stack, TRUSTED_PROXIES='["127.0.0.1/32"]')
    gateway = GatewayProcess(tmp_path, env).start()
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=15) as client:

            async def attempt(client_ip: str) -> int:
                response = await client.post(
                    "/api/v1/auth/login",
                    json={"email": "nobody@example.com", "password": "wrong-password"},
                    headers={"X-Forwarded-For": f"{client_ip}, 127.0.0.1"},
                )
                return int(response.headers.get("x-ratelimit-remaining", "-1"))

            assert [await attempt("198.51.100.7") for _ in range(5)] == [4, 3, 2, 1, 0]
            assert await attempt("198.51.100.8") == 4
    finally:
        gateway.stop()


async def test_two_gateways_share_one_count_through_redis(
    full_stack: Stack, tmp_path: Path
) -> None:
    """Two gateway processes of two workers each, one Redis: one budget for a client."""
    shared_prefix = {"QUEUE_PREFIX": f"{full_stack.queue_prefix}-shared-limits"}
    first = GatewayProcess(tmp_path, gateway_env(full_stack, **shared_prefix)).start()
    second = GatewayProcess(tmp_path, gateway_env(full_stack, **shared_prefix)).start()
    try:
        async with full_stack.client() as client:
            account, _ = await signed_up(client)
        credentials = {"email": account["email"], "password": PASSWORD}
        remaining = []
        for gateway in (first, second, first, second, first):
            async with httpx.AsyncClient(base_url=gateway.url, timeout=15) as client:
                response = await client.post("/api/v1/auth/login", json=credentials)
                assert response.status_code == 200, response.text
                remaining.append(response.headers["x-ratelimit-remaining"])
        assert remaining == ["4", "3", "2", "1", "0"]
        async with httpx.AsyncClient(base_url=second.url, timeout=15) as client:
            refused = await client.post("/api/v1/auth/login", json=credentials)
            assert_envelope(refused, 429, "RATE_LIMIT_EXCEEDED")
    finally:
        first.stop()
        second.stop()


async def test_requests_without_a_valid_token_count_against_the_address(
    stack: Stack, tmp_path: Path
) -> None:
    env = gateway_env(stack, RATE_LIMIT_DEFAULT="3/minute")
    gateway = GatewayProcess(tmp_path, env).start()
    try:
        async with stack.client() as client:
            _, tokens = await signed_up(client)
        async with httpx.AsyncClient(base_url=gateway.url, timeout=15) as client:
            attempts = [{}, bearer("not-a-token"), bearer("still.not.one")]
            for remaining, headers in zip((2, 1, 0), attempts, strict=True):
                refused = await client.get("/api/v1/users/me", headers=headers)
                assert refused.status_code == 401, refused.text
                assert refused.headers["x-ratelimit-remaining"] == str(remaining)
                assert refused.headers["ratelimit-policy"] == '"default";q=3;w=60'
            over = await client.get("/api/v1/users/me", headers=bearer("guess-4"))
            body = assert_envelope(over, 429, "RATE_LIMIT_EXCEEDED")
            assert body["error"]["details"]["policy"] == "default"
            assert int(over.headers["retry-after"]) >= 1
            # A caller with a valid token has a budget of their own.
            mine = await client.get("/api/v1/users/me", headers=bearer(tokens))
            assert mine.status_code == 200, mine.text
    finally:
        gateway.stop()
