"""One process per service on PostgreSQL, Redis and RabbitMQ, as in production."""

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys

from launcher.infrastructure import database_url, prepare
from launcher.options import LaunchOptions
from launcher.readiness import wait_healthy
from launcher.registry import GATEWAY, SERVICES, ServiceEntry


def service_environment(options: LaunchOptions, entry: ServiceEntry) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HOST=options.host,
        PORT=str(options.port(entry.port_offset)),
        REDIS_URL=options.redis_url,
        AMQP_URL=options.amqp_url,
        EVENTS_EXCHANGE=options.events_exchange,
        QUEUE_PREFIX=options.queue_prefix,
        JWKS_URL=options.jwks_url(),
    )
    if entry is GATEWAY:
        env["UPSTREAMS"] = json.dumps(
            options.upstreams([(e.name, e.port_offset) for e in SERVICES])
        )
        env["WORKERS"] = str(options.gateway_workers)
    else:
        env["DATABASE_URL"] = database_url(options, entry.name)
    return env


async def run_full(options: LaunchOptions) -> None:
    print("Preparing the full stack:", flush=True)
    await prepare(options)
    processes: dict[str, subprocess.Popen[bytes]] = {}
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        for entry in [*SERVICES, GATEWAY]:
            processes[entry.name] = subprocess.Popen(  # noqa: ASYNC220, S603
                [sys.executable, "-m", entry.package],
                env=service_environment(options, entry),
                start_new_session=True,
            )
        await asyncio.gather(
            *(wait_healthy(e.name, options.url(e.port_offset)) for e in [*SERVICES, GATEWAY])
        )
        print(f"\nLyceum (full stack) is ready: {options.url(0)}  (Ctrl-C stops it)", flush=True)
        while not stop.is_set():
            exited = [name for name, process in processes.items() if process.poll() is not None]
            if exited:
                print(f"service exited: {', '.join(exited)}", file=sys.stderr, flush=True)
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
    finally:
        print("\nStopping Lyceum...", flush=True)
        await stop_processes(processes)


async def stop_processes(processes: dict[str, "subprocess.Popen[bytes]"]) -> None:
    for process in processes.values():
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
    for _ in range(100):
        if all(process.poll() is not None for process in processes.values()):
            return
        await asyncio.sleep(0.1)
    for process in processes.values():
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
