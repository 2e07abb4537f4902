"""Webhooks as an outside receiver and an admin see them: signed Standard Webhooks
deliveries, filters, retries with the attempt log, replay, auto-disable, URL safety."""

import asyncio
import socket
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from shared.testing import Stack, eventually
from tests.e2e.helpers import admin_tokens, assert_envelope, bearer, register, signed_up
from tests.e2e.webhook_receivers import (
    ENDPOINTS,
    RECEIVER_HOST,
    Received,
    about_names,
    create_endpoint,
    delete_endpoint,
    deliveries,
    names_delivered,
    receiving,
    rename_burst,
)


async def test_receiver_verifies_user_created_and_course_filter_gets_nothing(
    stack: Stack,
) -> None:
    async with stack.client() as client, receiving() as users, receiving() as courses:
        admin = await admin_tokens(client)
        user_endpoint = await create_endpoint(client, admin, users, ["user.*"])
        course_endpoint = await create_endpoint(client, admin, courses, ["course.*"])
        try:
            account = await register(client)

            async def delivered() -> list[Received]:
                return users.about("email", account["email"], "user.created")

            [received] = await eventually(delivered)
            assert received.payload is not None
            assert set(received.payload) == {"type", "timestamp", "data"}
            assert received.payload["timestamp"].endswith("Z")
            assert received.payload["data"]["id"] == account["id"]
            assert received.headers["webhook-signature"].startswith("v1,")
            assert received.headers["content-type"] == "application/json"
            timestamp = int(received.headers["webhook-timestamp"])
            assert abs(timestamp - datetime.now(UTC).timestamp()) < 300

            # The receiver answers before the attempt is recorded.
            async def recorded() -> list[dict[str, Any]]:
                return [
                    d
                    for d in await deliveries(client, admin, user_endpoint)
                    if d["message_id"] == received.webhook_id and d["status"] != "pending"
                ]

            [log] = await eventually(recorded)
            assert log["status"] == "succeeded"
            assert log["event_type"] == "user.created"
            assert [a["response_status"] for a in log["attempts"]] == [204]
            course_log = await deliveries(client, admin, course_endpoint)
            assert received.webhook_id not in {d["message_id"] for d in course_log}
            assert courses.about("email", account["email"]) == []
        finally:
            await delete_endpoint(client, admin, user_endpoint)
            await delete_endpoint(client, admin, course_endpoint)


async def test_failing_twice_then_delivered_with_the_same_webhook_id(stack: Stack) -> None:
    async def fail_twice(_received: Received, earlier: list[Received]) -> int:
        return 503 if len(earlier) < 2 else 200

    async with stack.client() as client, receiving(fail_twice) as receiver:
        admin = await admin_tokens(client)
        endpoint = await create_endpoint(client, admin, receiver, ["user.created"])
        try:
            account = await register(client)

            async def third_attempt_succeeded() -> bool:
                about = receiver.about("email", account["email"])
                return len(about) == 3 and about[-1].answered == 200

            await eventually(third_attempt_succeeded)
            about = receiver.about("email", account["email"])
            assert len({r.webhook_id for r in about}) == 1
            assert [r.answered for r in about] == [503, 503, 200]

            async def logged() -> list[dict[str, Any]]:
                return [
                    d
                    for d in await deliveries(client, admin, endpoint)
                    if d["message_id"] == about[0].webhook_id and d["status"] == "succeeded"
                ]

            [log] = await eventually(logged, interval=0.5)
            assert log["attempt_count"] == 3
            attempts = log["attempts"]
            assert [a["response_status"] for a in attempts] == [503, 503, 200]
            assert [a["error"] for a in attempts] == ["HTTP 503", "HTTP 503", None]
            assert all(a["duration_ms"] >= 0 for a in attempts)
            assert attempts[0]["attempted_at"] < attempts[1]["attempted_at"]
        finally:
            await delete_endpoint(client, admin, endpoint)


async def test_a_redirect_is_a_failed_attempt_and_is_not_followed(stack: Stack) -> None:
    async def redirect_once(_received: Received, earlier: list[Received]) -> int:
        return 302 if not earlier else 200

    async with stack.client() as client, receiving(redirect_once) as receiver:
        admin = await admin_tokens(client)
        endpoint = await create_endpoint(client, admin, receiver, ["webhook.test"])
        try:
            ping = await client.post(f"{ENDPOINTS}/{endpoint['id']}/test", headers=bearer(admin))
            assert ping.status_code == 202
            delivery_url = f"/api/v1/webhooks/deliveries/{ping.json()['id']}"

            async def settled() -> dict[str, Any] | None:
                response = await client.get(delivery_url, headers=bearer(admin))
                body: dict[str, Any] = response.json()
                return body if body["status"] == "succeeded" else None

            log = await eventually(settled, interval=0.3)
            assert [a["response_status"] for a in log["attempts"]] == [302, 200]
            assert log["attempts"][0]["error"] == "HTTP 302"
            # Both requests went to the endpoint's URL; the Location was never followed.
            assert [r.answered for r in receiver.received] == [302, 200]
        finally:
            await delete_endpoint(client, admin, endpoint)


