"""`make bench-gateway`: what the gateway costs on top of the service behind it.

Starts the full stack (PostgreSQL, Redis, RabbitMQ; the gateway with its worker processes),
and nginx from the distribution as a plain reverse proxy to the same users service. Then wrk
drives an authenticated `GET /api/v1/users/me` with the same token down three paths, side
by side, round after round: straight to the users service, through the Lyceum gateway
(token check, revocation MGET and a Redis rate limit on every request), and through nginx.
Prints requests/s and p50/p99 latency per path, the ratios gateway/direct and
gateway/nginx, and the gateway's peak resident memory (summed over its processes).
"""

import asyncio
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import httpx

from shared.testing import Stack, free_port_block
from tests.conftest import _clean_full_stack as clean_full_stack

DURATION = os.environ.get("BENCH_DURATION", "10s")
WARMUP = "3s"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))
THREADS = 2
USERS_OFFSET = 2

NGINX_CONF = """
worker_processes 2;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    upstream users {{ server 127.0.0.1:{users_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://users;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


@dataclass
class Run:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int = 0
    # CPU time of the serving processes per request, when the caller measured it.
    cpu_us: float = 0.0


def ensure_tools() -> None:
    missing = [tool for tool in ("nginx", "wrk") if shutil.which(tool) is None]
    if not missing:
        return
    print(f"installing {', '.join(missing)} from the distribution's packages", flush=True)
    packages = ["nginx-light" if tool == "nginx" else tool for tool in missing]
    install = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    if subprocess.run(install, check=False).returncode != 0:  # noqa: S603
        subprocess.run(["apt-get", "update"], check=True)  # noqa: S607
        subprocess.run(install, check=True)  # noqa: S603


def start_nginx(workdir: Path, users_port: int) -> tuple[subprocess.Popen[bytes], int]:
    prefix = workdir / "nginx"
    prefix.mkdir(parents=True, exist_ok=True)
    port = free_port_block(1)
    config = prefix / "nginx.conf"
    config.write_text(NGINX_CONF.format(prefix=prefix, users_port=users_port, port=port))
    process = subprocess.Popen(  # noqa: S603
        ["nginx", "-c", str(config), "-p", str(prefix), "-g", "daemon off;"],  # noqa: S607
        stderr=subprocess.DEVNULL,
    )
    return process, port


def wrk(
    url: str,
    token: str | None,
    duration: str,
    *,
    connections: int = CONNECTIONS,
    threads: int = THREADS,
) -> Run:
    headers = ["-H", f"Authorization: Bearer {token}"] if token else []
    output = subprocess.run(  # noqa: S603
        [  # noqa: S607
            "wrk",
            f"-t{min(threads, connections)}",
            f"-c{connections}",
            f"-d{duration}",
            "--latency",
            *headers,
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    if socket_errors:
        print(f"  ({url}: socket errors {socket_errors.group(1)})", flush=True)
    requests = re.search(r"Requests/sec:\s+([\d.]+)", output)
    assert requests, output
    total = re.search(r"(\d+) requests in", output)
    return Run(
        requests_per_second=float(requests.group(1)),
        p50_ms=latency_ms(output, "50%"),
        p99_ms=latency_ms(output, "99%"),
        errors=int(errors.group(1)) if errors else 0,
        requests=int(total.group(1)) if total else 0,
    )


def latency_ms(output: str, percentile: str) -> float:
    found = re.search(rf"^\s+{re.escape(percentile)}\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
    assert found, output
    value, unit = float(found.group(1)), found.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        queue.extend(children.get(current, []))
    return found


def gateway_pids(stack: Stack) -> list[int]:
    assert stack.process is not None
    for pid in descendants(stack.process.pid):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"-m" in command and b"gateway" in command:
            return descendants(pid)
    raise RuntimeError("gateway process not found")


def status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class PeakMemory:
    """Samples the summed RSS of the gateway's processes while the benchmark runs."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            total = sum(status_kib(pid, "VmRSS") for pid in self.pids)
            self.peak_kib = max(self.peak_kib, total)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


