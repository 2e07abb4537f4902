"""`make bench-chat`: what the chat service and the gateway add to a streamed answer.

Starts the stub provider (`tests.openai_stub`) as a process of its own, streaming a fixed
answer (TOKENS tokens, INTERVAL seconds apart), and the embedded stack pointed at it. Then,
side by side in one run, measures time to first token (TTFT: from sending the request to
the first non-empty piece of text) and total time (to the end of the answer) down five paths:

    stub            the provider itself, `POST /v1/chat/completions` streamed
    chat sse        the chat service on its own port, `POST /api/v1/chat` (Server-Sent Events)
    gateway sse     the same through the gateway
    chat ws         the chat service's WebSocket `/ws`, `{"type": "chat", ...}`
    gateway ws      the same through the gateway

first one stream at a time (SEQUENTIAL rounds, the paths interleaved round by round so that
drift is shared; each request waits until the platform is done with the work that follows
the previous answer, such as saving it and relaying its events), then CONCURRENT streams at
once per path (USERS users with an equal share of the streams each). Every client reads the
events with the same small SSE parser (aiohttp) or the `websockets` package, and checks
that the text received is the provider's.

Prints p50/p99 per path, the failures by reason, the TTFT added by chat and by
gateway + chat over the stub at one stream (goal: at most 5 ms at the median through the
gateway), whether the concurrent streams all finished without an error, the platform's CPU
time per answer and its memory. In embedded mode every service and the gateway share one
process, so the CPU and memory reported are that process's: the chat service together with
everything else.
"""

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
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from websockets.asyncio.client import ClientConnection, connect

from bench.bench_gateway import PeakMemory, descendants, status_kib
from bench.bench_webhooks import percentile
from shared.testing import Stack

TOKENS = int(os.environ.get("BENCH_CHAT_TOKENS", "40"))
INTERVAL = float(os.environ.get("BENCH_CHAT_INTERVAL", "0.01"))
SEQUENTIAL = int(os.environ.get("BENCH_CHAT_SEQUENTIAL", "30"))
CONCURRENT = int(os.environ.get("BENCH_CHAT_CONCURRENT", "200"))
USERS = int(os.environ.get("BENCH_CHAT_USERS", "10"))
WARMUP = 3
STREAM_TIMEOUT_SECONDS = 120.0
GOAL_ADDED_TTFT_MS = 5.0
MESSAGE = "Tell me about the stars."
EXPECTED_TEXT = "".join(f"w{n} " for n in range(1, TOKENS + 1))
GENEROUS = "100000000/minute"
PROVIDER_KEY = "bench"


@dataclass
class Sample:
    ttft: float | None = None
    total: float | None = None
    error: str | None = None


@dataclass
class Result:
    path: str
    streams: int
    samples: list[Sample] = field(default_factory=list)
    wall_seconds: float = 0.0
    # The platform's CPU time for the streams, until it was idle again after them (net of
    # its idle use), and the share of one core it used while they ran.
    cpu_seconds: float = 0.0
    busy: float = 0.0

    @property
    def ok(self) -> list[Sample]:
        return [s for s in self.samples if s.error is None]

    @property
    def failures(self) -> Counter[str]:
        return Counter(s.error for s in self.samples if s.error is not None)

    def ms(self, what: str, fraction: float) -> float:
        values = [getattr(s, what) for s in self.ok]
        return percentile(values, fraction) * 1000 if values else float("nan")

    def median_ms(self, what: str) -> float:
        values = [getattr(s, what) for s in self.ok]
        return statistics.median(values) * 1000 if values else float("nan")


