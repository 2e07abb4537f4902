"""What a chat client does: sign in, send messages, read Server-Sent Events and WebSocket
frames."""

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from shared.testing import Stack
from tests.e2e.helpers import bearer, login, register


@dataclass
class Sse:
    kind: str
    id: str | None
    data: dict[str, Any]


@dataclass
class SseStream:
    status: int
    headers: dict[str, str]
    events: list[Sse] = field(default_factory=list)
    comments: int = 0
    # The response's lines, read across several calls of `read_sse`.
    lines: AsyncIterator[str] | None = None

    @property
    def deltas(self) -> list[Sse]:
        return [event for event in self.events if event.kind == "chat_delta"]

    @property
    def text(self) -> str:
        return "".join(event.data["delta"] for event in self.deltas)

    @property
    def last(self) -> Sse:
        return self.events[-1]


async def chat_user(client: httpx.AsyncClient) -> dict[str, str]:
    """A new student's Authorization header (no profile needed by chat)."""
    account = await register(client)
    return bearer(await login(client, account["email"]))


async def read_sse(
    response: httpx.Response, stream: SseStream, *, stop_after_deltas: int | None = None
) -> SseStream:
    """Parses events until the stream ends (or after `stop_after_deltas` deltas)."""
    kind, event_id, data = "message", None, []
    if stream.lines is None:
        stream.lines = response.aiter_lines()
    async for line in stream.lines:
        if line.startswith(":"):
            stream.comments += 1
        elif line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif line == "" and data:
            stream.events.append(Sse(kind, event_id, json.loads("\n".join(data))))
            kind, event_id, data = "message", None, []
            if stop_after_deltas is not None and len(stream.deltas) >= stop_after_deltas:
                return stream
    return stream


async def stream_post(
    client: httpx.AsyncClient,
    path: str,
    body: dict[str, Any],
    headers: dict[str, str],
    *,
    stop_after_deltas: int | None = None,
) -> SseStream:
    async with client.stream("POST", path, json=body, headers=headers) as response:
        stream = SseStream(response.status_code, dict(response.headers))
        if response.status_code != 200:
            await response.aread()
            stream.events.append(Sse("http_error", None, response.json()))
            return stream
        return await read_sse(response, stream, stop_after_deltas=stop_after_deltas)


async def stream_get(client: httpx.AsyncClient, path: str, headers: dict[str, str]) -> SseStream:
    async with client.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        return await read_sse(response, SseStream(response.status_code, dict(response.headers)))


def websocket_url(stack: Stack, query: str = "") -> str:
    url = stack.url.replace("http://", "ws://", 1) + "/ws"
    return f"{url}?{query}" if query else url


async def next_frame(socket: Any) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await socket.recv())
    return frame


async def frames_until_end(socket: Any) -> list[dict[str, Any]]:
    """Frames up to and including `chat_response` or `error`."""
    frames = []
    while True:
        frame = await next_frame(socket)
        frames.append(frame)
        if frame["type"] in ("chat_response", "error"):
            return frames