async def test_an_endpoint_that_never_answers_does_not_hold_up_a_healthy_one(
    stack: Stack,
) -> None:
    """Three endpoints that never answer (each attempt times out) next to a healthy one
    that subscribes to the same events: the healthy one gets every event."""
    hang = asyncio.Event()

    async def never(_received: Received, _earlier: list[Received]) -> int:
        await hang.wait()
        return 204

    tag = uuid.uuid4().hex[:6]
    names = [f"fair-{tag}-{i}" for i in range(30)]
    async with stack.client() as client, receiving() as healthy, receiving(never) as hanging:
        admin = await admin_tokens(client)
        _, tokens = await signed_up(client)
        created: list[dict[str, Any]] = []
        try:
            for _ in range(3):
                created.append(await create_endpoint(client, admin, hanging, ["user.updated"]))
            stuck = list(created)
            created.append(await create_endpoint(client, admin, healthy, ["user.updated"]))
            await rename_burst(client, tokens, names)

            async def all_delivered() -> bool:
                return names_delivered(healthy, names) == set(names)

            await eventually(all_delivered, within_seconds=60, interval=0.3)
            assert len({r.webhook_id for r in about_names(healthy, names)}) == len(names)

            async def timed_out() -> bool:
                logs = [await deliveries(client, admin, endpoint) for endpoint in stuck]
                errors = {a["error"] for log in logs for d in log for a in d["attempts"]}
                return "Timed out" in errors

            await eventually(timed_out, within_seconds=30, interval=0.5)
            assert hanging.received
            assert all(r.answered is None for r in hanging.received)
        finally:
            hang.set()
            for endpoint in created:
                await delete_endpoint(client, admin, endpoint)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost:8080/hook",
        "http://[::1]:8080/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[2002:7f00:1::1]/hook",
        "http://[64:ff9b::a9fe:a9fe]/latest/meta-data",
        "http://0.0.0.0/hook",
        "http://2130706433/hook",
        "http://☃.example/hook",
        "ftp://example.com/hook",
        "http:///hook",
        "http://user:pass@127.0.0.2/hook",
    ],
)
async def test_internal_and_odd_urls_are_refused(stack: Stack, url: str) -> None:
    async with stack.client() as client:
        admin = await admin_tokens(client)
        response = await client.post(ENDPOINTS, headers=bearer(admin), json={"url": url})
        body = assert_envelope(response, 400, "VALIDATION_ERROR")
        assert body["error"]["details"]["field"] == "url"


async def test_loopback_targets_are_refused_unless_their_network_is_allowed(stack: Stack) -> None:
    """The stacks allow 127.0.0.2/32 only: the usual loopback forms stay refused."""
    async with stack.client() as client:
        admin = await admin_tokens(client)
        for url in (
            "http://127.0.0.1:8080/hook",
            "http://localhost:8080/hook",
            "http://[::1]:8080/hook",
        ):
            response = await client.post(ENDPOINTS, headers=bearer(admin), json={"url": url})
            body = assert_envelope(response, 400, "VALIDATION_ERROR")
            assert body["error"]["details"]["field"] == "url"
            assert "is an internal address" in body["error"]["details"]["issue"], url


async def test_allowed_network_is_accepted_and_patching_to_internal_is_refused(
    stack: Stack,
) -> None:
    async with stack.client() as client:
        admin = await admin_tokens(client)
        endpoint = await create_endpoint(
            client, admin, None, ["webhook.test"], url="http://127.0.0.2:9/hook"
        )
        try:
            response = await client.patch(
                f"{ENDPOINTS}/{endpoint['id']}",
                headers=bearer(admin),
                json={"url": "http://localhost:9/hook"},
            )
            assert_envelope(response, 400, "VALIDATION_ERROR")
        finally:
            await delete_endpoint(client, admin, endpoint)


