"""One process per service on PostgreSQL, Redis and RabbitMQ, as in production.

The launcher supervises them like an orchestrator would: a service that exits is started
again after `restart_seconds`; each one's pid is in `<var_dir>/pids/<name>.pid`."""

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from launcher.infrastructure import database_url, prepare
from launcher.migrations import migrate_full
from launcher.options import LaunchOptions
from launcher.readiness import print_ready_banner, wait_healthy
from shared.registry import AUTH, CHAT, GATEWAY, SERVICES, USERS, Component


def service_environment(options: LaunchOptions, entry: Component) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HOST=options.host,
        PORT=str(options.port(entry.port_offset)),
        REDIS_URL=options.redis_url,
        AMQP_URL=options.amqp_url,
        EVENTS_EXCHANGE=options.events_exchange,
        QUEUE_PREFIX=options.queue_prefix,
        JWKS_URL=options.jwks_url(),
        # Each process its own `service.name` in the traces it exports.
        OTEL_SERVICE_NAME=entry.name,
    )
    if entry is GATEWAY:
        env["UPSTREAMS"] = json.dumps(
            options.upstreams([(e.name, e.port_offset) for e in SERVICES])
        )
        env["WORKERS"] = str(options.gateway_workers)
    else:
        env["DATABASE_URL"] = database_url(options, entry.name)
    if entry is CHAT:
        env["DOCUMENTS_URL"] = options.documents_url()
    if entry is USERS:
        env["AUTH_URL"] = options.auth_url()
    if entry is AUTH:
        env["PUBLIC_URL"] = options.public_link_base()
    return env


def start_service(
    options: LaunchOptions, entry: Component, pid_dir: Path
) -> "subprocess.Popen[bytes]":
    process = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", entry.package],
        env=service_environment(options, entry),
        start_new_session=True,
    )
    (pid_dir / f"{entry.name}.pid").write_text(str(process.pid))
    return process


async def run_full(options: LaunchOptions, pid_dir: Path) -> None:
    print("Preparing the full stack:", flush=True)
    await prepare(options)
    await migrate_full(options)
    entries = {entry.name: entry for entry in [*SERVICES, GATEWAY]}
    processes: dict[str, subprocess.Popen[bytes]] = {}
    exited_at: dict[str, float] = {}
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        for name, entry in entries.items():
            processes[name] = start_service(options, entry, pid_dir)
        await asyncio.gather(
            *(wait_healthy(e.name, options.url(e.port_offset)) for e in entries.values())
        )
        print_ready_banner(options, "Lyceum (full stack)")
        while not stop.is_set():
            for name, process in processes.items():
                if process.poll() is None:
                    continue
                if name not in exited_at:
                    exited_at[name] = loop.time()
                    print(
                        f"service exited: {name} (code {process.returncode}); "
                        f"restarting in {options.restart_seconds:g}s",
                        file=sys.stderr,
                        flush=True,
                    )
                elif loop.time() - exited_at[name] >= options.restart_seconds:
                    del exited_at[name]
                    processes[name] = start_service(options, entries[name], pid_dir)
                    print(f"service restarted: {name}", file=sys.stderr, flush=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)
    finally:
        print("\nStopping Lyceum...", flush=True)
        await stop_processes(
            processes, options.shutdown_delay_seconds + options.shutdown_grace_seconds + 5
        )


async def stop_processes(
    processes: dict[str, "subprocess.Popen[bytes]"], within_seconds: float
) -> None:
    """SIGTERM, and SIGKILL for what has not stopped within `within_seconds`."""
    for process in processes.values():
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
    deadline = asyncio.get_running_loop().time() + within_seconds
    while asyncio.get_running_loop().time() < deadline:
        if all(process.poll() is not None for process in processes.values()):
            return
        await asyncio.sleep(0.1)
    for process in processes.values():
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
