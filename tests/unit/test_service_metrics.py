"""Every service's `/metrics`: requests by route template, method and status, latency until
the answer starts, readiness and the database pool, each series under its service's name."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.responses import StreamingResponse
from prometheus_client.parser import text_string_to_metric_families

from shared import health, http_metrics
from shared.health import ReadinessCheck
from shared.metrics import REGISTRY
from shared.service import Collaborators, ServiceDefinition, create_service_app
from shared.settings import ServiceSettings


class Clock:
    """Stands in for `time.perf_counter` in the middleware: time moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(http_metrics, "time", SimpleNamespace(perf_counter=clock.perf_counter))
    return clock


def routes(clock: Clock) -> APIRouter:
    router = APIRouter()

    @router.get("/api/v1/items/{item_id}")
    async def get_item(item_id: str) -> dict[str, str]:
        return {"id": item_id}

    @router.post("/api/v1/items", status_code=201)
    async def create_item() -> dict[str, str]:
        clock.now += 0.3  # the handler takes 300 ms
        return {"id": "new"}

    @router.get("/api/v1/broken")
    async def broken() -> None:
        raise RuntimeError("a bug")

    @router.get("/api/v1/stream")
    async def stream() -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"first"
            clock.now += 60  # the body goes on for a minute after the answer started
            yield b"last"

        return StreamingResponse(body(), media_type="text/plain")

    return router


def service_app(name: str, clock: Clock) -> FastAPI:
    settings = ServiceSettings(service_name=name)
    return create_service_app(ServiceDefinition(name, name, [routes(clock)]), settings)


def requests(service: str, route: str, method: str, status: str) -> float:
    labels = {"service": service, "route": route, "method": method, "status": status}
    return REGISTRY.get_sample_value("http_requests_total", labels) or 0.0


def latency(service: str, route: str, method: str, suffix: str, **extra: str) -> float:
    labels = {"service": service, "route": route, "method": method, **extra}
    return REGISTRY.get_sample_value(f"http_request_duration_seconds_{suffix}", labels) or 0.0


