"""The gateway's own surface on the launched stack: one OpenAPI with Swagger UI whose
"Authorize" logs in for real, metrics, readiness, and API tokens for machine clients."""

from aio_pika.abc import AbstractChannel

from shared.testing import Stack
from tests.e2e.bus_helpers import drain, other_team_queue
from tests.e2e.helpers import (
    PASSWORD,
    admin_tokens,
    assert_envelope,
    bearer,
    metric,
    signed_up,
    unique_email,
)


async def test_openapi_merges_every_service_under_the_gateway_paths(stack: Stack) -> None:
    async with stack.client() as client:
        response = await client.get("/openapi.json")
    assert response.status_code == 200, response.text
    document = response.json()
    paths = document["paths"]
    for path in (
        "/api/v1/auth/login",
        "/api/v1/auth/register",
        "/api/v1/auth/tokens",
        "/api/v1/users/me",
        "/api/v1/users/{user_id}",
        "/api/v1/courses",
        "/api/v1/enrollments",
        "/api/v1/webhooks/endpoints",
        "/api/v1/webhooks/event-types",
    ):
        assert path in paths, sorted(paths)
    assert "/health" not in paths
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": schemes["bearerAuth"]["description"],
    }
    assert schemes["oauth2"]["flows"]["password"]["tokenUrl"] == "/api/v1/auth/oauth2/token"
    for path, method in (
        ("/api/v1/users/me", "get"),
        ("/api/v1/courses", "post"),
        ("/api/v1/webhooks/endpoints", "get"),
        ("/api/v1/webhooks/endpoints", "post"),
    ):
        assert {"bearerAuth": []} in paths[path][method]["security"], (path, method)
    # Public routes (log in, the course catalogue) need no token.
    assert "security" not in paths["/api/v1/auth/login"]["post"]
    assert "security" not in paths["/api/v1/courses"]["get"]
    # Every $ref points at a schema that the merged document has.
    schemas = document["components"]["schemas"]
    refs = {part.split('"')[0] for part in response.text.split('"$ref":"#/components/schemas/')[1:]}
    assert refs <= set(schemas), refs - set(schemas)


async def test_docs_and_redoc_render_the_merged_document(stack: Stack) -> None:
    async with stack.client() as client:
        docs = await client.get("/docs")
        redoc = await client.get("/redoc")
    assert docs.status_code == 200
    assert "swagger-ui" in docs.text
    assert "/openapi.json" in docs.text
    assert redoc.status_code == 200
    assert "redoc" in redoc.text.lower()


async def test_authorize_in_swagger_ui_logs_in_and_the_request_succeeds(stack: Stack) -> None:
    """What Swagger UI does: the OAuth2 password flow against tokenUrl, then the call with
    the bearer token it got."""
    async with stack.client() as client:
        account, _ = await signed_up(client)
        grant = await client.post(
            "/api/v1/auth/oauth2/token",
            data={"grant_type": "password", "username": account["email"], "password": PASSWORD},
        )
        assert grant.status_code == 200, grant.text
        assert grant.json()["token_type"] == "bearer"
        me = await client.get("/api/v1/users/me", headers=bearer(grant.json()))
        assert me.status_code == 200, me.text
        assert me.json()["email"] == account["email"]
        wrong = await client.post(
            "/api/v1/auth/oauth2/token",
            data={"grant_type": "password", "username": account["email"], "password": "nope"},
        )
        assert_envelope(wrong, 401, "AUTHENTICATION_REQUIRED")
        malformed = await client.post(
            "/api/v1/auth/oauth2/token", data={"username": "not-an-email", "password": "x"}
        )
        assert_envelope(malformed, 400, "VALIDATION_ERROR")


async def test_metrics_count_requests_by_route_status_and_upstream(stack: Stack) -> None:
    async with stack.client() as client:
        _, tokens = await signed_up(client)
        await client.get("/api/v1/users/me", headers=bearer(tokens))
        text = (await client.get("/metrics")).text
    assert (
        metric(
            text,
            "gateway_requests_total",
            route="/api/v1/users",
            method="GET",
            status="200",
            upstream="users",
        )
        >= 1
    )
    assert "gateway_request_duration_seconds_bucket" in text
    assert "gateway_circuit_breaker_open" in text


async def test_ready_reports_upstreams_redis_and_broker(stack: Stack) -> None:
    async with stack.client() as client:
        ready = await client.get("/ready")
    assert ready.status_code == 200, ready.text
    checks = ready.json()["checks"]
    assert checks["auth"] == checks["users"] == "ok"
    assert checks["rate_limit_store"] == "ok"
    assert checks["broker"] == ("ok" if stack.mode == "full" else "not_used")


