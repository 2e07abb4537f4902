"""`make bench-webhooks`: the full stack with local receivers, measuring end to end from a
committed domain change (the event's time, stamped in the transaction of the change) to
the webhook arriving at a receiver that verifies its signature.

Prints events/s, deliveries/s and p50/p99 latency: for one endpoint at a steady 5 events/s
(latency without a backlog), then with writers going flat out for 1, 10 and 100 endpoints,
and for 10 healthy endpoints next to one that never answers."""

import asyncio
import contextlib
import socket
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from standardwebhooks.webhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from shared.testing import Stack, eventually
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, _clean_full_stack

RECEIVER_HOST = "127.0.0.2"
ATTEMPT_TIMEOUT_SECONDS = 5
WRITERS = 8  # concurrent clients changing profiles
ENDPOINTS = "/api/v1/webhooks/endpoints"


@dataclass
class Receivers:
    """Endpoint n is `/r/n`; `/hang` accepts and never answers."""

    verifiers: dict[str, Webhook] = field(default_factory=dict)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    seen: set[tuple[str, str]] = field(default_factory=set)
    last_receipt: float = 0.0
    rejected: int = 0
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def receive(self, request: Request) -> Response:
        received_at = time.time()
        name = request.path_params["name"]
        body = await request.body()
        try:
            payload = self.verifiers[name].verify(body, dict(request.headers))
        except Exception:
            self.rejected += 1
            return Response(status_code=400)
        key = (name, request.headers["webhook-id"])
        if key not in self.seen:
            self.seen.add(key)
            sent_at = datetime.fromisoformat(payload["timestamp"]).timestamp()
            self.latencies.setdefault(payload["data"]["name"].split("#")[0], []).append(
                received_at - sent_at
            )
            self.last_receipt = received_at
        return Response(status_code=204)

    async def hang(self, _request: Request) -> Response:
        await self.stopping.wait()
        return Response(status_code=204)


@contextlib.asynccontextmanager
async def serving(receivers: Receivers) -> AsyncIterator[int]:
    sock = socket.socket()
    sock.bind((RECEIVER_HOST, 0))
    app = Starlette(
        routes=[
            Route("/r/{name}", receivers.receive, methods=["POST"]),
            Route("/hang", receivers.hang, methods=["POST"]),
        ]
    )
    config = uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="off", backlog=4096, timeout_keep_alive=60
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await eventually(lambda: _ready(server.started))
    try:
        yield sock.getsockname()[1]
    finally:
        receivers.stopping.set()
        server.should_exit = server.force_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5)


async def _ready(condition: bool) -> bool:
    return condition


async def create_endpoints(
    client: httpx.AsyncClient, admin: dict[str, str], urls: list[tuple[str, str]]
) -> list[tuple[str, str, str]]:
    """(name, url) in; (name, endpoint id, secret) out."""
    created = []
    for name, url in urls:
        response = await client.post(
            ENDPOINTS, headers=admin, json={"url": url, "event_types": ["user.updated"]}
        )
        response.raise_for_status()
        body = response.json()
        created.append((name, body["id"], body["secret"]))
    return created


async def change_profiles(
    client: httpx.AsyncClient,
    writers: list[dict[str, str]],
    scenario: str,
    events: int,
    pause: float = 0.0,
) -> None:
    """`events` committed profile changes, each one a `user.updated` event; as fast as the
    writers go, or one writer pausing between changes."""
    counter = iter(range(events))

    async def writer(headers: dict[str, str]) -> None:
        for i in counter:
            response = await client.patch(
                "/api/v1/users/me", headers=headers, json={"name": f"{scenario}#{i}"}
            )
            response.raise_for_status()
            await asyncio.sleep(pause)

    if pause:
        writers = writers[:1]

    await asyncio.gather(*(writer(headers) for headers in writers))


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def scenario(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    writers: list[dict[str, str]],
    receivers: Receivers,
    port: int,
    title: str,
    healthy: int,
    events: int,
    hanging: int = 0,
    pause: float = 0.0,
) -> dict[str, Any]:
    tag = f"s{len(receivers.latencies)}"
    print(f"  {title}: {healthy} endpoints, {hanging} never answering, {events} events", flush=True)
    urls = [(f"{tag}-{n}", f"http://{RECEIVER_HOST}:{port}/r/{tag}-{n}") for n in range(healthy)]
    urls += [(f"{tag}-hang-{n}", f"http://{RECEIVER_HOST}:{port}/hang") for n in range(hanging)]
    endpoints = await create_endpoints(client, admin, urls)
    for name, _, secret in endpoints:
        receivers.verifiers[name] = Webhook(secret)
    receivers.latencies[tag] = []
    expected = healthy * events
    started = time.time()
    await change_profiles(client, writers, tag, events, pause)
    with contextlib.suppress(AssertionError):  # report what arrived, even if not all
        await eventually(
            lambda: _ready(len(receivers.latencies[tag]) >= expected), within_seconds=120
        )
    latencies = receivers.latencies[tag]
    elapsed = max(receivers.last_receipt - started, 1e-9)
    for _, endpoint_id, _ in endpoints:
        await client.delete(f"{ENDPOINTS}/{endpoint_id}", headers=admin)
    result = {
        "title": title,
        "delivered": len(latencies),
        "expected": expected,
        "events_per_s": events / elapsed,
        "deliveries_per_s": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1000 if latencies else float("nan"),
        "p99_ms": percentile(latencies, 0.99) * 1000 if latencies else float("nan"),
    }
    print(
        f"    delivered {result['delivered']}/{expected} in {elapsed:.1f}s: "
        f"{result['events_per_s']:.1f} events/s, {result['deliveries_per_s']:.1f} deliveries/s, "
        f"p50 {result['p50_ms']:.0f} ms, p99 {result['p99_ms']:.0f} ms",
        flush=True,
    )
    return result


