"""`make bench-hotpaths`: what the platform's simplest requests cost, against FastAPI's own
ceiling, measured side by side in one run.

Starts a minimal FastAPI app (one route answering a small JSON, run by uvicorn with the
services' own options: `shared.service.UVICORN_OPTIONS`), the full stack (PostgreSQL, Redis,
RabbitMQ; the gateway with its workers; access logs on, as in production) and nginx from the
distribution as a plain reverse proxy to the users service. wrk then drives, round after
round and alternating the paths, at concurrency 1 and 32:

- the minimal app's route;
- the users service's `/health`, and the gateway's;
- `GET /api/v1/users/me` (a student's token), `GET /api/v1/courses?search=...&level=...`
  (the same student browsing the catalogue) and `GET /api/v1/webhooks/endpoints` (an
  admin's token), each straight to its service and through the gateway (token check,
  revocation lookup and a Redis rate limit on every request);
- `GET /api/v1/users/me` through nginx;
- the floor of `GET /api/v1/users/me` (bench/hotpath_floor.py): the token check, the
  revocation lookup and the profile's row with asyncpg, in the minimal app's FastAPI and
  nothing more, which no implementation of that request on this stack can undercut.

It prints req/s and p50/p99 latency per path (medians over the rounds) and the CPU time the
serving processes spent per request (the service; the gateway's workers or nginx too), a
figure that other load on the machine disturbs far less than req/s. Then the ratios to the
minimal app and what the gateway adds to the median at concurrency 1, and how far the floor
is from the minimal app and the users service from the floor.

`PROFILE=1` then records a py-spy profile of each path's server processes under load at
concurrency 32 (`PROFILE_FORMAT`: flamegraph SVG, the default, raw collapsed stacks or
speedscope), into `PROFILE_DIR` (default `var/profiles/...`).
`BENCH_DURATION` (5s per run) and `BENCH_ROUNDS` (3) trade time for steadier figures.

Everything it starts is stopped on the way out, Ctrl-C included: the processes, the stack's
databases, queues, exchanges and Redis keys.
"""

import asyncio
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from bench.bench_gateway import Run, descendants, ensure_tools, start_nginx, wrk
from launcher.options import LaunchOptions
from shared import registry
from shared.service import UVICORN_OPTIONS
from shared.testing import Stack, eventually, free_port_block, wait_until
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.conftest import _clean_full_stack as clean_full_stack

DURATION = os.environ.get("BENCH_DURATION", "5s")
WARMUP = "2s"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
CONCURRENCIES = (1, 32)
THREADS = 2
PROFILE = os.environ.get("PROFILE", "") not in ("", "0", "false", "no")
PROFILE_SECONDS = int(os.environ.get("PROFILE_SECONDS", "10"))
# py-spy's output: flamegraph (SVG), raw (collapsed stacks, for scripts) or speedscope.
PROFILE_FORMAT = os.environ.get("PROFILE_FORMAT", "flamegraph")
PROFILE_SUFFIX = {"flamegraph": "svg", "raw": "txt", "speedscope": "json"}
PASSWORD = "bench password 123"  # noqa: S105
GENEROUS = "100000000/minute"
COURSES = 40
COURSE_QUERY = "search=python&level=beginner"
WEBHOOK_ENDPOINTS = 10


def minimal_app() -> FastAPI:
    """The ceiling: FastAPI and uvicorn with nothing of Lyceum's."""
    app = FastAPI()

    @app.get("/")
    async def root() -> dict[str, str]:
        return {"status": "ok"}

    return app


def serve_app(factory: str, port: int) -> None:
    """Serves the app that `factory` ("module:function") makes as the services are served."""
    uvicorn.run(
        factory,
        factory=True,
        host="127.0.0.1",
        port=port,
        **UVICORN_OPTIONS,
    )


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    token: str | None
    # The processes that serve it: (label, pid, with its child processes).
    processes: Callable[[], list[tuple[str, int, bool]]]


