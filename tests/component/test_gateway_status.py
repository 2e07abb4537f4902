"""The gateway's `GET /status`: its version and uptime, each upstream's state and version by
name only, under the default rate limit of the client's address; a gateway process in front
of the stub upstream and of an address where nothing listens."""

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared.testing import free_port_block
from tests.component.gateway_helpers import PREFIX, SigningKey, UpstreamProcess, upstream_env
from tests.e2e.helpers import assert_envelope
from tests.processes import GatewayProcess


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[UpstreamProcess]:
    process = UpstreamProcess(tmp_path, SigningKey()).start()
    yield process
    process.stop()


async def test_status_names_each_upstream_s_state_and_nothing_of_its_address(
    tmp_path: Path, upstream: UpstreamProcess
) -> None:
    nowhere = f"http://127.0.0.1:{free_port_block(1)}"  # nothing listens there
    env = upstream_env(
        upstream,
        UPSTREAMS=json.dumps({"files": upstream.url, "chat": nowhere}),
        ROUTES=json.dumps({PREFIX: "files"}),
        LYCEUM_VERSION="9.9.9-test",
        STATUS_CACHE_SECONDS="0",
        RATE_LIMIT_DEFAULT="3/minute",
    )
    gateway = GatewayProcess(tmp_path, env).start()
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
            response = await client.get("/status")
            assert response.status_code == 200, response.text
            assert response.json() == {
                "status": "degraded",
                "version": "9.9.9-test",
                "uptime": response.json()["uptime"],
                "services": {
                    # The stub's /health names no version.
                    "files": {"status": "ok", "version": None},
                    "chat": {"status": "unavailable", "version": None},
                },
            }
            assert response.json()["uptime"] >= 0
            for address in ("127.0.0.1", str(upstream.port), nowhere, "http"):
                assert address not in response.text
            assert response.headers["x-ratelimit-limit"] == "3"

            health = (await client.get("/health")).json()
            assert health["status"] == "ok"
            assert health["version"] == "9.9.9-test"
            assert health["uptime"] >= 0

            await client.get("/status")
            await client.get("/status")
            limited = await client.get("/status")
            assert_envelope(limited, 429, "RATE_LIMIT_EXCEEDED")
            assert int(limited.headers["retry-after"]) >= 1
    finally:
        gateway.stop()