async def signed_in_token(stack: Stack) -> str:
    email = f"bench-{os.getpid()}@example.com"
    password = "bench-password-123"  # noqa: S105
    async with stack.client() as client:
        await client.post(
            "/api/v1/auth/register", json={"email": email, "password": password, "name": "Bench"}
        )
        login = await client.post("/api/v1/auth/login", json={"email": email, "password": password})
        login.raise_for_status()
        token: str = login.json()["access_token"]
        for _ in range(100):
            me = await client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
            if me.status_code == 200:
                return token
            await asyncio.sleep(0.1)
    raise RuntimeError("the profile was never created")


def main() -> None:
    ensure_tools()
    workdir = Path(tempfile.mkdtemp(prefix="lyceum-bench-gateway-"))
    generous = "100000000/minute"
    stack = Stack(
        mode="full",
        workdir=workdir,
        env_overrides={
            "RATE_LIMIT_DEFAULT": generous,
            "RATE_LIMIT_AUTH": generous,
            "LOG_LEVEL": "WARNING",
        },
    )
    print(f"starting the full stack (log: {stack.log_path})", flush=True)
    stack.start()
    nginx = None
    try:
        token = asyncio.run(signed_in_token(stack))
        nginx, nginx_port = start_nginx(workdir, stack.base_port + USERS_OFFSET)
        paths = {
            "direct": f"{stack.service_url(USERS_OFFSET)}/api/v1/users/me",
            "gateway": f"{stack.url}/api/v1/users/me",
            "nginx": f"http://127.0.0.1:{nginx_port}/api/v1/users/me",
        }
        for name, url in paths.items():
            check = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=5)
            assert check.status_code == 200, f"{name}: {check.status_code} {check.text}"
        pids = gateway_pids(stack)
        memory = PeakMemory(pids)
        memory.start()
        print(
            f"wrk -t{THREADS} -c{CONNECTIONS} -d{DURATION}, {ROUNDS} rounds, "
            f"gateway processes: {len(pids)}",
            flush=True,
        )
        for url in paths.values():
            wrk(url, token, WARMUP)
        runs: dict[str, list[Run]] = {name: [] for name in paths}
        for round_number in range(1, ROUNDS + 1):
            for name, url in paths.items():
                run = wrk(url, token, DURATION)
                runs[name].append(run)
                print(
                    f"  round {round_number} {name:<8} {run.requests_per_second:>9.0f} req/s  "
                    f"p50 {run.p50_ms:6.2f} ms  p99 {run.p99_ms:6.2f} ms  "
                    f"non-2xx {run.errors}",
                    flush=True,
                )
        memory.stop()
        report(runs, memory.peak_kib, sum(status_kib(pid, "VmHWM") for pid in pids), len(pids))
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.wait(timeout=10)
        stack.stop()
        asyncio.run(clean_full_stack(stack))
        shutil.rmtree(workdir, ignore_errors=True)


def report(runs: dict[str, list[Run]], peak_kib: int, hwm_kib: int, processes: int) -> None:
    summary = {
        name: Run(
            requests_per_second=statistics.mean(r.requests_per_second for r in results),
            p50_ms=statistics.mean(r.p50_ms for r in results),
            p99_ms=statistics.mean(r.p99_ms for r in results),
            errors=sum(r.errors for r in results),
        )
        for name, results in runs.items()
    }
    print("\nGET /api/v1/users/me, authenticated (mean over rounds)")
    print(f"  {'path':<8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    for name, run in summary.items():
        print(
            f"  {name:<8} {run.requests_per_second:>9.0f} {run.p50_ms:>8.2f} "
            f"{run.p99_ms:>8.2f} {run.errors:>8}"
        )
    gateway, direct, nginx = summary["gateway"], summary["direct"], summary["nginx"]
    print("\nratios")
    for label, other in (("gateway/direct", direct), ("gateway/nginx", nginx)):
        print(
            f"  {label:<15} req/s x{gateway.requests_per_second / other.requests_per_second:.2f}"
            f"  p50 x{gateway.p50_ms / other.p50_ms:.2f}  p99 x{gateway.p99_ms / other.p99_ms:.2f}"
        )
    print(
        f"\ngateway peak memory: {peak_kib / 1024:.1f} MiB RSS summed over {processes} processes "
        f"(sum of per-process peaks: {hwm_kib / 1024:.1f} MiB)"
    )


if __name__ == "__main__":
    main()
