"""`make bench-webhooks`: the full stack with local receivers, measuring end to end from a
committed domain change (the event's time, stamped in the transaction of the change) to
the webhook arriving at a receiver.

The receivers are processes of their own (`bench/webhook_receivers.py`), verifying the
signature of one request in ten. Scenarios: one endpoint at a steady 5 events/s (latency
without a backlog); ten endpoints at a steady 200 deliveries/s; writers going flat out for
1, 10 and 100 endpoints; and healthy endpoints next to one that never answers. The bare
loop posts the same signed payloads to the same receivers with aiohttp alone, with the
dispatcher's limits (in flight per process and per endpoint), as the ceiling. Besides the
end-to-end rate, each scenario reports the rate from the moment its last delivery was
written (every event fanned out, read from the webhooks database) to the last arrival.
One more scenario measures the dispatcher alone, as the bare loop works: the rows 100
events fan out into are written to the webhooks database in one transaction, and its rate
runs from the first arrival to the last.

All but the first two scenarios are repeated `BENCH_ROUNDS` times (default 3),
interleaved; the table shows medians, and next to them the figures this very bench
measured on the same machine with the dispatcher the batched one replaced."""

import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import httpx
import uvloop

from services.webhooks.events import webhook_body
from services.webhooks.signing import new_secret, signed_headers
from shared.testing import Stack, eventually
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, _clean_full_stack

RECEIVER_HOST = "127.0.0.2"
RECEIVER_PROCESSES = 2
SAMPLE = 10  # one request in SAMPLE has its signature verified
ATTEMPT_TIMEOUT_SECONDS = 5
CONCURRENCY = 100  # attempts in flight per process (WEBHOOK_CONCURRENCY), bare loop too
ENDPOINT_CONCURRENCY = 5  # per endpoint (WEBHOOK_ENDPOINT_CONCURRENCY), bare loop too
WRITERS = 8  # concurrent clients changing profiles
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
CORES = os.cpu_count() or 1
ENDPOINTS = "/api/v1/webhooks/endpoints"
BARE = "bare aiohttp loop, 100 endpoints"
ALONE = "100 endpoints, written beforehand"
STEADY = "10 endpoints, 200 deliveries/s"
ROUND_TITLES = [
    STEADY,
    "10 endpoints",
    "10 + 1 never answering",
    "100 endpoints",
    ALONE,
    BARE,
    "100 + 1 never answering",
]

# This bench run on the dispatcher that came before the batched one (a claim and a
# transaction per attempt or two, an httpx client per host), on the same 2-core machine:
# deliveries/s, p50 ms, p99 ms (medians of 3 rounds but for the first two rows).
BEFORE: dict[str, tuple[float, float, float]] = {
    "1 endpoint, 5 events/s": (5.1, 38, 72),
    "1 endpoint": (41.3, 2_326, 3_488),
    STEADY: (119.0, 8_364, 10_204),
    "10 endpoints": (133.3, 11_816, 17_837),
    "10 + 1 never answering": (161.7, 9_127, 13_853),
    "100 endpoints": (131.3, 30_222, 74_273),
    BARE: (6_194.9, 864, 1_609),
    "100 + 1 never answering": (97.9, 41_424, 100_069),
}


@dataclass
class Result:
    title: str
    delivered: int
    expected: int
    events_per_s: float
    deliveries_per_s: float
    p50_ms: float
    p99_ms: float
    duplicates: int
    cpu: float | None  # share of one core the webhooks service used
    # Deliveries/s from the moment every delivery of the scenario existed (the writers'
    # events all fanned out) to the last arrival: the dispatcher alone.
    after_fan_out_per_s: float | None = None


