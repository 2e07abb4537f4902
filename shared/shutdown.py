"""Graceful shutdown: what a service does between SIGTERM and its exit.

`GracefulServer` is uvicorn's server with the order Lyceum needs, and `Shutdown` is how the
app takes part (the server finds it in the app's lifespan state):

1. `/ready` answers 503 at once (`Shutdown.stopping`); for SHUTDOWN_DELAY_SECONDS the
   process still serves everything else, while load balancers take it out of rotation.
2. The listener closes. Idle keep-alive connections close, and requests in flight are
   answered with `Connection: close`.
3. The app drains (`Shutdown.drain`, its hooks side by side): consumers take no more
   deliveries and their running handlers commit and ack; chat streams end with a last
   event and its WebSockets close with 1012.
4. uvicorn waits for the requests still in flight, then the lifespan ends: the outbox
   relay publishes its last batch, the bus and the database close.

All of it within SHUTDOWN_GRACE_SECONDS after the delay; the last STOP_RESERVE_SECONDS
(at most a quarter of the grace) are kept for step 4's lifespan. A shutdown that ran to its
end exits with status 0.
"""

import asyncio
import contextlib
import math
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import uvicorn

from shared.logging import get_logger

log = get_logger(__name__)

# The key of the app's `Shutdown` in its lifespan state (ASGI `state`).
SHUTDOWN_STATE = "lyceum.shutdown"
STOP_RESERVE_SECONDS = 3.0

DrainHook = Callable[[], Awaitable[None]]


class Shutdown:
    """The app's side of a graceful shutdown: whether it has begun, its deadline, and what
    must run when the process stops taking connections."""

    def __init__(self, grace_seconds: float) -> None:
        self._grace = grace_seconds
        self._deadline: float | None = None
        self._drain_by: float | None = None
        self._draining = asyncio.Event()
        self._hooks: list[DrainHook] = []
        self._drained: asyncio.Task[None] | None = None

    @property
    def stopping(self) -> bool:
        return self._deadline is not None

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    async def accepting(self) -> bool:
        """A readiness check: false from the moment the shutdown begins."""
        return not self.stopping

    def begin(self, deadline: float, drain_by: float) -> None:
        """`deadline` and `drain_by` are `time.monotonic()` values: when the process must
        have stopped, and when the drain must be over."""
        if self._deadline is None:
            self._deadline, self._drain_by = deadline, drain_by
            log.info("shutdown_started", within_seconds=round(deadline - time.monotonic(), 1))

    def remaining(self) -> float:
        """Seconds until the deadline (the whole grace if the shutdown has not begun)."""
        if self._deadline is None:
            return self._grace
        return max(0.0, self._deadline - time.monotonic())

    def drain_remaining(self) -> float:
        if self._drain_by is None:
            return max(0.0, self._grace - reserve_for(self._grace))
        return max(0.0, self._drain_by - time.monotonic())

    def on_drain(self, hook: DrainHook) -> None:
        self._hooks.append(hook)

    async def wait_draining(self) -> None:
        await self._draining.wait()

    async def drain(self) -> None:
        """Runs the drain hooks once, side by side, and waits for them until the drain must
        be over; a hook still running then goes on while the shutdown continues."""
        if self._drained is None:
            if self._deadline is None:
                now = time.monotonic()
                self.begin(now + self._grace, now + self._grace - reserve_for(self._grace))
            self._draining.set()
            self._drained = asyncio.create_task(self._run_hooks())
        done, _ = await asyncio.wait({self._drained}, timeout=self.drain_remaining())
        if not done:
            log.warning("shutdown_drain_unfinished")

    async def _run_hooks(self) -> None:
        results = await asyncio.gather(*(hook() for hook in self._hooks), return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                log.error("shutdown_drain_failed", error=repr(result))


def reserve_for(grace_seconds: float) -> float:
    return min(STOP_RESERVE_SECONDS, grace_seconds / 4)


def bind_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """The listening socket, bound before uvicorn starts. With `reuse_port`, several
    processes listen on one port (SO_REUSEPORT): the kernel spreads new connections over
    them, and once one closes its listener the others get them all."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


class GracefulServer(uvicorn.Server):
    """uvicorn's server, shutting down in the order of this module's steps."""

    def __init__(
        self, config: uvicorn.Config, *, delay_seconds: float = 0.0, grace_seconds: float = 20.0
    ) -> None:
        super().__init__(config)
        self.delay_seconds = delay_seconds
        self.grace_seconds = grace_seconds

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """As uvicorn's, except that once the shutdown is over the signal is not raised
        again (uvicorn does, so that the process dies of it): a clean stop exits with 0."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        originals = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        state = getattr(getattr(self, "lifespan", None), "state", {})
        app = state.get(SHUTDOWN_STATE)
        if not isinstance(app, Shutdown):
            app = None
        now = time.monotonic()
        deadline = now + self.delay_seconds + self.grace_seconds
        reserve = reserve_for(self.grace_seconds)
        if app is not None:
            app.begin(deadline, deadline - reserve)
        if self.delay_seconds > 0 and not self.force_exit:
            await asyncio.sleep(self.delay_seconds)
        for server in self.servers:
            server.close()
        self._finish_http_connections()
        if app is not None:
            await app.drain()
        # uvicorn's own shutdown from here: the WebSockets left are closed (1012), the
        # requests still in flight get what remains, then the lifespan ends.
        self.config.timeout_graceful_shutdown = max(
            1, math.floor(deadline - time.monotonic() - reserve)
        )
        await super().shutdown(sockets)

    def _finish_http_connections(self) -> None:
        """Idle keep-alive connections close now; a request in flight is answered, with
        `Connection: close`. WebSockets are left to the app's drain."""
        websocket_protocol: Any = self.config.ws_protocol_class
        for connection in list(self.server_state.connections):
            if websocket_protocol is not None and isinstance(connection, websocket_protocol):
                continue
            connection.shutdown()
