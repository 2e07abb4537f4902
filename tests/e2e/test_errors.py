"""Every error, from the gateway or a service, in one envelope with a request id."""

from collections.abc import AsyncIterator

import httpx

from shared.testing import Stack
from tests.e2e.helpers import PASSWORD, assert_envelope, bearer, login, register


async def test_malformed_json(stack: Stack) -> None:
    async with stack.client() as client:
        response = await client.post(
            "/api/v1/auth/login",
            content=b'{"email": ',
            headers={"content-type": "application/json"},
        )
        body = assert_envelope(response, 400, "VALIDATION_ERROR")
        assert body["error"]["details"]["issue"] == "Malformed JSON"


async def test_missing_field_and_bad_email(stack: Stack) -> None:
    async with stack.client() as client:
        missing = await client.post("/api/v1/auth/register", json={"email": "a@example.com"})
        assert assert_envelope(missing, 400, "VALIDATION_ERROR")["error"]["details"]["field"] in (
            "password",
            "name",
        )
        bad_email = await client.post(
            "/api/v1/auth/register", json={"email": "nope", "password": PASSWORD, "name": "N"}
        )
        body = assert_envelope(bad_email, 400, "VALIDATION_ERROR")
        assert body["error"]["details"]["field"] == "email"


async def test_wrong_password_and_unknown_email_look_the_same(stack: Stack) -> None:
    async with stack.client() as client:
        account = await register(client)
        wrong = await client.post(
            "/api/v1/auth/login", json={"email": account["email"], "password": "not-it-at-all"}
        )
        unknown = await client.post(
            "/api/v1/auth/login", json={"email": "ghost@example.com", "password": "not-it-at-all"}
        )
        for response in (wrong, unknown):
            body = assert_envelope(response, 401, "AUTHENTICATION_REQUIRED")
            assert body["error"]["message"] == "Invalid email or password"


async def test_unknown_route_and_no_token(stack: Stack) -> None:
    async with stack.client() as client:
        assert_envelope(await client.get("/api/v1/nowhere"), 404, "RESOURCE_NOT_FOUND")
        assert_envelope(await client.get("/no/such/thing"), 404, "RESOURCE_NOT_FOUND")
        assert_envelope(await client.get("/api/v1/users/me"), 401, "AUTHENTICATION_REQUIRED")
        assert_envelope(
            await client.get("/api/v1/users/me", headers={"Authorization": "Basic abc"}),
            401,
            "AUTHENTICATION_REQUIRED",
        )


async def test_wrong_method_and_path_tricks(stack: Stack) -> None:
    async with stack.client() as client:
        account = await register(client)
        tokens = await login(client, account["email"])
        assert_envelope(
            await client.get("/api/v1/auth/login", headers=bearer(tokens)),
            405,
            "METHOD_NOT_ALLOWED",
        )
        assert_envelope(
            await client.put("/api/v1/auth/me", headers=bearer(tokens)), 405, "METHOD_NOT_ALLOWED"
        )
        dotted = await client.get("/api/v1/auth/%2e%2e/users/me")
        assert dotted.status_code in (400, 404)
        assert dotted.json()["status"] == "error"


async def test_request_id_is_kept_when_well_formed_and_replaced_otherwise(stack: Stack) -> None:
    async with stack.client() as client:
        kept = await client.get("/api/v1/nowhere", headers={"X-Request-ID": "trace-me-12345"})
        assert kept.headers["x-request-id"] == "trace-me-12345"
        assert kept.json()["request_id"] == "trace-me-12345"
        replaced = await client.get(
            "/api/v1/nowhere", headers={"X-Request-ID": "bad id with spaces and &"}
        )
        assert replaced.headers["x-request-id"] != "bad id with spaces and &"
        ok = await client.get("/health")
        assert ok.status_code == 200
        assert ok.headers["x-request-id"]


async def test_readiness_reports_every_upstream(stack: Stack) -> None:
    async with stack.client() as client:
        ready = await client.get("/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["auth"] == "ok"
        assert ready.json()["checks"]["users"] == "ok"


async def test_a_body_that_is_not_json_is_415(stack: Stack) -> None:
    credentials = b'{"email": "ghost@example.com", "password": "not-it-at-all"}'
    async with stack.client() as client:
        for content_type in ("text/plain", "application/x-www-form-urlencoded"):
            response = await client.post(
                "/api/v1/auth/login", content=credentials, headers={"content-type": content_type}
            )
            body = assert_envelope(response, 415, "UNSUPPORTED_MEDIA_TYPE")
            assert body["error"]["details"]["field"] == "content-type"
        account = await register(client)
        tokens = await login(client, account["email"])
        profile = await client.patch(
            "/api/v1/users/me",
            content=b'{"bio": "Counts things"}',
            headers={**bearer(tokens), "content-type": "text/plain; charset=utf-8"},
        )
        assert_envelope(profile, 415, "UNSUPPORTED_MEDIA_TYPE")
        json_with_charset = await client.post(
            "/api/v1/auth/login",
            content=credentials,
            headers={"content-type": "application/json; charset=utf-8"},
        )
        assert_envelope(json_with_charset, 401, "AUTHENTICATION_REQUIRED")


async def test_a_service_refuses_a_huge_body_sent_straight_to_it(stack: Stack) -> None:
    """Not through the gateway: the service's own MAX_BODY_BYTES (1 MiB) applies."""
    auth = stack.service_url(1)
    megabyte = 1024 * 1024

    async def streamed() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b" " * megabyte

    async with httpx.AsyncClient(base_url=auth, timeout=30.0) as client:
        declared = await client.post(
            "/api/v1/auth/login",
            content=b" " * (8 * megabyte),
            headers={"content-type": "application/json"},
        )
        body = assert_envelope(declared, 413, "PAYLOAD_TOO_LARGE")
        assert body["error"]["message"] == f"Body exceeds {megabyte} bytes"
        chunked = await client.post(
            "/api/v1/auth/login", content=streamed(), headers={"content-type": "application/json"}
        )
        assert "content-length" not in chunked.request.headers
        assert_envelope(chunked, 413, "PAYLOAD_TOO_LARGE")
        small = await client.post(
            "/api/v1/auth/login",
            json={"email": "ghost@example.com", "password": "not-it-at-all"},
        )
        assert_envelope(small, 401, "AUTHENTICATION_REQUIRED")