@dataclass
class ReceiverProcesses:
    processes: list["subprocess.Popen[str]"] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)

    def start(self) -> "ReceiverProcesses":
        for _ in range(RECEIVER_PROCESSES):
            process = subprocess.Popen(  # noqa: S603
                [sys.executable, "-m", "bench.webhook_receivers", RECEIVER_HOST, str(SAMPLE)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            self.processes.append(process)
            assert process.stdout is not None
            self.ports.append(int(process.stdout.readline()))
        return self

    def stop(self) -> None:
        for process in self.processes:
            if process.stdin is not None:
                with contextlib.suppress(OSError):
                    process.stdin.close()
        for process in self.processes:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def base(self, n: int) -> str:
        return f"http://{RECEIVER_HOST}:{self.ports[n % len(self.ports)]}"


@dataclass
class Bench:
    stack: Stack
    client: httpx.AsyncClient
    receivers: ReceiverProcesses
    control: httpx.AsyncClient
    admin: dict[str, str]
    writers: list[dict[str, str]]
    tags: Iterator[int] = field(default_factory=lambda: iter(range(1_000_000)))

    def tag(self) -> str:
        return f"s{next(self.tags)}-{uuid.uuid4().hex[:4]}"

    async def register_secrets(self, secrets: dict[str, tuple[int, str]]) -> None:
        """{endpoint name: (receiver number, secret)}"""
        for n in range(len(self.receivers.ports)):
            mine = {name: s for name, (r, s) in secrets.items() if r % RECEIVER_PROCESSES == n}
            if mine:
                response = await self.control.put(
                    f"{self.receivers.base(n)}/_secrets", content=json.dumps(mine)
                )
                response.raise_for_status()

    async def counts(self, tag: str) -> tuple[int, float]:
        total, _, last = await self.arrivals(tag)
        return total, last

    async def arrivals(self, tag: str) -> tuple[int, float, float]:
        """How many of the tag's webhooks arrived, and when the first and the last did."""
        total, first, last = 0, float("inf"), 0.0
        for n in range(len(self.receivers.ports)):
            response = await self.control.get(f"{self.receivers.base(n)}/_count?tag={tag}")
            body = response.json()
            total, last = total + body["count"], max(last, body["last"])
            if body["count"]:
                first = min(first, body["first"])
        return total, first, last

    async def stats(self, tag: str) -> dict[str, Any]:
        merged: dict[str, Any] = {"latencies": [], "duplicates": 0, "rejected": 0, "sample": ""}
        for n in range(len(self.receivers.ports)):
            response = await self.control.get(f"{self.receivers.base(n)}/_stats?tag={tag}")
            body = response.json()
            merged["latencies"] += body["latencies"]
            merged["duplicates"] += body["duplicates"]
            merged["rejected"] += body["rejected"]
            merged["sample"] = merged["sample"] or body["sample_body"]
        return merged

    async def wait_for(self, tag: str, expected: int) -> None:
        async def arrived() -> bool:
            return (await self.counts(tag))[0] >= expected

        with contextlib.suppress(AssertionError):  # report what arrived, even if not all
            await eventually(arrived, within_seconds=180, interval=0.1)

    def cpu(self) -> "Cpu":
        """CPU seconds so far: the webhooks service, the receivers, PostgreSQL (every
        database of the server) and the whole machine."""
        try:
            webhooks = _cpu_seconds(self.stack.service_pid("webhooks"))
        except (OSError, ValueError):
            webhooks = 0.0
        receivers = sum(_cpu_seconds(p.pid) for p in self.receivers.processes)
        postgres: dict[int, float] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError):
                if "(postgres)" in stat.read_text():
                    postgres[int(stat.parent.name)] = _cpu_seconds(int(stat.parent.name))
        busy = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        idle = int(busy[3]) + int(busy[4])
        machine = (sum(int(n) for n in busy) - idle) / os.sysconf("SC_CLK_TCK")
        return Cpu(time.monotonic(), webhooks, receivers, postgres, machine)


@dataclass(frozen=True)
class Cpu:
    at: float
    webhooks: float
    receivers: float
    postgres: dict[int, float]  # by process: connections come and go
    machine: float

    def since(self, before: "Cpu") -> dict[str, float]:
        """CPU seconds used since `before`; PostgreSQL's by the processes alive now."""
        return {
            "webhooks": self.webhooks - before.webhooks,
            "postgres": sum(
                seconds - before.postgres.get(pid, 0.0) for pid, seconds in self.postgres.items()
            ),
            "receivers": self.receivers - before.receivers,
        }


def _cpu_seconds(pid: int) -> float:
    ticks = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(ticks[11]) + int(ticks[12])) / os.sysconf("SC_CLK_TCK")


async def create_endpoints(bench: Bench, urls: list[str]) -> list[dict[str, Any]]:
    async def create(url: str) -> dict[str, Any]:
        response = await bench.client.post(
            ENDPOINTS, headers=bench.admin, json={"url": url, "event_types": ["user.updated"]}
        )
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    created: list[dict[str, Any]] = []
    for start in range(0, len(urls), 10):
        created += await asyncio.gather(*(create(url) for url in urls[start : start + 10]))
    return created


