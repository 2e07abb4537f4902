"""Webhook receivers for the end-to-end tests: small local HTTP servers that verify
Lyceum's signed deliveries with the `standardwebhooks` library, and the admin calls
that point endpoints at them."""

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from shared.testing import eventually
from tests.e2e.helpers import bearer

RECEIVER_HOST = "127.0.0.2"  # inside the test stacks' WEBHOOK_ALLOWED_NETWORKS
ENDPOINTS = "/api/v1/webhooks/endpoints"


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    payload: dict[str, Any] | None  # as the standardwebhooks verifier returned it
    answered: int | None = None

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


Answer = Callable[[Received, list[Received]], Awaitable[int]]


async def answer_ok(_received: Received, _earlier: list[Received]) -> int:
    return 204


class Receiver:
    """An outside webhook receiver on 127.0.0.2 that verifies like any Standard Webhooks
    consumer; `answer` decides the status of each request (or never answers)."""

    def __init__(self, answer: Answer = answer_ok) -> None:
        self.answer = answer
        self.secrets: list[str] = []
        self.received: list[Received] = []
        self._socket = socket.socket()
        self._socket.bind((RECEIVER_HOST, 0))
        self.port = self._socket.getsockname()[1]
        app = Starlette(routes=[Route("/hook", self._hook, methods=["POST"])])
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{RECEIVER_HOST}:{self.port}/hook"

    async def start(self) -> "Receiver":
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        await eventually(lambda: _true(self._server.started))
        return self

    async def stop(self) -> None:
        self._server.should_exit = True
        self._server.force_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, 10)

    def verify(self, body: bytes, headers: dict[str, str]) -> dict[str, Any] | None:
        for secret in self.secrets:
            with contextlib.suppress(WebhookVerificationError):
                payload: dict[str, Any] = Webhook(secret).verify(body, headers)
                return payload
        return None

    async def _hook(self, request: Request) -> Response:
        body = await request.body()
        headers = dict(request.headers)
        received = Received(headers, body, self.verify(body, headers))
        earlier = [r for r in self.received if r.webhook_id == received.webhook_id]
        self.received.append(received)
        received.answered = await self.answer(received, earlier)
        redirect = 300 <= received.answered < 400
        location = {"location": f"{request.url.path}/moved"} if redirect else None
        return Response(status_code=received.answered, headers=location)

    def payloads(self, event_type: str | None = None) -> list[dict[str, Any]]:
        return [
            r.payload
            for r in self.received
            if r.payload is not None and (event_type is None or r.payload["type"] == event_type)
        ]

    def about(self, key: str, value: str, event_type: str | None = None) -> list[Received]:
        """Verified requests whose `data[key]` is `value`."""
        return [
            r
            for r in self.received
            if r.payload is not None
            and r.payload["data"].get(key) == value
            and (event_type is None or r.payload["type"] == event_type)
        ]


async def _true(value: bool) -> bool:
    return value


@contextlib.asynccontextmanager
async def receiving(answer: Answer = answer_ok) -> AsyncIterator[Receiver]:
    receiver = await Receiver(answer).start()
    try:
        yield receiver
    finally:
        await receiver.stop()


async def create_endpoint(
    client: httpx.AsyncClient,
    admin: dict[str, Any],
    receiver: Receiver | None,
    event_types: list[str],
    url: str | None = None,
) -> dict[str, Any]:
    body = {"url": url or (receiver.url if receiver else ""), "event_types": event_types}
    response = await client.post(ENDPOINTS, headers=bearer(admin), json=body)
    assert response.status_code == 201, response.text
    endpoint: dict[str, Any] = response.json()
    assert response.headers["location"] == f"{ENDPOINTS}/{endpoint['id']}"
    if receiver is not None:
        receiver.secrets.append(endpoint["secret"])
    return endpoint


async def delete_endpoint(
    client: httpx.AsyncClient, admin: dict[str, Any], endpoint: dict[str, Any]
) -> None:
    response = await client.delete(f"{ENDPOINTS}/{endpoint['id']}", headers=bearer(admin))
    assert response.status_code == 204


async def deliveries(
    client: httpx.AsyncClient, admin: dict[str, Any], endpoint: dict[str, Any]
) -> list[dict[str, Any]]:
    response = await client.get(
        f"{ENDPOINTS}/{endpoint['id']}/deliveries", headers=bearer(admin), params={"per_page": 100}
    )
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


async def rename_burst(
    client: httpx.AsyncClient, tokens: dict[str, Any], names: list[str], pause: float = 0.0
) -> None:
    """One `user.updated` per name, each committed before the next."""
    for name in names:
        response = await client.patch(
            "/api/v1/users/me", headers=bearer(tokens), json={"name": name}
        )
        assert response.status_code == 200, response.text
        await asyncio.sleep(pause)


def about_names(receiver: Receiver, names: list[str]) -> list[Received]:
    """Verified `user.updated` requests about one of `names`."""
    wanted = set(names)
    return [
        r
        for r in receiver.received
        if r.payload is not None
        and r.payload["type"] == "user.updated"
        and r.payload["data"]["name"] in wanted
    ]


def names_delivered(receiver: Receiver, names: list[str]) -> set[str]:
    return {r.payload["data"]["name"] for r in about_names(receiver, names) if r.payload}
