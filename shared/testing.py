"""Helpers for tests that run the real platform: a launched stack, free ports, and a TCP
proxy that can cut a service's connections to simulate an outage."""

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from shared import registry

PORTS_PER_STACK = 8


def _ephemeral_ports_start() -> int:
    """Where the kernel's range of ports for outgoing connections begins (Linux; the IANA
    range's start elsewhere)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 49152


def free_port_block(size: int = PORTS_PER_STACK) -> int:
    """A base port such that base .. base+size-1 are free on 127.0.0.1, below the ephemeral
    range: a port in it may be free when checked, then taken as some outgoing connection's
    source port before the server binds it."""
    highest = max(_ephemeral_ports_start(), 20000 + 10 * size)
    for _ in range(200):
        base = random.randrange(10000, highest - size)  # noqa: S311
        sockets = []
        try:
            for port in range(base, base + size):
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("127.0.0.1", port))
                sockets.append(sock)
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no free port block")


def wait_until(
    condition: Callable[[], Any], *, within_seconds: float = 15.0, interval: float = 0.1
) -> Any:
    deadline = time.monotonic() + within_seconds
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within_seconds}s")
        time.sleep(interval)


def token_claims(**overrides: Any) -> dict[str, Any]:
    """The claims of a valid Lyceum access token for a new student, valid for ten minutes;
    `overrides` change or add claims."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "lyceum",
        "aud": "lyceum-api",
        "sub": str(uuid.uuid4()),
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": str(uuid.uuid4()),
        "roles": ["student"],
    }
    claims.update(overrides)
    return claims


async def eventually(
    condition: Callable[[], Any], *, within_seconds: float = 15.0, interval: float = 0.1
) -> Any:
    deadline = time.monotonic() + within_seconds
    while True:
        result = await condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within_seconds}s")
        await asyncio.sleep(interval)


class TcpProxy:
    """Forwards a local port to a target, in a thread of its own; `cut()` drops every
    connection and refuses new ones until `restore()`, as if the target had stopped."""

    def __init__(self, target_host: str, target_port: int, listen_port: int | None = None) -> None:
        self.target = (target_host, target_port)
        self.port = listen_port or free_port_block(1)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self) -> "TcpProxy":
        self._thread.start()
        self._call(self._listen())
        return self

    def cut(self) -> None:
        self._call(self._cut())

    def restore(self) -> None:
        self._call(self._listen())

    def stop(self) -> None:
        self._call(self._cut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            target_reader, target_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, target_writer))

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.transport.abort()
            self._writers.discard(sink)

        await asyncio.gather(pipe(reader, target_writer), pipe(target_reader, writer))


@dataclass
class Stack:
    """The platform launched in a subprocess, in `embedded` or `full` mode."""

    mode: str
    workdir: Path
    env_overrides: dict[str, str] = field(default_factory=dict)
    base_port: int = field(default_factory=free_port_block)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    process: subprocess.Popen[bytes] | None = None
    proxies: dict[str, TcpProxy] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.base_port}"

    def service_url(self, service: str | int) -> str:
        """A service's own URL, by its name in the registry (or its port offset)."""
        offset = service if isinstance(service, int) else registry.component(service).port_offset
        return f"http://127.0.0.1:{self.base_port + offset}"

    def database_url(self, service: str) -> str:
        """Where the stack keeps a service's database (the launcher migrated it)."""
        if self.mode == "full":
            database = registry.service(service).database_name(self.database_prefix)
            return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}"
        return f"sqlite+aiosqlite:///{self.workdir / 'var' / f'{service}.db'}"

    @property
    def queue_prefix(self) -> str:
        return f"test-{self.run_id}"

    @property
    def exchange(self) -> str:
        return f"test-{self.run_id}.events"

    @property
    def database_prefix(self) -> str:
        return f"lyceum_test_{self.run_id}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"stack-{self.mode}.log"

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            GATEWAY_PORT=str(self.base_port),
            VAR_DIR=str(self.workdir / "var"),
            DATABASE_PREFIX=self.database_prefix,
            QUEUE_PREFIX=self.queue_prefix,
            EVENTS_EXCHANGE=self.exchange,
            LOG_LEVEL="INFO",
        )
        env.update(self.env_overrides)
        return env

    def start(self, within_seconds: float = 90.0) -> "Stack":
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "launcher", self.mode],
            env=self.environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def gateway_ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"stack exited early; log:\n{self.log_tail()}")
            return b"is ready" in self.log_path.read_bytes()

        wait_until(gateway_ready, within_seconds=within_seconds, interval=0.2)
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def service_pid(self, name: str) -> int:
        """The pid of one service's process (full mode: the launcher restarts it once it
        exits, after RESTART_SECONDS)."""
        return int((self.workdir / "var" / "pids" / f"{name}.pid").read_text())

    def kill_service(self, name: str, sig: int = signal.SIGKILL) -> int:
        pid = self.service_pid(name)
        os.killpg(pid, sig)
        return pid

    async def wait_service_restarted(self, name: str, old_pid: int, service_url: str) -> None:
        async def restarted_and_healthy() -> bool:
            if self.service_pid(name) == old_pid:
                return False
            try:
                async with httpx.AsyncClient(timeout=1.0) as client:
                    return (await client.get(f"{service_url}/health")).status_code == 200
            except httpx.HTTPError:
                return False

        await eventually(restarted_and_healthy, within_seconds=60, interval=0.2)

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=15.0, **kwargs)