async def delete_endpoints(bench: Bench, endpoints: list[dict[str, Any]]) -> None:
    for start in range(0, len(endpoints), 10):
        await asyncio.gather(
            *(
                bench.client.delete(f"{ENDPOINTS}/{e['id']}", headers=bench.admin)
                for e in endpoints[start : start + 10]
            )
        )


async def change_profiles(bench: Bench, tag: str, events: int, rate: float | None) -> None:
    """`events` committed profile changes, each one a `user.updated` event: as fast as the
    writers go, or at `rate` a second (each change at its own time, whatever came before)."""
    counter = iter(range(events))
    started = time.monotonic()

    async def writer(headers: dict[str, str]) -> None:
        for i in counter:
            if rate is not None:
                await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
            response = await bench.client.patch(
                "/api/v1/users/me", headers=headers, json={"name": f"{tag}#{i}"}
            )
            response.raise_for_status()

    await asyncio.gather(*(writer(headers) for headers in bench.writers))


async def watch_fan_out(bench: Bench, endpoint_ids: list[str], expected: int) -> tuple[float, int]:
    """When the last of the scenario's deliveries was written (wall clock), and how many
    had succeeded by then: polls the webhooks database."""
    url = bench.stack.database_url("webhooks").replace("+asyncpg", "")
    connection = await asyncpg.connect(url)
    try:
        while True:
            created, succeeded = await connection.fetchrow(
                "SELECT count(*), count(*) FILTER (WHERE status = 'succeeded') "
                "FROM deliveries WHERE endpoint_id = ANY($1::uuid[])",
                endpoint_ids,
            )
            if created >= expected:
                return time.time(), succeeded
            await asyncio.sleep(0.1)
    finally:
        await connection.close()


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def result_of(
    bench: Bench,
    title: str,
    tag: str,
    events: int,
    expected: int,
    started: float,
    cpu_before: Cpu,
) -> tuple[Result, str]:
    cpu_after = bench.cpu()
    stats = await bench.stats(tag)
    _, last = await bench.counts(tag)
    elapsed = max(last - started, 1e-9)
    wall = cpu_after.at - cpu_before.at
    cpu = (cpu_after.webhooks - cpu_before.webhooks) / wall
    latencies = stats["latencies"]
    if stats["rejected"]:
        print(f"    WARNING: {stats['rejected']} requests failed verification", flush=True)
    result = Result(
        title=title,
        delivered=len(latencies),
        expected=expected,
        events_per_s=events / elapsed,
        deliveries_per_s=len(latencies) / elapsed,
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        duplicates=stats["duplicates"],
        cpu=cpu,
    )
    per_delivery = {
        name: seconds / max(len(latencies), 1)
        for name, seconds in cpu_after.since(cpu_before).items()
    }
    print(
        f"    delivered {result.delivered}/{expected} in {elapsed:.1f}s: "
        f"{result.deliveries_per_s:.1f} deliveries/s, p50 {result.p50_ms:.0f} ms, "
        f"p99 {result.p99_ms:.0f} ms; CPU per delivery: "
        + ", ".join(f"{name} {seconds * 1e6:.0f} us" for name, seconds in per_delivery.items())
        + f"; machine {(cpu_after.machine - cpu_before.machine) / (wall * CORES):.0%} busy",
        flush=True,
    )
    return result, stats["sample"]