async def test_only_admins_manage_webhooks(stack: Stack) -> None:
    async with stack.client() as client:
        _, student = await signed_up(client)
        some_id = "00000000-0000-4000-8000-000000000000"
        routes = {
            ("GET", ENDPOINTS),
            ("POST", ENDPOINTS),
            ("GET", f"{ENDPOINTS}/{some_id}"),
            ("PATCH", f"{ENDPOINTS}/{some_id}"),
            ("DELETE", f"{ENDPOINTS}/{some_id}"),
            ("POST", f"{ENDPOINTS}/{some_id}/rotate-secret"),
            ("POST", f"{ENDPOINTS}/{some_id}/test"),
            ("GET", f"{ENDPOINTS}/{some_id}/deliveries"),
            ("POST", f"{ENDPOINTS}/{some_id}/recover"),
            ("GET", "/api/v1/webhooks/event-types"),
            ("GET", f"/api/v1/webhooks/deliveries/{some_id}"),
            ("POST", f"/api/v1/webhooks/deliveries/{some_id}/retry"),
        }
        # Every route of the service is in the list (the gateway forwards them all).
        async with httpx.AsyncClient(base_url=stack.service_url(6)) as service:
            spec = (await service.get("/openapi.json")).json()
        documented = {
            (
                method.upper(),
                path.replace("{endpoint_id}", some_id).replace("{delivery_id}", some_id),
            )
            for path, operations in spec["paths"].items()
            if path.startswith("/api/v1/webhooks")
            for method in operations
        }
        assert documented == routes
        for method, path in sorted(routes):
            response = await client.request(method, path, headers=bearer(student), json={})
            assert_envelope(response, 403, "PERMISSION_DENIED")
        assert_envelope(await client.get(ENDPOINTS), 401, "AUTHENTICATION_REQUIRED")


async def test_bad_input_is_a_clear_400_or_404(stack: Stack) -> None:
    async with stack.client() as client:
        admin = await admin_tokens(client)
        for body in (
            {"url": "http://127.0.0.2/hook", "event_types": ["User Created"]},
            {"url": "http://127.0.0.2/hook", "event_types": []},
            {"url": "http://127.0.0.2/hook", "surprise": True},
            {"event_types": ["*"]},
        ):
            response = await client.post(ENDPOINTS, headers=bearer(admin), json=body)
            assert_envelope(response, 400, "VALIDATION_ERROR")
        missing = "00000000-0000-4000-8000-000000000000"
        assert_envelope(
            await client.get(f"{ENDPOINTS}/{missing}", headers=bearer(admin)),
            404,
            "RESOURCE_NOT_FOUND",
        )
        assert_envelope(
            await client.post(
                f"/api/v1/webhooks/deliveries/{missing}/retry", headers=bearer(admin)
            ),
            404,
            "RESOURCE_NOT_FOUND",
        )
        endpoint = await create_endpoint(
            client, admin, None, ["webhook.test"], url="http://127.0.0.2:9/hook"
        )
        try:
            naive = await client.post(
                f"{ENDPOINTS}/{endpoint['id']}/recover",
                headers=bearer(admin),
                json={"since": "2026-01-01T00:00:00"},
            )
            assert_envelope(naive, 400, "VALIDATION_ERROR")
        finally:
            await delete_endpoint(client, admin, endpoint)


async def test_endpoint_lifecycle_and_secret_rotation(stack: Stack) -> None:
    async with stack.client() as client, receiving() as receiver:
        admin = await admin_tokens(client)
        endpoint = await create_endpoint(client, admin, receiver, ["webhook.test"])
        assert endpoint["secret"].startswith("whsec_")
        assert endpoint["enabled"] is True
        try:
            fetched = await client.get(f"{ENDPOINTS}/{endpoint['id']}", headers=bearer(admin))
            assert fetched.json()["secret"] == endpoint["secret"]
            listed = await client.get(ENDPOINTS, headers=bearer(admin), params={"per_page": 100})
            assert endpoint["id"] in {e["id"] for e in listed.json()["data"]}
            assert "secret" not in listed.json()["data"][0]
            assert listed.json()["pagination"]["per_page"] == 100

            patched = await client.patch(
                f"{ENDPOINTS}/{endpoint['id']}",
                headers=bearer(admin),
                json={"description": "Billing system", "event_types": ["webhook.test", "user.*"]},
            )
            assert patched.status_code == 200
            assert patched.json()["description"] == "Billing system"
            assert patched.json()["event_types"] == ["webhook.test", "user.*"]

            rotated = await client.post(
                f"{ENDPOINTS}/{endpoint['id']}/rotate-secret", headers=bearer(admin)
            )
            assert rotated.status_code == 200
            new_secret = rotated.json()["secret"]
            assert new_secret != endpoint["secret"]
            assert rotated.json()["previous_secret_expires_at"] is not None

            ping = await client.post(f"{ENDPOINTS}/{endpoint['id']}/test", headers=bearer(admin))
            assert ping.status_code == 202
            assert ping.json()["event_type"] == "webhook.test"

            async def pinged() -> list[Received]:
                return [r for r in receiver.received if r.webhook_id == ping.json()["message_id"]]

            [received] = await eventually(pinged)
            # Both secrets sign during the overlap: old and new receivers both verify.
            assert len(received.headers["webhook-signature"].split(" ")) == 2
            for secret in (endpoint["secret"], new_secret):
                payload = Webhook(secret).verify(received.body, received.headers)
                assert payload["type"] == "webhook.test"
                assert payload["data"]["endpoint_id"] == endpoint["id"]
        finally:
            await delete_endpoint(client, admin, endpoint)
        gone = await client.get(f"{ENDPOINTS}/{endpoint['id']}", headers=bearer(admin))
        assert_envelope(gone, 404, "RESOURCE_NOT_FOUND")


