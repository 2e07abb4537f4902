"""`GET /status` at the gateway and every `/health`, on the launched stack: the version and
uptime of each, each service's state by name, and nothing a client should not see (no
address, no credential)."""

import httpx

from shared.registry import SERVICES
from shared.testing import Stack
from tests.conftest import ADMIN_PASSWORD
from tests.s3_server import ACCESS_KEY, SECRET_KEY


def assert_liveness(body: dict[str, object]) -> None:
    assert body["status"] == "ok"
    assert isinstance(body["version"], str)
    assert body["version"]
    assert isinstance(body["uptime"], int | float)
    assert body["uptime"] >= 0


async def test_status_gives_the_version_uptime_and_each_service(stack: Stack) -> None:
    async with stack.client() as client:
        response = await client.get("/status")
        health = await client.get("/health")
    assert response.status_code == 200, response.text
    status = response.json()
    assert set(status) == {"status", "version", "uptime", "services"}
    assert status["status"] == "ok"
    assert status["version"] == health.json()["version"]
    assert status["uptime"] >= 0
    assert status["services"] == {
        service.name: {"status": "ok", "version": status["version"]} for service in SERVICES
    }
    assert "x-ratelimit-limit" in response.headers  # the default policy, per address

    forbidden = [
        "http://",
        "https://",
        "127.0.0.1",
        "localhost",
        "postgres",
        "sqlite",
        "redis",
        "amqp",
        ADMIN_PASSWORD,
        ACCESS_KEY,
        SECRET_KEY,
        *(str(stack.base_port + service.port_offset) for service in SERVICES),
    ]
    for text in forbidden:
        assert text not in response.text, text


async def test_every_health_carries_version_and_uptime(stack: Stack) -> None:
    async with stack.client() as client:
        gateway = await client.get("/health")
    assert gateway.status_code == 200
    assert_liveness(gateway.json())
    for service in SERVICES:
        async with httpx.AsyncClient(base_url=stack.service_url(service.name)) as client:
            response = await client.get("/health")
        assert response.status_code == 200, service.name
        assert_liveness(response.json())
        assert response.json()["version"] == gateway.json()["version"]


async def test_status_is_in_the_merged_openapi_document(stack: Stack) -> None:
    async with stack.client() as client:
        document = (await client.get("/openapi.json")).json()
    operation = document["paths"]["/status"]["get"]
    assert "security" not in operation
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PlatformStatus"
    }
    assert {"200", "429"} <= set(operation["responses"])
    schema = document["components"]["schemas"]["PlatformStatus"]
    assert set(schema["required"]) == {"status", "version", "uptime", "services"}
