"""A real Prometheus (the distribution's `prometheus` package) scrapes the full stack, as
deploy/observability/README.md tells operators to: every service and the gateway are up,
and what the platform did shows in the series Prometheus stored (requests by route,
readiness, the database pool, the outbox, consumer lag, chat tokens, processed documents).
"""

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from shared.registry import GATEWAY, SERVICES
from shared.testing import Stack, eventually, free_port_block, wait_until
from tests.e2e.bus_helpers import metric_value
from tests.e2e.chat_helpers import chat_user
from tests.e2e.helpers import bearer, signed_up

SCRAPE_SECONDS = 2
# Generous: the first scrapes of a busy machine, with the whole stack on its two cores.
ALL_UP_WITHIN_SECONDS = 120
SERIES_WITHIN_SECONDS = 60
COMPONENTS = [GATEWAY.name, *(service.name for service in SERVICES)]


class Prometheus:
    def __init__(self, workdir: Path, targets: dict[str, str]) -> None:
        self.workdir = workdir
        self.port = free_port_block(1)
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {
                "scrape_interval": f"{SCRAPE_SECONDS}s",
                "scrape_timeout": f"{SCRAPE_SECONDS}s",
                "evaluation_interval": f"{SCRAPE_SECONDS}s",
            },
            "scrape_configs": [
                {
                    "job_name": "lyceum",
                    "static_configs": [
                        {"targets": [address], "labels": {"component": component}}
                        for component, address in targets.items()
                    ],
                }
            ],
        }
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config))
        self.log_path = workdir / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> "Prometheus":
        binary = shutil.which("prometheus")
        assert binary is not None, "prometheus is missing: apt-get install prometheus"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={self.config}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited:\n{self.log_path.read_text()}")
            try:
                return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_until(ready, within_seconds=60, interval=0.2)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    async def targets(self) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=self.url, timeout=5) as client:
            response = await client.get("/api/v1/targets", params={"state": "active"})
        assert response.status_code == 200, response.text
        active: list[dict[str, Any]] = response.json()["data"]["activeTargets"]
        return active

    async def query(self, promql: str) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=self.url, timeout=5) as client:
            response = await client.get("/api/v1/query", params={"query": promql})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    async def value(self, promql: str) -> float | None:
        """The value of a query that answers one series, None while it answers none."""
        result = await self.query(promql)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None


@pytest.fixture(scope="module")
def prometheus(full_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    targets = {
        component: full_stack.service_url(component).removeprefix("http://")
        for component in COMPONENTS
    }
    server = Prometheus(tmp_path_factory.mktemp("prometheus"), targets).start()
    yield server
    server.stop()


async def at_least(prometheus: Prometheus, promql: str, minimum: float) -> float:
    """The query's value once Prometheus has it, and it is at least `minimum`."""

    async def reached() -> list[float]:
        value = await prometheus.value(promql)
        return [value] if value is not None and value >= minimum else []

    try:
        [found] = await eventually(reached, within_seconds=SERIES_WITHIN_SECONDS, interval=0.5)
    except AssertionError as exc:
        answer = await prometheus.query(promql)
        raise AssertionError(f"{promql}: {answer}, wanted >= {minimum}") from exc
    return float(found)


async def test_prometheus_sees_every_service_and_the_gateway_up(prometheus: Prometheus) -> None:
    last: list[dict[str, Any]] = []

    async def all_up() -> bool:
        nonlocal last
        last = await prometheus.targets()
        return len(last) == len(COMPONENTS) and all(t["health"] == "up" for t in last)

    try:
        await eventually(all_up, within_seconds=ALL_UP_WITHIN_SECONDS, interval=0.5)
    except AssertionError as exc:
        states = {t["labels"]["component"]: (t["health"], t["lastError"]) for t in last}
        raise AssertionError(f"targets not all up: {states}") from exc
    assert sorted(t["labels"]["component"] for t in last) == sorted(COMPONENTS)
    assert {t["labels"]["job"] for t in last} == {"lyceum"}
    up = await prometheus.query('up{job="lyceum"}')
    assert sorted(series["metric"]["component"] for series in up) == sorted(COMPONENTS)
    assert all(series["value"][1] == "1" for series in up)


async def test_what_the_platform_did_is_in_prometheus(
    full_stack: Stack, prometheus: Prometheus
) -> None:
    documents = full_stack.service_url("documents")
    ready_before = await metric_value(documents, "document_processing_total", outcome="ready")
    async with full_stack.client() as client:
        _, tokens = await signed_up(client)
        chat = await chat_user(client)
        answer = await client.post("/api/v1/chat", json={"message": "Hello"}, headers=chat)
        assert answer.status_code == 201, answer.text
        upload = await client.post(
            "/api/v1/documents",
            files={"file": ("notes.md", b"# Notes\n\nThe cranes rest by the lake.\n")},
            headers=bearer(tokens),
        )
        assert upload.status_code == 201, upload.text

    for service in SERVICES:
        assert await at_least(prometheus, f'service_ready{{service="{service.name}"}}', 1) == 1
        # The PostgreSQL pools, for transactions and for reads: 10 connections at most in
        # each, kept once opened.
        pool = f'db_pool_max_connections{{service="{service.name}"}}'
        assert await at_least(prometheus, pool, 1) == 20
    # Requests by route template, as each service and the gateway counted them.
    registered = 'sum(http_requests_total{service="auth", route="/api/v1/auth/register"})'
    await at_least(prometheus, registered, 2)
    await at_least(
        prometheus,
        'sum(http_requests_total{service="users", route="/api/v1/users/me", status="200"})',
        1,
    )
    await at_least(prometheus, 'sum(gateway_requests_total{upstream="chat", status="201"})', 1)
    await at_least(
        prometheus,
        'sum(http_request_duration_seconds_count{service="chat", route="/api/v1/chat"})',
        1,
    )
    # The event pipeline: outboxes, consumer lag and dead letters of the consumed queues.
    await at_least(prometheus, 'outbox_pending_events{service="auth"}', 0)
    await at_least(prometheus, 'outbox_oldest_pending_age_seconds{service="chat"}', 0)
    await at_least(prometheus, 'sum(outbox_published_events_total{service="auth"})', 2)
    await at_least(prometheus, 'event_queue_messages{service="users"}', 0)
    await at_least(prometheus, 'event_dead_letter_messages{service="webhooks"}', 0)
    await at_least(prometheus, 'webhook_disabled_endpoints{reason="failing"}', 0)
    # Chat's tokens, and the document processed.
    await at_least(prometheus, 'sum(chat_tokens_total{kind="completion"})', 1)
    await at_least(prometheus, 'sum(document_processing_total{outcome="ready"})', ready_before + 1)
