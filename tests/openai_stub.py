"""An OpenAI-compatible Chat Completions server: the outside AI provider, for tests and
benchmarks. Built on aiohttp.web for low overhead; the official `openai` client works
against it with `base_url=stub.base_url`.

    POST /v1/chat/completions   a `chat.completion`, or with `"stream": true` Server-Sent
                                Events: a role chunk, one chunk per token, a chunk with the
                                finish reason, the usage chunk (`stream_options.include_usage`),
                                then `data: [DONE]`
    GET  /v1/models             the configured models

Every knob is a constructor argument and a plain attribute that a test may change between
calls (see `OpenAIStub`). Every request is recorded in `stub.requests`.

In an async test:

    async with OpenAIStub(tokens=5) as stub:
        client = AsyncOpenAI(base_url=stub.base_url, api_key="any")

From synchronous code (a fixture that starts a stack pointed at it), in a thread of its own:

    with OpenAIStub() as stub:  # or stub.start_in_thread() ... stub.stop_thread()
        ...

As a process of its own (benchmarks), printing `OpenAI stub ready: <base_url>` when it
listens:

    python -m tests.openai_stub --port 8100 --tokens 50 --interval 0.02 --models a,b
"""

import argparse
import asyncio
import json
import re
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web

DEFAULT_REPLY = "Hello! This is the stub provider answering, one word at a time, as asked."
DEFAULT_MODELS = ("stub-model",)
# Added to the number of request messages for the reported prompt_tokens: a figure no local
# token count would give, so a test can tell the provider's usage from a local estimate.
PROMPT_TOKENS_BASE = 1000

_ERROR_KINDS = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "permission_denied"),
    404: ("invalid_request_error", "not_found"),
    408: ("timeout", "timeout"),
    429: ("requests", "rate_limit_exceeded"),
}


@dataclass
class RecordedRequest:
    """One request to `/v1/chat/completions` as it arrived: headers with lower-cased names,
    the JSON body (`{}` when the body was not a JSON object) and when (`time.monotonic()`)."""

    headers: dict[str, str]
    body: dict[str, Any]
    received_at: float = field(default_factory=time.monotonic)


def error_body(status: int, message: str) -> dict[str, Any]:
    """An error in the shape OpenAI answers with."""
    kind, code = _ERROR_KINDS.get(status, ("server_error", "server_error"))
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def split_words(reply: str) -> list[str]:
    """The reply's words, each with the whitespace after it, so that they join back into the
    reply exactly."""
    words = re.findall(r"\S+\s*", reply)
    leading = reply[: len(reply) - len(reply.lstrip())]
    if words and leading:
        words[0] = leading + words[0]
    return words


