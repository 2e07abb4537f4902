"""Spans are exported with OTLP/HTTP when, and only when, an endpoint is set: a gateway
process then records its server span and its upstream request (the aiohttp client
instrumentation), names itself in the resource, and sends what it still holds when it
stops; without one, nothing is instrumented and nothing recorded."""

import asyncio
import json
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from launcher.otlp_receiver import OtlpReceiver
from tests.component.gateway_helpers import PREFIX, SigningKey, UpstreamProcess, upstream_env
from tests.processes import GatewayProcess

# What a service process has set up once its app is built.
SET_UP = """
import json, aiohttp, httpx, sqlalchemy.ext.asyncio
from shared import telemetry
from services.users.app import create_app
app = create_app()
layers, layer = [], app.build_middleware_stack()
while layer is not None:
    layers.append(type(layer).__name__)
    layer = getattr(layer, "app", None)
print(json.dumps({
    "recording": telemetry.recording(),
    "service_name": __import__("os").environ.get("OTEL_SERVICE_NAME"),
    "server_spans": "OpenTelemetryMiddleware" in layers,
    "aiohttp": hasattr(aiohttp.ClientSession.__init__, "__wrapped__"),
    "httpx": hasattr(httpx.AsyncHTTPTransport.handle_async_request, "__wrapped__"),
    "sqlalchemy": hasattr(sqlalchemy.ext.asyncio.create_async_engine, "__wrapped__"),
}))
"""


def set_up_of_a_service(**env: str) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", SET_UP],
        env={**clean, **env},
        capture_output=True,
        check=True,
        timeout=60,
    )
    result: dict[str, object] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return result


def test_without_an_endpoint_nothing_is_instrumented_and_with_one_everything_is() -> None:
    off = set_up_of_a_service()
    assert off == {
        "recording": False,
        "service_name": "users",
        "server_spans": False,
        "aiohttp": False,
        "httpx": False,
        "sqlalchemy": False,
    }
    on = set_up_of_a_service(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="http://127.0.0.1:9/v1/traces")
    assert on == {
        "recording": True,
        "service_name": "users",
        "server_spans": True,
        "aiohttp": True,
        "httpx": True,
        "sqlalchemy": True,
    }
    disabled = set_up_of_a_service(
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9", OTEL_SDK_DISABLED="true"
    )
    assert disabled["recording"] is False


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey()


@pytest.fixture
def upstream(tmp_path: Path, key: SigningKey) -> Iterator[UpstreamProcess]:
    process = UpstreamProcess(tmp_path, key).start()
    yield process
    process.stop()


@pytest.fixture
async def otlp() -> AsyncIterator[OtlpReceiver]:
    receiver = await OtlpReceiver().start()
    yield receiver
    await receiver.stop()


async def test_a_gateway_exports_its_spans_and_sends_the_last_ones_when_it_stops(
    tmp_path: Path, upstream: UpstreamProcess, key: SigningKey, otlp: OtlpReceiver
) -> None:
    env = upstream_env(
        upstream,
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp.url,
        # Nothing leaves on the schedule: what arrives was sent at shutdown.
        OTEL_BSP_SCHEDULE_DELAY="600000",
    )
    gateway = await asyncio.to_thread(GatewayProcess(tmp_path, env).start)
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10.0) as client:
            response = await client.get(
                f"{PREFIX}/echo",
                headers={
                    "Authorization": f"Bearer {key.token()}",
                    "traceparent": f"00-{trace_id}-{caller_span}-01",
                },
            )
        assert response.status_code == 200, response.text
        seen_upstream = response.json()["headers"]["traceparent"]
        assert otlp.trace(trace_id) == []
    finally:
        await asyncio.to_thread(gateway.stop)
    spans = otlp.trace(trace_id)
    assert {(s.service, s.kind) for s in spans} == {("gateway", "server"), ("gateway", "client")}
    [server] = [s for s in spans if s.kind == "server"]
    assert server.parent_span_id == caller_span
    assert server.attributes["http.response.status_code"] == 200
    calls = {str(s.attributes["url.full"]): s for s in spans if s.kind == "client"}
    # The upstream request, and the key set the token is checked with (fetched at first use).
    assert set(calls) == {f"{upstream.url}{PREFIX}/echo", f"{upstream.url}/jwks.json"}
    assert all(call.parent_span_id == server.span_id for call in calls.values())
    proxied = calls[f"{upstream.url}{PREFIX}/echo"]
    assert seen_upstream.split("-")[1:3] == [trace_id, proxied.span_id]