class Processes:
    """What the benchmark starts besides the stack, stopped in reverse order."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, command: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        # A session of its own: Ctrl-C reaches the benchmark, which stops it in order.
        process = subprocess.Popen(command, start_new_session=True, **kwargs)  # noqa: S603
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.started):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self.started.clear()


# Runs an app of this benchmark in a process of its own: SERVE + ["module:factory", port].
SERVE = [sys.executable, "-m", "bench.bench_hotpaths", "serve"]


def start_minimal_app(processes: Processes) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port_block(1)
    url = f"http://127.0.0.1:{port}/"
    command = [*SERVE, "bench.bench_hotpaths:minimal_app", str(port)]
    return start_app(processes, "the minimal app", command, url), url


def start_floor_app(
    processes: Processes, stack: Stack, token: str
) -> tuple[subprocess.Popen[bytes], str]:
    """The floor of `GET /users/me` (bench/hotpath_floor.py) on the stack's Redis, auth keys
    and users database."""
    port = free_port_block(1)
    url = f"http://127.0.0.1:{port}/api/v1/users/me"
    environment = dict(
        os.environ,
        FLOOR_DATABASE_URL=stack.database_url("users").replace("+asyncpg", ""),
        FLOOR_REDIS_URL=LaunchOptions().redis_url,
        FLOOR_REVOCATION_PREFIX=f"{stack.queue_prefix}:revoked",
        FLOOR_JWKS_URL=f"{stack.service_url('auth')}/api/v1/auth/.well-known/jwks.json",
    )
    command = [*SERVE, "bench.hotpath_floor:floor_app", str(port)]
    process = start_app(processes, "the floor app", command, url, token, env=environment)
    return process, url


def start_app(
    processes: Processes,
    name: str,
    command: list[str],
    url: str,
    token: str | None = None,
    **options: Any,
) -> subprocess.Popen[bytes]:
    process = processes.start(command, stderr=subprocess.DEVNULL, **options)
    headers = bearer(token) if token else {}

    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited")
        try:
            return httpx.get(url, headers=headers, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(answers, within_seconds=20, interval=0.1)
    return process


async def prepare_data(stack: Stack) -> tuple[str, str]:
    """A student whose profile exists, a published catalogue, webhook endpoints; returns the
    student's and the admin's access tokens."""
    async with stack.client() as client:

        async def signed_in(email: str, role: str = "student") -> str:
            account = {"email": email, "password": PASSWORD, "name": "Bench", "role": role}
            (await client.post("/api/v1/auth/register", json=account)).raise_for_status()
            login = await client.post(
                "/api/v1/auth/login", json={"email": email, "password": PASSWORD}
            )
            login.raise_for_status()
            token: str = login.json()["access_token"]
            return token

        student = await signed_in(f"bench-student-{stack.run_id}@example.com")

        async def profile_ready() -> bool:
            me = await client.get("/api/v1/users/me", headers=bearer(student))
            return me.status_code == 200

        await eventually(profile_ready, within_seconds=30)
        teacher = bearer(
            await signed_in(f"bench-teacher-{stack.run_id}@example.com", role="instructor")
        )
        topics = ["Practical Python", "Databases", "Statistics", "Algorithms"]
        levels = ["beginner", "intermediate", "advanced"]
        for number in range(COURSES):
            course = await client.post(
                "/api/v1/courses",
                headers=teacher,
                json={
                    "title": f"{topics[number % len(topics)]} {number}",
                    "description": "Functions, classes, queries and the standard library.",
                    "level": levels[number % len(levels)],
                    "category": "programming",
                },
            )
            course.raise_for_status()
            lesson = await client.post(
                f"/api/v1/courses/{course.json()['id']}/lessons",
                headers=teacher,
                json={"title": "Getting started"},
            )
            lesson.raise_for_status()
            published = await client.post(
                f"/api/v1/courses/{course.json()['id']}/publish", headers=teacher
            )
            published.raise_for_status()
        login = await client.post(
            "/api/v1/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
        )
        login.raise_for_status()
        admin: str = login.json()["access_token"]
        for number in range(WEBHOOK_ENDPOINTS):
            endpoint = await client.post(
                "/api/v1/webhooks/endpoints",
                headers=bearer(admin),
                json={
                    "url": f"http://127.0.0.1:9/hooks/{number}",
                    "event_types": ["user.deleted"],
                    "description": f"bench {number}",
                },
            )
            endpoint.raise_for_status()
    return student, admin


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def targets(
    stack: Stack,
    minimal: tuple[int, str],
    floor: tuple[int, str],
    nginx: tuple[int, int],
    student: str,
    admin: str,
) -> list[Target]:
    def service(name: str) -> Callable[[], list[tuple[str, int, bool]]]:
        return lambda: [(name, stack.service_pid(name), False)]

    def gateway() -> list[tuple[str, int, bool]]:
        return [("gateway", stack.service_pid("gateway"), True)]

    def gateway_and(name: str) -> Callable[[], list[tuple[str, int, bool]]]:
        return lambda: [*gateway(), *service(name)()]

    minimal_pid, minimal_url = minimal
    floor_pid, floor_url = floor
    nginx_pid, nginx_port = nginx

    def nginx_and_users() -> list[tuple[str, int, bool]]:
        return [("nginx", nginx_pid, True), *service("users")()]

    users, courses, webhooks = (
        stack.service_url(name) for name in ("users", "courses", "webhooks")
    )
    me, catalogue = "/api/v1/users/me", f"/api/v1/courses?{COURSE_QUERY}"
    endpoints = "/api/v1/webhooks/endpoints"
    return [
        Target("minimal app", minimal_url, None, lambda: [("minimal", minimal_pid, False)]),
        Target("users /health", f"{users}/health", None, service("users")),
        Target("gateway /health", f"{stack.url}/health", None, gateway),
        Target("users/me direct", f"{users}{me}", student, service("users")),
        Target("users/me gateway", f"{stack.url}{me}", student, gateway_and("users")),
        Target("users/me nginx", f"http://127.0.0.1:{nginx_port}{me}", student, nginx_and_users),
        Target("users/me floor", floor_url, student, lambda: [("floor", floor_pid, False)]),
        Target("courses direct", f"{courses}{catalogue}", student, service("courses")),
        Target("courses gateway", f"{stack.url}{catalogue}", student, gateway_and("courses")),
        Target("webhooks direct", f"{webhooks}{endpoints}", admin, service("webhooks")),
        Target("webhooks gateway", f"{stack.url}{endpoints}", admin, gateway_and("webhooks")),
    ]


def cpu_seconds(processes: list[tuple[str, int, bool]]) -> float:
    """User and system CPU time used so far by the processes (and their children)."""
    ticks = 0
    for _, pid, children in processes:
        for each in descendants(pid) if children else [pid]:
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
                ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def measure(paths: list[Target]) -> dict[tuple[str, int], list[Run]]:
    for target in paths:
        answer = httpx.get(target.url, headers=bearer(target.token) if target.token else {})
        assert answer.status_code == 200, f"{target.name}: {answer.status_code} {answer.text}"
    print(f"warming up every path ({WARMUP} each at concurrency 32)", flush=True)
    for target in paths:
        wrk(target.url, target.token, WARMUP, connections=32, threads=THREADS)
    runs: dict[tuple[str, int], list[Run]] = {
        (target.name, c): [] for target in paths for c in CONCURRENCIES
    }
    total = ROUNDS * len(CONCURRENCIES) * len(paths)
    done = 0
    for round_number in range(1, ROUNDS + 1):
        # Alternate the order, so that no path always runs right after the same one.
        ordered = paths if round_number % 2 else list(reversed(paths))
        for connections in CONCURRENCIES:
            for target in ordered:
                processes = target.processes()
                used = cpu_seconds(processes)
                run = wrk(
                    target.url, target.token, DURATION, connections=connections, threads=THREADS
                )
                used = cpu_seconds(processes) - used
                run.cpu_us = used / max(1, run.requests) * 1e6
                runs[(target.name, connections)].append(run)
                done += 1
                print(
                    f"  [{done:>3}/{total}] round {round_number} c{connections:<3} "
                    f"{target.name:<18} {run.requests_per_second:>8.0f} req/s  "
                    f"p50 {run.p50_ms:7.2f} ms  p99 {run.p99_ms:7.2f} ms  "
                    f"cpu {run.cpu_us:5.0f} us/req"
                    + (f"  non-2xx {run.errors}" if run.errors else ""),
                    flush=True,
                )
    return runs


def median_run(results: list[Run]) -> Run:
    return Run(
        requests_per_second=statistics.median(r.requests_per_second for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
        errors=sum(r.errors for r in results),
        cpu_us=statistics.median(r.cpu_us for r in results),
    )


def report(paths: list[Target], runs: dict[tuple[str, int], list[Run]]) -> None:
    summary = {key: median_run(results) for key, results in runs.items()}
    print(f"\nGET, median of {ROUNDS} rounds of {DURATION} (wrk; c1: 1 connection, c32: 32)")
    print(
        "  (cpu: user and system CPU time of the processes serving the path per request, at"
        " c32:\n  the service; the gateway's or nginx's processes too; not PostgreSQL's or"
        " Redis')"
    )
    print(
        f"  {'path':<18} {'c1 req/s':>9} {'p50 ms':>7} {'p99 ms':>7}   "
        f"{'c32 req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'cpu us':>7} {'non-2xx':>8}"
    )
    for target in paths:
        one, many = summary[(target.name, 1)], summary[(target.name, 32)]
        print(
            f"  {target.name:<18} {one.requests_per_second:>9.0f} {one.p50_ms:>7.2f} "
            f"{one.p99_ms:>7.2f}   {many.requests_per_second:>9.0f} {many.p50_ms:>7.2f} "
            f"{many.p99_ms:>7.2f} {many.cpu_us:>7.0f} {one.errors + many.errors:>8}"
        )

    def rps(name: str, connections: int) -> float:
        return summary[(name, connections)].requests_per_second

    def p50(name: str) -> float:
        return summary[(name, 1)].p50_ms

    print("\nreq/s as a share of the minimal app's")
    for target in paths[1:]:
        print(
            f"  {target.name:<18} c1 x{rps(target.name, 1) / rps('minimal app', 1):.2f}   "
            f"c32 x{rps(target.name, 32) / rps('minimal app', 32):.2f}"
        )
    print("\nadded to the median at concurrency 1")
    for kind in ("users/me", "courses", "webhooks"):
        added = p50(f"{kind} gateway") - p50(f"{kind} direct")
        print(f"  {kind:<9} gateway {added:+.2f} ms")
    print(f"  users/me  nginx   {p50('users/me nginx') - p50('users/me direct'):+.2f} ms")
    print("\ngoals (GET /users/me)")
    added = p50("users/me gateway") - p50("users/me direct")
    direct = rps("users/me direct", 32) / rps("minimal app", 32)
    gateway = rps("users/me gateway", 32) / rps("users/me direct", 32)
    versus_nginx = rps("users/me gateway", 32) / rps("users/me nginx", 32)
    for label, figure, met in (
        ("gateway adds to p50 at c1 (<= 1 ms)", f"{added:+.2f} ms", added <= 1.0),
        ("direct / minimal app, c32 (>= 0.40)", f"x{direct:.2f}", direct >= 0.4),
        ("gateway / direct, c32 (>= 0.80)", f"x{gateway:.2f}", gateway >= 0.8),
        ("gateway / nginx, c32 (>= 1.00)", f"x{versus_nginx:.2f}", versus_nginx >= 1.0),
    ):
        print(f"  {label:<38} {figure:>9}  {'met' if met else 'NOT met'}")
    floor = rps("users/me floor", 32) / rps("minimal app", 32)
    print(
        f"\nthe floor of GET /users/me (token, revocation MGET and the row with asyncpg, in the\n"
        f"minimal app): x{floor:.2f} of the minimal app's req/s at c32; users/me direct reaches"
        f" x{rps('users/me direct', 32) / rps('users/me floor', 32):.2f} of the floor's"
    )


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if Path(found).exists():
        return found
    print("installing py-spy (pip) for the profiles", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "py-spy"], check=True)
    return str(Path(sys.executable).with_name("py-spy"))


def profile(paths: list[Target], processes: Processes) -> None:
    directory = Path(
        os.environ.get("PROFILE_DIR") or f"var/profiles/hotpaths-{time.strftime('%Y%m%d-%H%M%S')}"
    ).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    spy = py_spy()
    print(f"\nprofiling each path for {PROFILE_SECONDS}s at concurrency 32 (py-spy)", flush=True)
    for target in paths:
        slug = target.name.replace("/", "-").replace(" ", "-")
        recorders = []
        for label, pid, children in target.processes():
            output = (
                directory / f"{slug}.{label}.{PROFILE_SUFFIX.get(PROFILE_FORMAT, PROFILE_FORMAT)}"
            )
            command = [spy, "record", "--pid", str(pid), "--duration", str(PROFILE_SECONDS)]
            command += ["--rate", "200", "--nonblocking", "--format", PROFILE_FORMAT]
            command += ["--output", str(output)]
            if children:
                command.append("--subprocesses")
            recorder = processes.start(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            recorders.append((recorder, output))
        time.sleep(0.5)
        wrk(target.url, target.token, f"{PROFILE_SECONDS}s", connections=32, threads=THREADS)
        for recorder, output in recorders:
            try:
                _, errors = recorder.communicate(timeout=PROFILE_SECONDS + 30)
            except subprocess.TimeoutExpired:
                recorder.kill()
                _, errors = recorder.communicate()
            if recorder.returncode == 0 and output.exists():
                print(f"  {target.name:<18} {output}", flush=True)
            else:
                reason = errors.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
                print(f"  {target.name:<18} no profile: {reason[0]}", flush=True)
    print(f"profiles in {directory} (open the SVG flame graphs in a browser)", flush=True)


def interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> None:
    ensure_tools()
    workdir = Path(tempfile.mkdtemp(prefix="lyceum-bench-hotpaths-"))
    stack = Stack(
        mode="full",
        workdir=workdir,
        env_overrides={
            "RATE_LIMIT_DEFAULT": GENEROUS,
            "RATE_LIMIT_AUTH": GENEROUS,
            "RATE_LIMIT_ADMIN": GENEROUS,
            "LYCEUM_ADMIN_EMAIL": ADMIN_EMAIL,
            "LYCEUM_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "ACCESS_TOKEN_TTL_SECONDS": "86400",
            "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32",
            "LOG_FORMAT": "json",
        },
    )
    processes = Processes()
    paths: list[Target] = []
    runs = None
    # SIGTERM ends the run as Ctrl-C does: through the clean-up below.
    signal.signal(signal.SIGTERM, interrupt)
    try:
        print("starting the minimal FastAPI app", flush=True)
        minimal_process, minimal_url = start_minimal_app(processes)
        print(f"starting the full stack (log: {stack.log_path})", flush=True)
        stack.start()
        print("creating a student, an instructor's catalogue, webhook endpoints", flush=True)
        student, admin = asyncio.run(prepare_data(stack))
        floor_process, floor_url = start_floor_app(processes, stack, student)
        users_port = stack.base_port + registry.component("users").port_offset
        nginx, nginx_port = start_nginx(workdir, users_port)
        processes.started.append(nginx)
        paths = targets(
            stack,
            (minimal_process.pid, minimal_url),
            (floor_process.pid, floor_url),
            (nginx.pid, nginx_port),
            student,
            admin,
        )
        print(
            f"measuring {len(paths)} paths x {len(CONCURRENCIES)} concurrencies x "
            f"{ROUNDS} rounds of {DURATION}",
            flush=True,
        )
        runs = measure(paths)
        if PROFILE:
            profile(paths, processes)
    except KeyboardInterrupt:
        print("\ninterrupted", flush=True)
        runs = None
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("stopping and removing everything the benchmark started", flush=True)
        processes.stop_all()
        stack.stop()
        asyncio.run(clean_full_stack(stack))
        shutil.rmtree(workdir, ignore_errors=True)
    if runs is None:
        sys.exit(130)
    report(paths, runs)


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve_app(sys.argv[2], int(sys.argv[3]))
    else:
        main()