async def run(stack: Stack) -> list[dict[str, Any]]:
    receivers = Receivers()
    async with serving(receivers) as port, stack.client() as client:
        login = await client.post(
            "/api/v1/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
        )
        login.raise_for_status()
        admin = {"Authorization": f"Bearer {login.json()['access_token']}"}
        writers = []
        for n in range(WRITERS):
            email = f"bench-{stack.run_id}-{n}@example.com"
            account = {"email": email, "password": "bench password 123", "name": "Bench"}
            (await client.post("/api/v1/auth/register", json=account)).raise_for_status()
            tokens = await client.post(
                "/api/v1/auth/login", json={"email": email, "password": account["password"]}
            )
            tokens.raise_for_status()
            headers = {"Authorization": f"Bearer {tokens.json()['access_token']}"}

            async def profile_ready(headers: dict[str, str] = headers) -> bool:
                return (await client.get("/api/v1/users/me", headers=headers)).status_code == 200

            await eventually(profile_ready)
            writers.append(headers)
        print("measuring (commit of the change -> webhook verified at the receiver):", flush=True)
        results = [
            await scenario(
                client, admin, writers, receivers, port, "1 endpoint, 5 events/s", 1, 50, pause=0.2
            ),
            await scenario(client, admin, writers, receivers, port, "1 endpoint", 1, 300),
            await scenario(client, admin, writers, receivers, port, "10 endpoints", 10, 150),
            await scenario(client, admin, writers, receivers, port, "100 endpoints", 100, 30),
            await scenario(
                client, admin, writers, receivers, port, "10 + 1 never answering", 10, 150, 1
            ),
        ]
        if receivers.rejected:
            print(f"  WARNING: {receivers.rejected} deliveries failed verification", flush=True)
    return results


def report(results: list[dict[str, Any]]) -> None:
    print("\nWebhook delivery, full stack (PostgreSQL, RabbitMQ), receivers verifying:")
    print(
        f"  {'scenario':<26}{'delivered':>12}{'events/s':>10}{'deliv./s':>10}"
        f"{'p50 ms':>9}{'p99 ms':>9}"
    )
    for r in results:
        delivered = f"{r['delivered']}/{r['expected']}"
        print(
            f"  {r['title']:<26}{delivered:>12}{r['events_per_s']:>10.1f}"
            f"{r['deliveries_per_s']:>10.1f}{r['p50_ms']:>9.0f}{r['p99_ms']:>9.0f}"
        )
    healthy, with_hanging = results[2], results[4]
    ratio = with_hanging["deliveries_per_s"] / healthy["deliveries_per_s"]
    print(
        f"  healthy-endpoint throughput with one never-answering endpoint: {ratio:.2f}x "
        f"of the same 10 endpoints alone (attempt timeout {ATTEMPT_TIMEOUT_SECONDS}s)"
    )


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    stack = Stack(
        mode="full",
        workdir=workdir,
        env_overrides={
            "LYCEUM_ADMIN_EMAIL": ADMIN_EMAIL,
            "LYCEUM_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "OUTBOX_POLL_SECONDS": "0.5",
            "LOG_LEVEL": "WARNING",
            "WEBHOOK_ALLOWED_NETWORKS": f"{RECEIVER_HOST}/32",
            "WEBHOOK_ATTEMPT_TIMEOUT_SECONDS": str(ATTEMPT_TIMEOUT_SECONDS),
            "RATE_LIMIT_AUTH": "100000/minute",
            "RATE_LIMIT_DEFAULT": "1000000/minute",
            "RATE_LIMIT_ADMIN": "1000000/minute",
        },
    )
    print(f"starting the full stack (log: {stack.log_path})", flush=True)
    started = time.monotonic()
    try:
        stack.start()
        results = asyncio.run(run(stack))
    finally:
        stack.stop()
        asyncio.run(_clean_full_stack(stack))
    report(results)
    print(f"\n(bench took {time.monotonic() - started:.0f}s)")


if __name__ == "__main__":
    main()
