"""What the stubs of other services share: an aiohttp server on 127.0.0.1, on a free port,
that also serves a JWKS (`jwks`, when given) so that the service under test needs nothing
else to verify its callers' tokens. A stub adds its own routes in `add_routes`."""

import socket
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from aiohttp import web


@dataclass
class StubServer:
    jwks: dict[str, Any] | None = None
    _runner: web.AppRunner | None = field(default=None, init=False, repr=False)
    _socket: socket.socket | None = field(default=None, init=False, repr=False)

    def add_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    @property
    def url(self) -> str:
        if self._socket is None:
            raise RuntimeError("the stub is not started")
        return f"http://127.0.0.1:{self._socket.getsockname()[1]}"

    async def start(self) -> Self:
        app = web.Application()
        self.add_routes(app)
        app.router.add_get("/jwks.json", self._jwks)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self._socket = sock
        await web.SockSite(self._runner, sock).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _jwks(self, _request: web.Request) -> web.Response:
        if self.jwks is None:
            raise web.HTTPNotFound()
        return web.json_response(self.jwks)