async def test_dead_endpoint_is_retried_disabled_announced_then_recovered(
    stack: Stack,
) -> None:
    closed = socket.socket()
    closed.bind((RECEIVER_HOST, 0))  # bound, never listening: connections are refused
    dead_url = f"http://{RECEIVER_HOST}:{closed.getsockname()[1]}/hook"
    async with stack.client() as client, receiving() as watcher, receiving() as revived:
        admin = await admin_tokens(client)
        watch = await create_endpoint(client, admin, watcher, ["webhook.endpoint.*"])
        dead = await create_endpoint(client, admin, None, ["webhook.test"], url=dead_url)
        try:
            ping = await client.post(f"{ENDPOINTS}/{dead['id']}/test", headers=bearer(admin))
            assert ping.status_code == 202

            async def announced() -> list[Received]:
                return watcher.about("id", dead["id"], "webhook.endpoint.disabled")

            [notice] = await eventually(announced, within_seconds=30)
            assert notice.payload is not None
            assert notice.payload["data"]["url"] == dead_url
            state = (await client.get(f"{ENDPOINTS}/{dead['id']}", headers=bearer(admin))).json()
            assert state["enabled"] is False
            assert state["disabled_reason"]
            [log] = await deliveries(client, admin, dead)
            assert log["status"] in ("failed", "pending")
            assert log["attempt_count"] >= 2
            assert all(a["response_status"] is None and a["error"] for a in log["attempts"])
            retry = await client.post(
                f"/api/v1/webhooks/deliveries/{log['id']}/retry", headers=bearer(admin)
            )
            assert_envelope(retry, 409, "CONFLICT")

            # Pointed at a receiver that answers and enabled again, replay since a minute ago.
            revived.secrets.append(dead["secret"])
            enabled = await client.patch(
                f"{ENDPOINTS}/{dead['id']}",
                headers=bearer(admin),
                json={"url": revived.url, "enabled": True},
            )
            assert enabled.json()["enabled"] is True
            assert enabled.json()["disabled_reason"] is None

            async def settled() -> bool:
                [entry] = await deliveries(client, admin, dead)
                return bool(entry["status"] == "failed")

            await eventually(settled, within_seconds=30, interval=0.5)
            since = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
            recovered = await client.post(
                f"{ENDPOINTS}/{dead['id']}/recover", headers=bearer(admin), json={"since": since}
            )
            assert recovered.status_code == 202
            assert recovered.json() == {"recovered": 1}

            async def replayed() -> list[Received]:
                return [r for r in revived.received if r.webhook_id == ping.json()["message_id"]]

            [first] = await eventually(replayed)
            assert first.payload is not None

            retried = await client.post(
                f"/api/v1/webhooks/deliveries/{log['id']}/retry", headers=bearer(admin)
            )
            assert retried.status_code == 202
            twice = await eventually(lambda: _at_least(replayed, 2))
            assert {r.webhook_id for r in twice} == {ping.json()["message_id"]}

            async def logged_success() -> bool:
                [entry] = await deliveries(client, admin, dead)
                return bool(
                    entry["status"] == "succeeded"
                    and entry["attempts"][-1]["response_status"] == 204
                )

            await eventually(logged_success, interval=0.5)
        finally:
            closed.close()
            await delete_endpoint(client, admin, watch)
            await delete_endpoint(client, admin, dead)


async def _at_least(
    source: Callable[[], Awaitable[list[Received]]], count: int
) -> list[Received] | None:
    found = await source()
    return found if len(found) >= count else None


async def test_event_types_catalogue_lists_each_type_with_its_schema(stack: Stack) -> None:
    async with stack.client() as client:
        admin = await admin_tokens(client)
        response = await client.get(
            "/api/v1/webhooks/event-types", headers=bearer(admin), params={"per_page": 100}
        )
        assert response.status_code == 200
        catalogue = {item["type"]: item for item in response.json()["data"]}
        for event_type in ("user.created", "user.updated", "webhook.endpoint.disabled"):
            assert catalogue[event_type]["schema"]["type"] == "object"
            assert catalogue[event_type]["title"]