@dataclass
class User:
    email: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class Measure:
    """Times one answer: started at creation, `text()` for each piece, then `done()`."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.sample = Sample()
        self.received: list[str] = []

    def text(self, piece: str) -> None:
        if piece and self.sample.ttft is None:
            self.sample.ttft = time.perf_counter() - self.started
        self.received.append(piece)

    def done(self) -> Sample:
        self.sample.total = time.perf_counter() - self.started
        if self.sample.ttft is None:
            self.sample.error = "no text"
        elif "".join(self.received).strip() != EXPECTED_TEXT.strip():
            self.sample.error = "wrong text"
        return self.sample

    def fail(self, reason: str) -> Sample:
        self.sample.error = reason
        return self.sample


async def sse_events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, str]]:
    """(event, data) for each Server-Sent Event of a response."""
    event, data = "message", list[str]()
    async for raw in response.content:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", list[str]()
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)


def error_reason(kind: str, data: Any) -> str:
    code = None
    if isinstance(data, dict):
        inner = data.get("error")
        code = data.get("code") or (inner.get("code") if isinstance(inner, dict) else None)
    return f"{kind} {code}" if code else kind


async def http_failure(response: aiohttp.ClientResponse) -> str:
    try:
        body = await response.json(content_type=None)
    except (ValueError, aiohttp.ClientError):
        body = None
    return error_reason(f"HTTP {response.status}", body)


# -- the three kinds of client --------------------------------------------------------------


class Channel:
    """Where one user's answers are asked for, one at a time."""

    async def chat(self) -> Sample:
        raise NotImplementedError

    async def close(self) -> None:
        return None