async def scenario(
    bench: Bench,
    title: str,
    healthy: int,
    events: int,
    hanging: int = 0,
    rate: float | None = None,
) -> tuple[Result, str]:
    tag = bench.tag()
    print(f"  {title}: {healthy} endpoints, {hanging} never answering, {events} events", flush=True)
    urls = [f"{bench.receivers.base(n)}/r/{tag}-{n}" for n in range(healthy)]
    urls += [f"{bench.receivers.base(0)}/hang" for _ in range(hanging)]
    endpoints = await create_endpoints(bench, urls)
    await bench.register_secrets(
        {f"{tag}-{n}": (n, endpoint["secret"]) for n, endpoint in enumerate(endpoints[:healthy])}
    )
    expected = healthy * events
    cpu_before = bench.cpu()
    started = time.time()
    # Flat out only: at a steady rate the last delivery is written at the very end.
    fanned_out = None
    if rate is None:
        ids = [e["id"] for e in endpoints[:healthy]]
        fanned_out = asyncio.create_task(watch_fan_out(bench, ids, expected))
    await change_profiles(bench, tag, events, rate)
    await bench.wait_for(tag, expected)
    result, sample = await result_of(bench, title, tag, events, expected, started, cpu_before)
    if fanned_out is not None:
        with contextlib.suppress(Exception):
            fan_out_done, succeeded = await asyncio.wait_for(fanned_out, 5)
            _, last = await bench.counts(tag)
            if last > fan_out_done and result.delivered == expected:
                result.after_fan_out_per_s = (expected - succeeded) / (last - fan_out_done)
                print(
                    f"    every delivery written {fan_out_done - started:.1f}s in, "
                    f"{succeeded} sent by then; "
                    f"from then on {result.after_fan_out_per_s:,.1f} deliveries/s",
                    flush=True,
                )
        fanned_out.cancel()
    await delete_endpoints(bench, endpoints)
    return result, sample


async def written_beforehand(
    bench: Bench, title: str, healthy: int, events: int, sample: str
) -> Result:
    """The dispatcher alone, as the bare loop works: the rows the fan-out would write for
    `events` events (a message each and a pending delivery to every endpoint) are written
    to the webhooks database in one transaction, and the dispatcher, woken by its poll,
    sends them. The rate runs from the first arrival to the last."""
    tag = bench.tag()
    print(f"  {title}: {healthy} endpoints, {events} events", flush=True)
    urls = [f"{bench.receivers.base(n)}/r/{tag}-{n}" for n in range(healthy)]
    endpoints = await create_endpoints(bench, urls)
    await bench.register_secrets(
        {f"{tag}-{n}": (n, endpoint["secret"]) for n, endpoint in enumerate(endpoints)}
    )
    data = json.loads(sample)["data"] if sample else {}
    now = datetime.now(UTC)
    messages = [
        (f"bench-{uuid.uuid4()}", webhook_body("user.updated", now, {**data, "name": f"{tag}#{i}"}))
        for i in range(events)
    ]
    expected = healthy * events
    cpu_before = bench.cpu()
    started = time.time()
    connection = await asyncpg.connect(bench.stack.database_url("webhooks").replace("+asyncpg", ""))
    try:
        async with connection.transaction():
            await connection.executemany(
                "INSERT INTO messages (id, event_type, body, created_at) "
                "VALUES ($1, 'user.updated', $2, $3)",
                [(message_id, body, now) for message_id, body in messages],
            )
            await connection.execute(
                "INSERT INTO deliveries (id, message_id, endpoint_id, status, attempt_count, "
                "next_attempt_at, created_at, updated_at) "
                "SELECT gen_random_uuid(), m, e, 'pending', 0, $3, $3, $3 "
                "FROM unnest($1::text[]) AS m, unnest($2::uuid[]) AS e",
                [message_id for message_id, _ in messages],
                [uuid.UUID(endpoint["id"]) for endpoint in endpoints],
                now,
            )
    finally:
        await connection.close()
    await bench.wait_for(tag, expected)
    result, _ = await result_of(bench, title, tag, events, expected, started, cpu_before)
    arrived, first, last = await bench.arrivals(tag)
    if arrived > 1 and last > first:
        result.deliveries_per_s = (arrived - 1) / (last - first)
        print(f"    first to last arrival: {result.deliveries_per_s:,.1f} deliveries/s", flush=True)
    await delete_endpoints(bench, endpoints)
    return result


