"""Every service in one process and one event loop, each on its own port, sharing the
in-process bus and in-memory stores; SQLite files under `var/`."""

import asyncio
import contextlib
import math
import os
import signal
from collections.abc import Generator
from pathlib import Path

import uvicorn

from launcher.migrations import embedded_database_url, migrate_embedded
from launcher.options import LaunchOptions
from launcher.readiness import print_ready_banner, wait_healthy
from shared.events import process_bus
from shared.logging import service_context
from shared.registry import AUTH, CHAT, GATEWAY, SERVICES, USERS, Service
from shared.service import KEEP_ALIVE_SECONDS
from shared.settings import ServiceSettings
from shared.shutdown import GracefulServer


class EmbeddedServer(GracefulServer):
    """The launcher, not each server, owns Ctrl-C; then each server shuts down as
    shared/shutdown.py says, all of them at once."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def run_embedded(options: LaunchOptions, var_dir: Path) -> None:
    # One process, so one `service.name` for every span; `lyceum.service` tells them apart.
    os.environ.setdefault("OTEL_SERVICE_NAME", "lyceum")
    common = {
        "host": options.host,
        "redis_url": None,
        "amqp_url": None,
        "queue_prefix": options.queue_prefix,
        "jwks_url": options.jwks_url(),
    }
    bus = process_bus(options.event_delivery_limit)
    servers: list[tuple[str, str, EmbeddedServer]] = []
    for entry in SERVICES:
        own = _own_settings(options, entry)
        settings = entry.settings(
            **common,
            **own,
            port=options.port(entry.port_offset),
            database_url=embedded_database_url(var_dir, entry),
        )
        subscription = entry.subscription(options.queue_prefix)
        if subscription is not None:
            await bus.declare(subscription)
        servers.append(
            (
                entry.name,
                options.url(entry.port_offset),
                _server(entry.create_app(settings), settings),
            )
        )
    gateway_settings = GATEWAY.settings(
        **common,
        port=options.gateway_port,
        upstreams=options.upstreams([(e.name, e.port_offset) for e in SERVICES]),
    )
    servers.append(
        (
            "gateway",
            options.url(0),
            _server(GATEWAY.create_app(gateway_settings), gateway_settings),
        )
    )

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    print(f"Starting Lyceum (embedded mode, data in {var_dir})", flush=True)
    # Every schema is at its latest revision before any service starts.
    await migrate_embedded(var_dir)
    # Each server runs in a context naming its service: uvicorn's own lines, the lifespan
    # and every request of that server log it.
    tasks = [
        asyncio.create_task(server.serve(), name=name, context=service_context(name))
        for name, _, server in servers
    ]
    try:
        await asyncio.gather(*(wait_healthy(name, url) for name, url, _ in servers))
        print_ready_banner(options, "Lyceum")
        done_waiting = asyncio.create_task(stop.wait())
        await asyncio.wait([done_waiting, *tasks], return_when=asyncio.FIRST_COMPLETED)
    finally:
        print("\nStopping Lyceum...", flush=True)
        for _, _, server in servers:
            server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        await bus.stop_consuming()
        await bus.close()


def _own_settings(options: LaunchOptions, entry: Service) -> dict[str, str]:
    """Where a service finds the others it calls, in this stack."""
    if entry is CHAT:
        return {"documents_url": options.documents_url()}
    if entry is USERS:
        return {"auth_url": options.auth_url()}
    if entry is AUTH:
        return {"public_url": options.public_link_base()}
    return {}


def _server(app: object, settings: ServiceSettings) -> EmbeddedServer:
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        server_header=False,
        date_header=False,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_seconds),
    )
    # No delay: nothing balances load over an embedded stack.
    return EmbeddedServer(config, grace_seconds=settings.shutdown_grace_seconds)