class OpenAIStub:
    """A fake OpenAI-compatible provider on 127.0.0.1.

    Knobs (constructor arguments, and attributes of the same name read on every request):

    - `models`: the ids `GET /v1/models` lists (default `["stub-model"]`). Any model name is
      accepted in a completion request and echoed back.
    - `reply`: the answer, streamed one word per chunk; `tokens=N` instead streams
      `"w1 ", "w2 ", ... "wN "`.
    - `prompt_tokens`: the usage's prompt_tokens (default 1000 + the number of messages).
    - `interval`: seconds between two tokens; `first_token_delay`: seconds before the first
      chunk (a stream's headers are sent at once). A non-streaming answer waits for both, as
      if the whole reply were being generated.
    - `fail_status`: answer completion requests with this HTTP status and an OpenAI error
      body; with `fail_times=N`, only the next N requests fail (the attribute counts down to
      0, then requests succeed again: retries before the first token).
    - `hang`: accept completion requests and never answer (until the stub stops).
    - `cut_after=k`: close the connection abruptly after k tokens of a stream, with no finish
      chunk and no `[DONE]`; a non-streaming request gets its connection closed unanswered.
    - `api_key`: when set, a request without `Authorization: Bearer <api_key>` gets 401.

    Observations: `requests` (every completion request, in order, failed ones included),
    `open_streams` (streams being sent now), `finished_streams` (sent to the end),
    `dropped_streams` (the client went away before the end).
    """

    def __init__(
        self,
        *,
        models: list[str] | tuple[str, ...] = DEFAULT_MODELS,
        reply: str = DEFAULT_REPLY,
        tokens: int | None = None,
        prompt_tokens: int | None = None,
        interval: float = 0.0,
        first_token_delay: float = 0.0,
        fail_status: int | None = None,
        fail_times: int | None = None,
        hang: bool = False,
        cut_after: int | None = None,
        api_key: str | None = None,
        port: int = 0,
    ) -> None:
        self.models = list(models)
        self.reply = reply
        self.tokens = tokens
        self.prompt_tokens = prompt_tokens
        self.interval = interval
        self.first_token_delay = first_token_delay
        self.fail_status = fail_status
        self.fail_times = fail_times
        self.hang = hang
        self.cut_after = cut_after
        self.api_key = api_key
        self.requests: list[RecordedRequest] = []
        self.open_streams = 0
        self.finished_streams = 0
        self.dropped_streams = 0
        self._requested_port = port
        self._socket: socket.socket | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self._in_flight: dict[int, web.BaseRequest] = {}
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None

    # -- addresses ---------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._socket is None:
            raise RuntimeError("the stub is not started")
        port: int = self._socket.getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """What an OpenAI client takes as `base_url`."""
        return f"{self.url}/v1"

    # -- what is sent ------------------------------------------------------------------

    def reply_tokens(self) -> list[str]:
        """The tokens a complete answer consists of."""
        if self.tokens is not None:
            return [f"w{n} " for n in range(1, self.tokens + 1)]
        return split_words(self.reply)

    def reply_text(self, max_tokens: int | None = None) -> str:
        """The text of a complete answer (or of one cut at `max_tokens`)."""
        tokens = self.reply_tokens()
        return "".join(tokens if max_tokens is None else tokens[:max_tokens])

    # -- life cycle --------------------------------------------------------------------

    async def start(self) -> "OpenAIStub":
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, handler_cancellation=True
        )
        await self._runner.setup()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self._requested_port))
        self._socket = sock
        self._stopping = asyncio.Event()
        await web.SockSite(self._runner, sock, backlog=4096).start()
        return self

    async def stop(self) -> None:
        """Stops at once: open streams and hanging requests lose their connection."""
        if self._runner is None:
            return
        assert self._stopping is not None
        self._stopping.set()
        for request in list(self._in_flight.values()):
            if request.transport is not None:
                request.transport.abort()
        await self._runner.cleanup()
        self._runner = None
        if self._socket is not None:
            self._socket.close()

    async def __aenter__(self) -> "OpenAIStub":
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def start_in_thread(self) -> "OpenAIStub":
        """Serves from a thread with its own event loop (for synchronous code); returns once
        the stub listens."""
        loop = asyncio.new_event_loop()
        self._thread_loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="openai-stub", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.start(), loop).result(timeout=10)
        return self

    def stop_thread(self) -> None:
        loop, thread = self._thread_loop, self._thread
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self.stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        self._thread_loop = self._thread = None

    def __enter__(self) -> "OpenAIStub":
        return self.start_in_thread()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop_thread()

    # -- handlers ----------------------------------------------------------------------

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        if self.api_key is None:
            return None
        if request.headers.get("Authorization") == f"Bearer {self.api_key}":
            return None
        return web.json_response(
            error_body(401, "Incorrect API key provided."),
            status=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    async def _models(self, request: web.Request) -> web.Response:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        data = [
            {"id": model, "object": "model", "created": 0, "owned_by": "stub"}
            for model in self.models
        ]
        return web.json_response({"object": "list", "data": data})

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        self._in_flight[id(request)] = request
        try:
            return await self._complete(request)
        finally:
            self._in_flight.pop(id(request), None)

    async def _complete(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            body = None
        headers = {name.lower(): value for name, value in request.headers.items()}
        self.requests.append(RecordedRequest(headers, body if isinstance(body, dict) else {}))
        if (denied := self._unauthorized(request)) is not None:
            return denied
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return web.json_response(
                error_body(400, "A JSON body with a 'messages' list is required."), status=400
            )
        if self._should_fail():
            assert self.fail_status is not None
            return web.json_response(
                error_body(self.fail_status, f"Stub provider failure ({self.fail_status})."),
                status=self.fail_status,
            )
        if self.hang:
            # Until the stub stops, which drops the connection.
            assert self._stopping is not None
            await self._stopping.wait()
            return web.Response(status=503)

        tokens = self.reply_tokens()
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        finish_reason = "stop"
        if isinstance(max_tokens, int) and max_tokens < len(tokens):
            tokens, finish_reason = tokens[: max(max_tokens, 0)], "length"
        prompt_tokens = self.prompt_tokens
        if prompt_tokens is None:
            prompt_tokens = PROMPT_TOKENS_BASE + len(body["messages"])
        model = str(body.get("model", self.models[0] if self.models else "stub-model"))
        if body.get("stream"):
            options = body.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            return await self._stream(
                request, model, tokens, finish_reason, prompt_tokens, include_usage
            )
        return await self._whole(request, model, tokens, finish_reason, prompt_tokens)

    def _should_fail(self) -> bool:
        if self.fail_status is None:
            return False
        if self.fail_times is None:
            return True
        if self.fail_times <= 0:
            return False
        self.fail_times -= 1
        return True

    async def _whole(
        self,
        request: web.Request,
        model: str,
        tokens: list[str],
        finish_reason: str,
        prompt_tokens: int,
    ) -> web.StreamResponse:
        await asyncio.sleep(self.first_token_delay + self.interval * max(len(tokens) - 1, 0))
        if self.cut_after is not None:
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=502)
        return web.json_response(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "system_fingerprint": None,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(tokens)},
                        "logprobs": None,
                        "finish_reason": finish_reason,
                    }
                ],
                "usage": usage(prompt_tokens, len(tokens)),
            }
        )

    async def _stream(
        self,
        request: web.Request,
        model: str,
        tokens: list[str],
        finish_reason: str,
        prompt_tokens: int,
        include_usage: bool,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())

        # Every chunk is the same but for its delta and finish reason: its JSON is put
        # together from pieces encoded once per stream.
        head = json.dumps(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": None,
            },
            separators=(",", ":"),
        )
        prefix = b"data: " + head[:-1].encode() + b',"choices":[{"index":0,"delta":'
        tail = b',"usage":null}\n\n' if include_usage else b"}\n\n"

        def chunk(delta: dict[str, str], finish: str | None = None) -> bytes:
            return b"".join(
                (
                    prefix,
                    json.dumps(delta, separators=(",", ":")).encode(),
                    b',"logprobs":null,"finish_reason":',
                    json.dumps(finish).encode(),
                    b"}]",
                    tail,
                )
            )

        cut_after = self.cut_after
        if cut_after is not None and cut_after < len(tokens):
            tokens, finish_reason = tokens[: max(cut_after, 0)], ""
        self.open_streams += 1
        finished = False
        try:
            if self.first_token_delay:
                await asyncio.sleep(self.first_token_delay)
            await response.write(chunk({"role": "assistant", "content": ""}))
            for sent, token in enumerate(tokens):
                if sent and self.interval:
                    await asyncio.sleep(self.interval)
                await response.write(chunk({"content": token}))
            if not finish_reason:
                # cut_after: the connection goes without the end of the chunked body.
                if request.transport is not None:
                    request.transport.abort()
                return response
            await response.write(chunk({}, finish_reason))
            if include_usage:
                last = {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "system_fingerprint": None,
                    "choices": [],
                    "usage": usage(prompt_tokens, len(tokens)),
                }
                await response.write(sse(last))
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            finished = True
            return response
        finally:
            self.open_streams -= 1
            if finished:
                self.finished_streams += 1
            elif finish_reason:
                self.dropped_streams += 1


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def sse(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


async def serve(stub: OpenAIStub) -> None:
    """Serves until SIGINT or SIGTERM."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    await stub.start()
    print(f"OpenAI stub ready: {stub.base_url}", flush=True)
    try:
        await stopping.wait()
    finally:
        await stub.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.openai_stub", description="An OpenAI-compatible stub provider."
    )
    parser.add_argument("--port", type=int, default=0, help="default: any free port")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated")
    parser.add_argument("--reply", default=DEFAULT_REPLY)
    parser.add_argument("--tokens", type=int, default=None, help="stream w1 .. wN instead")
    parser.add_argument("--interval", type=float, default=0.0, help="seconds between tokens")
    parser.add_argument("--first-token-delay", type=float, default=0.0)
    parser.add_argument("--api-key", default=None)
    args = parser.parse_args(argv)
    stub = OpenAIStub(
        models=[model for model in args.models.split(",") if model],
        reply=args.reply,
        tokens=args.tokens,
        interval=args.interval,
        first_token_delay=args.first_token_delay,
        api_key=args.api_key,
        port=args.port,
    )
    try:
        import uvloop  # optional: faster when installed
    except ImportError:
        run = asyncio.run
    else:
        run = uvloop.run
    run(serve(stub))


if __name__ == "__main__":
    main()