async def bare_loop(bench: Bench, title: str, healthy: int, events: int, sample: str) -> Result:
    """The same signed payloads to the same receivers, straight from aiohttp, at most
    CONCURRENCY in flight and ENDPOINT_CONCURRENCY per endpoint."""
    tag = bench.tag()
    print(f"  {title}: {healthy} endpoints, {events} events", flush=True)
    secrets = {f"{tag}-{n}": (n, new_secret()) for n in range(healthy)}
    await bench.register_secrets(secrets)
    targets = [
        (f"{bench.receivers.base(n)}/r/{tag}-{n}", secrets[f"{tag}-{n}"][1]) for n in range(healthy)
    ]
    data = json.loads(sample)["data"] if sample else {}
    now = datetime.now(UTC)
    messages = [
        (str(uuid.uuid4()), webhook_body("user.updated", now, {**data, "name": f"{tag}#{i}"}))
        for i in range(events)
    ]
    slots = [asyncio.Semaphore(ENDPOINT_CONCURRENCY) for _ in range(healthy)]
    jobs = iter([(i, n) for i in range(events) for n in range(healthy)])
    connector = aiohttp.TCPConnector(limit=CONCURRENCY, limit_per_host=0)
    failures = 0

    async def post(session: aiohttp.ClientSession) -> None:
        nonlocal failures
        for i, n in jobs:
            message_id, body = messages[i]
            url, secret = targets[n]
            async with slots[n]:
                headers = signed_headers(message_id, datetime.now(UTC), body, [secret])
                async with session.post(url, data=body.encode(), headers=headers) as response:
                    await response.read()
                    failures += response.status >= 300

    cpu_before = bench.cpu()
    started = time.time()
    own_cpu = time.process_time()
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        await asyncio.gather(*(post(session) for _ in range(CONCURRENCY)))
    own_cpu = time.process_time() - own_cpu
    per_post = own_cpu / (healthy * events) * 1e6
    print(f"    the loop's own CPU: {per_post:.0f} us per post", flush=True)
    if failures:
        print(f"    WARNING: {failures} posts were refused", flush=True)
    await bench.wait_for(tag, healthy * events)
    result, _ = await result_of(bench, title, tag, events, healthy * events, started, cpu_before)
    result.cpu = None
    return result


def median_of(title: str, rounds: list[Result]) -> Result:
    cpus = [r.cpu for r in rounds if r.cpu is not None]
    after = [r.after_fan_out_per_s for r in rounds if r.after_fan_out_per_s is not None]
    return Result(
        title=title,
        delivered=sum(r.delivered for r in rounds),
        expected=sum(r.expected for r in rounds),
        events_per_s=statistics.median(r.events_per_s for r in rounds),
        deliveries_per_s=statistics.median(r.deliveries_per_s for r in rounds),
        p50_ms=statistics.median(r.p50_ms for r in rounds),
        p99_ms=statistics.median(r.p99_ms for r in rounds),
        duplicates=sum(r.duplicates for r in rounds),
        cpu=statistics.median(cpus) if cpus else None,
        after_fan_out_per_s=statistics.median(after) if after else None,
    )


async def prepare(stack: Stack, client: httpx.AsyncClient) -> tuple[dict[str, str], list[Any]]:
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
    return admin, writers