def client(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://service")


async def test_requests_are_counted_by_route_template_method_and_status(clock: Clock) -> None:
    name = f"svc-{uuid.uuid4().hex[:8]}"
    async with client(service_app(name, clock)) as http:
        for item in ("a", "b", "c"):
            assert (await http.get(f"/api/v1/items/{item}")).status_code == 200
        assert (await http.post("/api/v1/items")).status_code == 201
        assert (await http.delete("/api/v1/items/a")).status_code == 405
        for path in ("/no/such/page", "/api/v1/items/a/b", "/.env"):
            assert (await http.get(path)).status_code == 404
        assert (await http.get("/api/v1/broken")).status_code == 500
        assert (await http.request("BREW", "/api/v1/items/a")).status_code == 405

    assert requests(name, "/api/v1/items/{item_id}", "GET", "200") == 3
    assert requests(name, "/api/v1/items", "POST", "201") == 1
    assert requests(name, "/api/v1/items/{item_id}", "DELETE", "405") == 1
    # Paths that match no route share one label, whatever they are.
    assert requests(name, "unmatched", "GET", "404") == 3
    assert requests(name, "/api/v1/broken", "GET", "500") == 1
    assert requests(name, "/api/v1/items/{item_id}", "OTHER", "405") == 1
    assert latency(name, "/api/v1/items/{item_id}", "GET", "count") == 3


async def test_latency_runs_until_the_answer_starts(clock: Clock) -> None:
    name = f"svc-{uuid.uuid4().hex[:8]}"
    async with client(service_app(name, clock)) as http:
        assert (await http.post("/api/v1/items")).status_code == 201
        response = await http.get("/api/v1/stream")
        assert response.content == b"firstlast"

    assert latency(name, "/api/v1/items", "POST", "sum") == pytest.approx(0.3)
    assert latency(name, "/api/v1/items", "POST", "bucket", le="0.25") == 0
    assert latency(name, "/api/v1/items", "POST", "bucket", le="0.5") == 1
    # The minute the streamed body took after its headers is not the request's latency.
    assert latency(name, "/api/v1/stream", "GET", "sum") == 0
    assert requests(name, "/api/v1/stream", "GET", "200") == 1


async def test_services_of_one_process_keep_their_own_series(clock: Clock) -> None:
    first, second = (f"svc-{uuid.uuid4().hex[:8]}" for _ in range(2))
    async with client(service_app(first, clock)) as one, client(service_app(second, clock)) as two:
        await one.get("/api/v1/items/x")
        await one.get("/api/v1/items/y")
        await two.get("/api/v1/items/z")
        # Either service's /metrics shows both (one registry), told apart by `service`.
        exposed = (await two.get("/metrics")).text
    assert requests(first, "/api/v1/items/{item_id}", "GET", "200") == 2
    assert requests(second, "/api/v1/items/{item_id}", "GET", "200") == 1
    assert f'service="{first}"' in exposed
    assert f'service="{second}"' in exposed


class Switchable(Collaborators[ServiceSettings]):
    """The shared collaborators, with one more readiness check that a test turns off, or
    makes hang."""

    passing = True
    hanging = False

    def readiness_checks(self) -> dict[str, ReadinessCheck]:
        async def switch() -> bool:
            if self.hanging:
                await asyncio.Event().wait()
            return self.passing

        return {**super().readiness_checks(), "switch": switch}


def figures(text: str, service: str) -> dict[str, float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("service") == service:
                check = sample.labels.get("check")
                found[f"{sample.name}:{check}" if check else sample.name] = sample.value
    return found


async def test_readiness_and_the_database_pool_are_read_at_each_scrape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"svc-{uuid.uuid4().hex[:8]}"
    settings = ServiceSettings(
        service_name=name, database_url=f"sqlite+aiosqlite:///{tmp_path / 'service.db'}"
    )
    definition: ServiceDefinition[Switchable] = ServiceDefinition(
        name, name, [], collaborators=Switchable
    )
    app = create_service_app(definition, settings)
    async with app.router.lifespan_context(app), client(app) as http:
        collaborators: Switchable = app.state.collaborators
        ready = figures((await http.get("/metrics")).text, name)
        assert ready["service_ready"] == 1
        assert ready["service_readiness_check:database"] == 1
        assert ready["service_readiness_check:switch"] == 1
        assert ready["db_pool_size"] == 5  # SQLAlchemy's default pool for SQLite files
        assert ready["db_pool_max_connections"] == 15
        assert ready["db_pool_checked_out_connections"] == 0

        async with collaborators.database.engine.connect():
            held = figures((await http.get("/metrics")).text, name)
        assert held["db_pool_checked_out_connections"] == 1

        collaborators.passing = False
        failing = figures((await http.get("/metrics")).text, name)
        assert failing["service_ready"] == 0
        assert failing["service_readiness_check:switch"] == 0
        assert failing["service_readiness_check:database"] == 1
        assert (await http.get("/ready")).status_code == 503

        # A check that does not answer in time counts as failing too. (Only here is the
        # time short: a busy machine may take longer for the first database check.)
        default_timeout = health.READINESS_CHECK_TIMEOUT_SECONDS
        monkeypatch.setattr(health, "READINESS_CHECK_TIMEOUT_SECONDS", 0.2)
        collaborators.passing, collaborators.hanging = True, True
        hanging = figures((await http.get("/metrics")).text, name)
        assert hanging["service_ready"] == 0
        assert hanging["service_readiness_check:switch"] == 0

        monkeypatch.setattr(health, "READINESS_CHECK_TIMEOUT_SECONDS", default_timeout)
        collaborators.hanging = False
        again = figures((await http.get("/metrics")).text, name)
        assert again["service_ready"] == 1
    # Once the service stopped, nothing reads its checks any more: its last figures stay.
    collaborators.passing = False
    async with client(app) as http:
        stopped = figures((await http.get("/metrics")).text, name)
    assert stopped["service_ready"] == 1