async def test_rate_limit_headers_on_every_limited_response(stack: Stack) -> None:
    async with stack.client() as client:
        _, tokens = await signed_up(client)
        response = await client.get("/api/v1/users/me", headers=bearer(tokens))
    for header in ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"):
        assert header in response.headers
    assert response.headers["ratelimit-policy"].startswith('"default";q=')
    assert response.headers["ratelimit"].startswith('"default";r=')


async def test_api_tokens_are_issued_used_listed_and_revoked(stack: Stack) -> None:
    async with stack.client() as client:
        account, tokens = await signed_up(client)
        created = await client.post(
            "/api/v1/auth/tokens", json={"name": "ci deploys"}, headers=bearer(tokens)
        )
        assert created.status_code == 201, created.text
        token = created.json()
        assert created.headers["location"] == f"/api/v1/auth/tokens/{token['id']}"
        assert token["name"] == "ci deploys"
        assert token["roles"] == ["student"]
        assert token["token"].count(".") == 2

        me = await client.get("/api/v1/users/me", headers=bearer(token["token"]))
        assert me.status_code == 200, me.text
        assert me.json()["email"] == account["email"]

        listed = await client.get("/api/v1/auth/tokens", headers=bearer(tokens))
        assert listed.status_code == 200
        assert [item["id"] for item in listed.json()["data"]] == [token["id"]]
        assert "token" not in listed.json()["data"][0]

        # An API token cannot mint more API tokens.
        assert_envelope(
            await client.post(
                "/api/v1/auth/tokens", json={"name": "x"}, headers=bearer(token["token"])
            ),
            403,
            "PERMISSION_DENIED",
        )
        # Somebody else neither sees nor revokes it.
        _, stranger = await signed_up(client)
        assert_envelope(
            await client.delete(f"/api/v1/auth/tokens/{token['id']}", headers=bearer(stranger)),
            404,
            "RESOURCE_NOT_FOUND",
        )
        # An admin sees every account's tokens.
        admin = await admin_tokens(client)
        seen = await client.get(
            "/api/v1/auth/tokens", params={"account_id": account["id"]}, headers=bearer(admin)
        )
        assert [item["id"] for item in seen.json()["data"]] == [token["id"]]

        revoked = await client.delete(f"/api/v1/auth/tokens/{token['id']}", headers=bearer(tokens))
        assert revoked.status_code == 204
        assert_envelope(
            await client.get("/api/v1/users/me", headers=bearer(token["token"])),
            401,
            "INVALID_TOKEN",
        )
        after = await client.get(f"/api/v1/auth/tokens/{token['id']}", headers=bearer(tokens))
        assert after.json()["revoked_at"] is not None


async def test_api_token_input_is_validated(stack: Stack) -> None:
    async with stack.client() as client:
        _, tokens = await signed_up(client)
        for body in (
            {"name": ""},
            {"name": "x", "expires_in_days": 0},
            {"name": "x", "expires_in_days": 366},
        ):
            assert_envelope(
                await client.post("/api/v1/auth/tokens", json=body, headers=bearer(tokens)),
                400,
                "VALIDATION_ERROR",
            )
        assert_envelope(
            await client.post("/api/v1/auth/tokens", json={"name": "x"}),
            401,
            "AUTHENTICATION_REQUIRED",
        )


async def test_the_clients_trace_reaches_the_event_on_rabbitmq(
    full_stack: Stack, amqp_channel: AbstractChannel
) -> None:
    """client traceparent → gateway span → auth → outbox → RabbitMQ message header."""
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    queue = await other_team_queue(amqp_channel, full_stack, "user.created")
    email = unique_email("traced")
    async with full_stack.client() as client:
        response = await client.post(
            "/api/v1/auth/register",
            json={"email": email, "password": PASSWORD, "name": "Traced"},
            headers={"traceparent": f"00-{trace_id}-b7ad6b7169203331-01"},
        )
        assert response.status_code == 201, response.text
    [message] = await drain(queue, 1, email)
    assert str(message.headers["traceparent"]).split("-")[1] == trace_id


async def test_a_wrong_method_on_a_proxied_route_is_405_in_the_envelope(stack: Stack) -> None:
    async with stack.client() as client:
        _, tokens = await signed_up(client)
        response = await client.post("/api/v1/users/me", json={}, headers=bearer(tokens))
        assert_envelope(response, 405, "METHOD_NOT_ALLOWED")
        assert "GET" in response.headers["allow"]