async def run(stack: Stack, receivers: ReceiverProcesses) -> list[Result]:
    async with (
        stack.client() as client,
        httpx.AsyncClient(timeout=30, trust_env=False) as control,
    ):
        admin, writers = await prepare(stack, client)
        bench = Bench(stack, client, receivers, control, admin, writers)
        print("measuring (commit of the change -> webhook at the receiver):", flush=True)
        once = [
            (await scenario(bench, "1 endpoint, 5 events/s", 1, 50, rate=5))[0],
            (await scenario(bench, "1 endpoint", 1, 300))[0],
        ]
        rounds: dict[str, list[Result]] = {title: [] for title in ROUND_TITLES}
        for round_number in range(1, ROUNDS + 1):
            print(f" round {round_number} of {ROUNDS}", flush=True)
            result, _ = await scenario(bench, STEADY, 10, 300, rate=20.0)
            rounds[STEADY].append(result)
            # Every other round with the never-answering endpoint first, so that the
            # machine's load drifting over a run favours neither side of the comparison.
            sample = ""
            for healthy, events in ((10, 300), (100, 100)):
                for hanging in (0, 1) if round_number % 2 else (1, 0):
                    title = (
                        f"{healthy} endpoints" if not hanging else f"{healthy} + 1 never answering"
                    )
                    result, sample = await scenario(bench, title, healthy, events, hanging)
                    rounds[title].append(result)
            rounds[ALONE].append(await written_beforehand(bench, ALONE, 100, 100, sample))
            rounds[BARE].append(await bare_loop(bench, BARE, 100, 100, sample))
    return once + [median_of(title, results) for title, results in rounds.items()]


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def report(results: list[Result]) -> None:
    print(
        f"\nWebhook delivery, full stack (PostgreSQL, RabbitMQ); {RECEIVER_PROCESSES} receiver "
        f"processes verifying 1 request in {SAMPLE}; below the first two rows, medians of {ROUNDS} "
        "rounds"
    )
    print(
        f"  {'scenario':<34}{'delivered':>14}{'deliv./s':>10}{'before':>8}"
        f"{'p50 ms':>9}{'before':>8}{'p99 ms':>9}{'before':>8}{'CPU':>6}{'dispatch/s':>12}"
    )
    for r in results:
        before = BEFORE.get(r.title)
        delivered = f"{r.delivered}/{r.expected}"
        cpu = "" if r.cpu is None else f"{r.cpu:.0%}"
        print(
            f"  {r.title:<34}{delivered:>14}{r.deliveries_per_s:>10,.1f}"
            f"{_figure(before[0] if before else None):>8}"
            f"{r.p50_ms:>9,.0f}{_figure(before[1] if before else None):>8}"
            f"{r.p99_ms:>9,.0f}{_figure(before[2] if before else None):>8}{cpu:>6}"
            f"{_figure(r.after_fan_out_per_s):>12}"
        )
    print(
        "  (CPU: the webhooks service's share of one core during the scenario; "
        f"attempt timeout {ATTEMPT_TIMEOUT_SECONDS} s;\n"
        "  dispatch/s: from the moment every delivery was written, the writers' events all "
        "fanned out,\n  to the last arrival)"
    )
    by_title = {r.title: r for r in results}
    hundred = by_title["100 endpoints"]
    ratio = hundred.deliveries_per_s / by_title[BARE].deliveries_per_s
    alone_ratio = by_title[ALONE].deliveries_per_s / by_title[BARE].deliveries_per_s
    steady_p99 = by_title[STEADY].p99_ms
    shares = {
        healthy: by_title[f"{healthy} + 1 never answering"].deliveries_per_s
        / by_title[f"{healthy} endpoints"].deliveries_per_s
        for healthy in ("10", "100")
    }
    print("\nGoals:")
    for goal, figure, reached in (
        (
            "at least 1,000 deliveries/s to 100 endpoints",
            f"{hundred.deliveries_per_s:,.0f}/s",
            hundred.deliveries_per_s >= 1000,
        ),
        ("at least 0.5x the bare loop's rate, end to end", f"{ratio:.2f}x", ratio >= 0.5),
        (
            "at least 0.5x the bare loop's rate, the dispatcher alone",
            f"{alone_ratio:.2f}x",
            alone_ratio >= 0.5,
        ),
        ("p99 at most 500 ms at a steady 200/s", f"{steady_p99:,.0f} ms", steady_p99 <= 500),
        *(
            (
                f"{healthy} endpoints keep 0.9x next to one never answering",
                f"{share:.2f}x",
                share >= 0.9,
            )
            for healthy, share in shares.items()
        ),
    ):
        print(f"  {goal:<58}{figure:>10}  {'reached' if reached else 'NOT reached'}")
    duplicates = sum(r.duplicates for r in results)
    if duplicates:
        print(f"  {duplicates} deliveries arrived more than once (at least once)")
    if hundred.after_fan_out_per_s is not None:
        alone = hundred.after_fan_out_per_s / by_title[BARE].deliveries_per_s
        print(
            f"  (100 endpoints once every delivery was written: "
            f"{hundred.after_fan_out_per_s:,.0f}/s, {alone:.2f}x the bare loop)"
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
            "WEBHOOK_CONCURRENCY": str(CONCURRENCY),
            "WEBHOOK_ENDPOINT_CONCURRENCY": str(ENDPOINT_CONCURRENCY),
            "RATE_LIMIT_AUTH": "100000/minute",
            "RATE_LIMIT_DEFAULT": "1000000/minute",
            "RATE_LIMIT_ADMIN": "1000000/minute",
        },
    )
    print(f"starting the full stack (log: {stack.log_path})", flush=True)
    started = time.monotonic()
    receivers = ReceiverProcesses()
    try:
        receivers.start()
        stack.start()
        results = uvloop.run(run(stack, receivers))
    finally:
        stack.stop()
        receivers.stop()
        asyncio.run(_clean_full_stack(stack))
    # Kept when the run failed: the stack's log is in it.
    shutil.rmtree(workdir, ignore_errors=True)
    report(results)
    print(f"\n(bench took {time.monotonic() - started:.0f}s)")


if __name__ == "__main__":
    main()
