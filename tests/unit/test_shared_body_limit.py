"""Every service refuses a body over MAX_BODY_BYTES itself, declared or streamed, in the
envelope: a client that reaches a service without the gateway gets no further."""

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request

from gateway.settings import GatewaySettings
from shared.service import ServiceDefinition, create_service_app
from shared.settings import ServiceSettings

LIMIT = 1024
UPLOAD_LIMIT = 8 * LIMIT


class Calls:
    def __init__(self) -> None:
        self.count = 0


def make_app(calls: Calls, limit: int = LIMIT) -> FastAPI:
    router = APIRouter()

    @router.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        calls.count += 1
        return {"bytes": len(await request.body())}

    @router.post("/ignores-body")
    async def ignores_body() -> dict[str, str]:
        calls.count += 1
        return {"ok": "yes"}

    @router.api_route("/uploads/{name}", methods=["POST", "PUT"])
    async def upload(request: Request) -> dict[str, int]:
        calls.count += 1
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
        return {"bytes": received}

    definition = ServiceDefinition(
        name="limited",
        title="Limited",
        routers=[router],
        body_limits=lambda settings: [("POST", "/uploads/*", UPLOAD_LIMIT)],
    )
    return create_service_app(definition, ServiceSettings(max_body_bytes=limit))


async def post(app: FastAPI, path: str, **kwargs: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.post(path, **kwargs)


def assert_too_large(response: httpx.Response, limit: int = LIMIT) -> None:
    assert response.status_code == 413
    body = response.json()
    assert body["status"] == "error"
    assert body["error"] == {"code": "PAYLOAD_TOO_LARGE", "message": f"Body exceeds {limit} bytes"}
    assert body["request_id"] == response.headers["x-request-id"]


async def test_a_body_up_to_the_limit_is_read() -> None:
    response = await post(make_app(Calls()), "/echo", content=b"x" * LIMIT)
    assert response.json() == {"bytes": LIMIT}


@pytest.mark.parametrize("path", ["/echo", "/ignores-body", "/no-such-route"])
async def test_a_declared_length_over_the_limit_is_refused_before_any_route_runs(
    path: str,
) -> None:
    calls = Calls()
    response = await post(make_app(calls), path, content=b"x" * (LIMIT + 1))
    assert response.request.headers["content-length"] == str(LIMIT + 1)
    assert_too_large(response)
    assert calls.count == 0


async def chunks(total: int, size: int = 512) -> AsyncIterator[bytes]:
    for _ in range(total // size):
        yield b"x" * size


async def test_a_streamed_body_is_counted_as_it_arrives() -> None:
    response = await post(make_app(Calls()), "/echo", content=chunks(8 * 512))
    assert "content-length" not in response.request.headers
    assert_too_large(response)


@pytest.mark.parametrize("streamed", [False, True], ids=["declared", "streamed"])
async def test_a_route_with_its_own_limit_takes_a_body_over_the_default_up_to_it(
    streamed: bool,
) -> None:
    body = chunks(UPLOAD_LIMIT) if streamed else b"x" * UPLOAD_LIMIT
    response = await post(make_app(Calls()), "/uploads/report.pdf", content=body)
    assert response.json() == {"bytes": UPLOAD_LIMIT}


@pytest.mark.parametrize("streamed", [False, True], ids=["declared", "streamed"])
async def test_a_route_with_its_own_limit_refuses_a_body_over_it(streamed: bool) -> None:
    calls = Calls()
    body = chunks(UPLOAD_LIMIT + 512) if streamed else b"x" * (UPLOAD_LIMIT + 1)
    response = await post(make_app(calls), "/uploads/report.pdf", content=body)
    assert_too_large(response, UPLOAD_LIMIT)
    if not streamed:
        assert calls.count == 0


@pytest.mark.parametrize("streamed", [False, True], ids=["declared", "streamed"])
@pytest.mark.parametrize(("method", "path"), [("POST", "/echo"), ("PUT", "/uploads/report.pdf")])
async def test_other_routes_keep_the_default_limit(method: str, path: str, streamed: bool) -> None:
    body = chunks(2 * LIMIT) if streamed else b"x" * (2 * LIMIT)
    transport = httpx.ASGITransport(app=make_app(Calls()), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.request(method, path, content=body)
    assert_too_large(response)


async def test_a_service_can_raise_its_limit() -> None:
    response = await post(make_app(Calls(), limit=4 * LIMIT), "/echo", content=b"x" * 3 * LIMIT)
    assert response.json() == {"bytes": 3 * LIMIT}


def test_services_default_to_1_mib_and_the_gateway_keeps_its_own_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MAX_BODY_BYTES", raising=False)
    assert ServiceSettings().max_body_bytes == 1024 * 1024
    assert GatewaySettings().max_body_bytes == 10 * 1024 * 1024
    assert GatewaySettings().max_upload_bytes == 101 * 1024 * 1024