class StubChannel(Channel):
    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self.session, self.url = session, f"{base_url}/chat/completions"

    async def chat(self) -> Sample:
        measure = Measure()
        body = {
            "model": "stub-model",
            "messages": [{"role": "user", "content": MESSAGE}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        headers = {"Authorization": f"Bearer {PROVIDER_KEY}"}
        async with self.session.post(self.url, json=body, headers=headers) as response:
            if response.status != 200:
                return measure.fail(await http_failure(response))
            async for _, data in sse_events(response):
                if data == "[DONE]":
                    return measure.done()
                chunk = json.loads(data)
                for choice in chunk["choices"]:
                    measure.text(choice["delta"].get("content") or "")
        return measure.fail("stream ended early")


class SseChannel(Channel):
    def __init__(self, session: aiohttp.ClientSession, base_url: str, user: User) -> None:
        self.session, self.url, self.user = session, f"{base_url}/api/v1/chat", user

    async def chat(self) -> Sample:
        measure = Measure()
        body = {"message": MESSAGE, "stream": True}
        headers = {**self.user.headers, "Accept": "text/event-stream"}
        async with self.session.post(self.url, json=body, headers=headers) as response:
            if response.status not in (200, 201):
                return measure.fail(await http_failure(response))
            async for event, data in sse_events(response):
                if event == "chat_delta":
                    measure.text(json.loads(data).get("delta") or "")
                elif event == "chat_response":
                    return measure.done()
                elif event == "error":
                    return measure.fail(error_reason("error event", json.loads(data)))
        return measure.fail("stream ended early")


class WsChannel(Channel):
    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket

    @classmethod
    async def open(cls, base_url: str, user: User) -> "WsChannel":
        socket = await connect(
            base_url.replace("http", "ws", 1) + f"/ws?token={user.token}",
            open_timeout=60,
            max_size=None,
            compression=None,
            proxy=None,
        )
        return cls(socket)

    async def chat(self) -> Sample:
        measure = Measure()
        await self.socket.send(json.dumps({"type": "chat", "data": {"message": MESSAGE}}))
        async for frame in self.socket:
            message = json.loads(frame)
            kind, data = message.get("type"), message.get("data") or {}
            if kind == "chat_delta":
                measure.text(data.get("delta") or "")
            elif kind == "chat_response":
                return measure.done()
            elif kind == "error":
                return measure.fail(error_reason("error message", data))
        return measure.fail(f"socket closed ({self.socket.close_code})")

    async def close(self) -> None:
        await self.socket.close()


@dataclass
class Paths:
    """Each path's way to open a channel for a user."""

    openers: dict[str, Callable[[User], Awaitable[Channel]]]

    @classmethod
    def build(cls, session: aiohttp.ClientSession, stub_url: str, stack: Stack) -> "Paths":
        chat_url, gateway_url = stack.service_url("chat"), stack.url

        async def stub(_user: User) -> Channel:
            return StubChannel(session, stub_url)

        def sse(base_url: str) -> Callable[[User], Awaitable[Channel]]:
            async def open_sse(user: User) -> Channel:
                return SseChannel(session, base_url, user)

            return open_sse

        def ws(base_url: str) -> Callable[[User], Awaitable[Channel]]:
            async def open_ws(user: User) -> Channel:
                return await WsChannel.open(base_url, user)

            return open_ws

        return cls(
            {
                "stub": stub,
                "chat sse": sse(chat_url),
                "gateway sse": sse(gateway_url),
                "chat ws": ws(chat_url),
                "gateway ws": ws(gateway_url),
            }
        )


async def guarded(channel: Channel) -> Sample:
    try:
        return await asyncio.wait_for(channel.chat(), STREAM_TIMEOUT_SECONDS)
    except TimeoutError:
        return Sample(error="timeout")
    except Exception as exc:
        return Sample(error=type(exc).__name__)


# -- the platform and the provider ----------------------------------------------------------


def start_stub() -> tuple["subprocess.Popen[str]", str]:
    process = subprocess.Popen(  # noqa: S603
        [
            sys.executable,
            "-m",
            "tests.openai_stub",
            "--tokens",
            str(TOKENS),
            "--interval",
            str(INTERVAL),
            "--api-key",
            PROVIDER_KEY,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("OpenAI stub ready: "):
        process.kill()
        raise RuntimeError(f"the stub provider did not start: {line!r}")
    return process, line.split(": ", 1)[1].strip()


async def sign_up(stack: Stack, count: int) -> list[User]:
    users = []
    password = "bench-password-123"  # noqa: S105
    async with stack.client() as client:
        for n in range(count):
            email = f"bench-chat-{stack.run_id}-{n}@example.com"
            account = {"email": email, "password": password, "name": f"Bench {n}"}
            (await client.post("/api/v1/auth/register", json=account)).raise_for_status()
            login = await client.post(
                "/api/v1/auth/login", json={"email": email, "password": password}
            )
            login.raise_for_status()
            users.append(User(email, login.json()["access_token"]))
    return users


# -- the measurements -----------------------------------------------------------------------


class PlatformCpu:
    """CPU time of the platform's processes (every thread of each), net of what they use
    when idle (timers, pollers), measured once before the load."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.idle_rate = 0.0  # CPU seconds per second

    def now(self) -> float:
        ticks = 0
        for pid in self.pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    async def measure_idle(self, seconds: float = 3.0) -> None:
        await self.settle()
        before = self.now()
        await asyncio.sleep(seconds)
        self.idle_rate = (self.now() - before) / seconds

    async def settle(
        self, within_seconds: float = 20.0, window: float = 0.5
    ) -> tuple[float, float]:
        """Waits until the platform is (nearly) idle again, using under 15% of a core for a
        `window`: what it does once answers are sent (saving usage, relaying events) is part
        of their cost, and must not delay the next measurement. Returns the CPU time this
        took and how long."""
        cpu, started = self.now(), time.monotonic()
        while time.monotonic() - started < within_seconds:
            before = self.now()
            await asyncio.sleep(window)
            if self.now() - before < 0.15 * window:
                break
        return self.now() - cpu, time.monotonic() - started

    def net(self, cpu: float, seconds: float) -> float:
        return max(cpu - self.idle_rate * seconds, 0.0)


async def one_at_a_time(
    paths: Paths, user: User, cpu: PlatformCpu
) -> tuple[dict[str, Result], float]:
    """The results per path, and the platform's CPU time for the whole phase."""
    channels = {name: await opener(user) for name, opener in paths.openers.items()}
    results = {name: Result(name, 1) for name in channels}
    try:
        for _ in range(WARMUP):
            for channel in channels.values():
                await guarded(channel)
        await cpu.settle()
        print(f"one stream at a time: {SEQUENTIAL} rounds over {len(channels)} paths", flush=True)
        cpu_before, started = cpu.now(), time.perf_counter()
        for round_number in range(1, SEQUENTIAL + 1):
            for name, channel in channels.items():
                await cpu.settle(within_seconds=5.0, window=0.1)
                results[name].samples.append(await guarded(channel))
            if round_number % 10 == 0 or round_number == SEQUENTIAL:
                medians = "  ".join(
                    f"{name} {result.median_ms('ttft'):.1f}" for name, result in results.items()
                )
                print(f"  round {round_number:>3}  TTFT p50 ms: {medians}", flush=True)
        for result in results.values():
            result.wall_seconds = time.perf_counter() - started
    finally:
        for channel in channels.values():
            with contextlib.suppress(Exception):
                await channel.close()
    await cpu.settle()
    return results, cpu.net(cpu.now() - cpu_before, time.perf_counter() - started)


async def all_at_once(paths: Paths, users: list[User], cpu: PlatformCpu) -> dict[str, Result]:
    print(f"{CONCURRENT} streams at once ({len(users)} users), one path after another", flush=True)
    results = {}
    opening = asyncio.Semaphore(50)

    async def open_for(opener: Callable[[User], Awaitable[Channel]], user: User) -> Channel:
        async with opening:
            return await opener(user)

    for name, opener in paths.openers.items():
        result = Result(name, CONCURRENT)
        opened = await asyncio.gather(
            *(open_for(opener, users[n % len(users)]) for n in range(CONCURRENT)),
            return_exceptions=True,
        )
        channels = [c for c in opened if isinstance(c, Channel)]
        result.samples += [
            Sample(error=f"connect {type(c).__name__}") for c in opened if isinstance(c, Exception)
        ]
        await cpu.settle()
        cpu_before, started = cpu.now(), time.perf_counter()
        result.samples += await asyncio.gather(*(guarded(channel) for channel in channels))
        result.wall_seconds = time.perf_counter() - started
        during = cpu.now() - cpu_before
        result.busy = during / max(result.wall_seconds, 1e-9)
        await asyncio.gather(*(channel.close() for channel in channels), return_exceptions=True)
        after, settling = await cpu.settle()
        result.cpu_seconds = cpu.net(during + after, result.wall_seconds + settling)
        results[name] = result
        print(f"  {progress(result)}", flush=True)
    return results


def progress(result: Result) -> str:
    failed = sum(result.failures.values())
    return (
        f"{result.path:<12} {len(result.ok)}/{len(result.samples)} ok in "
        f"{result.wall_seconds:.1f}s  TTFT p50 {result.ms('ttft', 0.5):.1f} ms "
        f"p99 {result.ms('ttft', 0.99):.1f} ms  total p50 {result.ms('total', 0.5):.0f} ms "
        f"p99 {result.ms('total', 0.99):.0f} ms  platform CPU {result.cpu_seconds:.1f}s, "
        f"{result.busy:.0%} of a core while streaming" + (f"  failed {failed}" if failed else "")
    )


async def preflight(paths: Paths, user: User) -> None:
    """One answer down every path, so that a platform that cannot stream stops the bench
    with the reason instead of a table of failures."""
    for name, opener in paths.openers.items():
        try:
            channel = await opener(user)
        except Exception as exc:
            raise SystemExit(f"{name}: cannot connect: {exc!r}") from exc
        try:
            sample = await guarded(channel)
        finally:
            await channel.close()
        if sample.error is not None:
            raise SystemExit(f"{name}: the first answer failed: {sample.error}")


async def run(stack: Stack, stub_url: str, memory: PeakMemory) -> None:
    users = await sign_up(stack, USERS)
    print(f"{len(users)} users signed up", flush=True)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        paths = Paths.build(session, stub_url, stack)
        await preflight(paths, users[0])
        cpu = PlatformCpu(memory.pids)
        await cpu.measure_idle()
        idle_kib = sum(status_kib(pid, "VmRSS") for pid in memory.pids)
        memory.start()
        sequential, sequential_cpu = await one_at_a_time(paths, users[0], cpu)
        concurrent = await all_at_once(paths, users, cpu)
        memory.stop()
    report(sequential, sequential_cpu, concurrent, idle_kib, memory, cpu.idle_rate)


def report(
    sequential: dict[str, Result],
    sequential_cpu: float,
    concurrent: dict[str, Result],
    idle_kib: int,
    memory: PeakMemory,
    idle_cpu_rate: float,
) -> None:
    print(
        f"\nStreamed answers of {TOKENS} tokens, {INTERVAL * 1000:.0f} ms apart at the provider "
        f"(embedded stack; the p99 of {SEQUENTIAL} samples is their maximum)"
    )
    for title, results in (("1 stream", sequential), (f"{CONCURRENT} streams", concurrent)):
        print(f"\n{title}")
        print(
            f"  {'path':<12}{'ok':>9}{'TTFT p50':>10}{'p99':>8}{'total p50':>11}{'p99':>8}"
            f"{'wall s':>8}{'CPU ms':>8}  failures"
        )
        for r in results.values():
            failures = ", ".join(f"{n} {reason}" for reason, n in r.failures.most_common())
            cpu = f"{r.cpu_seconds * 1000 / max(len(r.samples), 1):.0f}" if r.streams > 1 else "-"
            print(
                f"  {r.path:<12}{f'{len(r.ok)}/{len(r.samples)}':>9}"
                f"{r.ms('ttft', 0.5):>10.1f}{r.ms('ttft', 0.99):>8.1f}"
                f"{r.ms('total', 0.5):>11.0f}{r.ms('total', 0.99):>8.0f}"
                f"{r.wall_seconds:>8.1f}{cpu:>8}"
                f"  {failures or '-'}"
            )
        if results is sequential:
            answers = SEQUENTIAL * (len(sequential) - 1)
            print(
                f"  (milliseconds; wall s: the whole phase, every path; platform CPU: "
                f"{sequential_cpu:.1f} s for the {answers} answers through it, "
                f"{sequential_cpu * 1000 / answers:.0f} ms each, net of its idle use)"
            )
        else:
            print(
                "  (milliseconds; wall s: from the first request to the last answer; CPU ms: the "
                "platform process's CPU time per answer, including its work after the answers "
                f"until it is idle again, net of its idle use of {idle_cpu_rate:.1%} of a core)"
            )

    stub = sequential["stub"].median_ms("ttft")
    print("\nadded time to first token at 1 stream (median minus the stub's median)")
    for transport in ("sse", "ws"):
        chat = sequential[f"chat {transport}"].median_ms("ttft") - stub
        gateway = sequential[f"gateway {transport}"].median_ms("ttft") - stub
        verdict = "meets" if gateway <= GOAL_ADDED_TTFT_MS else "MISSES"
        print(
            f"  {transport.upper():<4} chat +{chat:.1f} ms   gateway + chat +{gateway:.1f} ms "
            f"({verdict} the {GOAL_ADDED_TTFT_MS:.0f} ms goal)"
        )
    failed = {name: sum(r.failures.values()) for name, r in concurrent.items()}
    if not any(failed.values()):
        print(f"\n{CONCURRENT} concurrent streams: every path finished with no error")
    else:
        listed = ", ".join(f"{name} {n}" for name, n in failed.items() if n)
        print(f"\n{CONCURRENT} concurrent streams: FAILURES ({listed})")
    hwm_kib = sum(status_kib(pid, "VmHWM") for pid in memory.pids)
    print(
        f"\nplatform memory (embedded: the chat service, the gateway and every other service in "
        f"one process): {idle_kib / 1024:.0f} MiB RSS before the load, peak "
        f"{memory.peak_kib / 1024:.0f} MiB during it (VmHWM {hwm_kib / 1024:.0f} MiB)"
    )


def main() -> None:
    started = time.monotonic()
    stub_process, stub_url = start_stub()
    print(
        f"stub provider at {stub_url}: {TOKENS} tokens, {INTERVAL * 1000:.0f} ms apart",
        flush=True,
    )
    workdir = Path(tempfile.mkdtemp(prefix="lyceum-bench-chat-"))
    stack = Stack(
        mode="embedded",
        workdir=workdir,
        env_overrides={
            "CHAT_PROVIDER_BASE_URL": stub_url,
            "CHAT_PROVIDER_API_KEY": PROVIDER_KEY,
            "CHAT_DAILY_TOKEN_LIMIT": "0",
            "CHAT_MAX_CONCURRENT_STREAMS": "1000",
            "RATE_LIMIT_DEFAULT": GENEROUS,
            "RATE_LIMIT_AUTH": GENEROUS,
            "RATE_LIMIT_ADMIN": GENEROUS,
            "ACCESS_TOKEN_TTL_SECONDS": "7200",
            "LOG_LEVEL": "WARNING",
        },
    )
    print(f"starting the embedded stack (log: {stack.log_path})", flush=True)
    try:
        stack.start()
        assert stack.process is not None
        memory = PeakMemory(descendants(stack.process.pid))
        asyncio.run(run(stack, stub_url, memory))
    finally:
        stack.stop()
        stub_process.terminate()
        stub_process.wait(timeout=10)
        if stub_process.stdout is not None:
            stub_process.stdout.close()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n(bench took {time.monotonic() - started:.0f}s)")


if __name__ == "__main__":
    main()
