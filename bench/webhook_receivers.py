"""Webhook receivers for `make bench-webhooks`, cheap enough not to be what is measured:
each is a process of its own (`python -m bench.webhook_receivers HOST`), an asyncio
protocol on uvloop with httptools parsing, that verifies the Standard Webhooks signature
of one request in `SAMPLE` (every request when the sample is 1) and answers 400 to one
that does not verify.

For each request it notes the latency from the payload's `timestamp` (the commit of the
change that made the event) to its arrival, under the tag before `#` in `data.name`, and
counts a `(endpoint, webhook-id)` seen before as a duplicate.

Paths: `POST /r/<endpoint>` receives, `POST /hang` never answers; `PUT /_secrets` takes
`{endpoint: secret}`, `GET /_count?tag=` answers `{"count", "first", "last"}` (arrival
times) and
`GET /_stats?tag=` the latencies, a sample body and the counters."""

import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import httptools
import uvloop
from standardwebhooks.webhooks import Webhook

SAMPLE = 10


@dataclass
class Tag:
    latencies: list[float] = field(default_factory=list)
    seen: set[tuple[str, str]] = field(default_factory=set)
    duplicates: int = 0
    first: float = 0.0
    last: float = 0.0
    sample_body: str = ""


@dataclass
class Receivers:
    sample: int = SAMPLE
    verifiers: dict[str, Webhook] = field(default_factory=dict)
    tags: dict[str, Tag] = field(default_factory=dict)
    received: int = 0
    verified: int = 0
    rejected: int = 0

    def receive(self, endpoint: str, headers: dict[str, str], body: bytes) -> int:
        arrived = time.time()
        self.received += 1
        if self.received % self.sample == 0:
            verifier = self.verifiers.get(endpoint)
            try:
                if verifier is None:
                    raise ValueError("no secret for this endpoint")
                verifier.verify(body, headers)
            except Exception:
                self.rejected += 1
                return 400
            self.verified += 1
        payload = json.loads(body)
        tag_name = str(payload["data"].get("name", "")).split("#")[0]
        tag = self.tags.setdefault(tag_name, Tag())
        key = (endpoint, headers.get("webhook-id", ""))
        if key in tag.seen:
            tag.duplicates += 1
            return 204
        tag.seen.add(key)
        committed = datetime.fromisoformat(payload["timestamp"]).timestamp()
        tag.latencies.append(arrived - committed)
        tag.first = tag.first or arrived
        tag.last = arrived
        if not tag.sample_body:
            tag.sample_body = body.decode()
        return 204

    def control(self, method: str, path: str, query: str, body: bytes) -> tuple[int, Any]:
        if method == "PUT" and path == "/_secrets":
            for endpoint, secret in json.loads(body).items():
                self.verifiers[endpoint] = Webhook(secret)
            return 204, None
        tag = self.tags.get(parse_qs(query).get("tag", [""])[0], Tag())
        if path == "/_count":
            return 200, {"count": len(tag.latencies), "first": tag.first, "last": tag.last}
        if path == "/_stats":
            return 200, {
                "latencies": tag.latencies,
                "last": tag.last,
                "duplicates": tag.duplicates,
                "sample_body": tag.sample_body,
                "received": self.received,
                "verified": self.verified,
                "rejected": self.rejected,
            }
        return 404, None


class Connection(asyncio.Protocol):
    def __init__(self, receivers: Receivers) -> None:
        self.receivers = receivers
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.hanging = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url, self.headers, self.body = b"", {}, []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        assert self.transport is not None
        method = self.parser.get_method().decode()
        parts = urlsplit(self.url.decode("latin-1"))
        body = b"".join(self.body)
        answer: Any = None
        if method == "POST" and parts.path.startswith("/r/"):
            status = self.receivers.receive(parts.path[3:], self.headers, body)
        elif method == "POST" and parts.path == "/hang":
            self.hanging = True  # the request stays unanswered until the client gives up
            return
        else:
            status, answer = self.receivers.control(method, parts.path, parts.query, body)
        content = b"" if answer is None else json.dumps(answer).encode()
        reason = {200: "OK", 204: "No Content", 400: "Bad Request", 404: "Not Found"}[status]
        head = f"HTTP/1.1 {status} {reason}\r\ncontent-length: {len(content)}\r\n"
        if content:
            head += "content-type: application/json\r\n"
        self.transport.write(head.encode() + b"\r\n" + content)
        if not self.parser.should_keep_alive():
            self.transport.close()


async def serve(host: str, sample: int) -> None:
    receivers = Receivers(sample=sample)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(receivers), host, 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    # Until the bench closes stdin.
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()


def main() -> None:
    host = sys.argv[1]
    sample = int(sys.argv[2]) if len(sys.argv) > 2 else SAMPLE
    uvloop.run(serve(host, sample))


if __name__ == "__main__":
    main()
