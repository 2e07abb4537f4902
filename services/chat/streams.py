"""The events of each reply being generated, kept so that any client can follow, stop or
resume it: in memory for the readers on this process, mirrored to a Redis stream (full
stack) for readers on other replicas, with stop requests going over Redis pub/sub.

An event's `offset` is the length of the answer up to and including it, which makes it the
SSE event id: a client that resumes with `Last-Event-ID: N` gets the text after N."""

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from shared.logging import get_logger

log = get_logger(__name__)

DELTA, RESPONSE, ERROR = "chat_delta", "chat_response", "error"
# Written to Redis when a reply opens, so that other replicas know of it before its first
# piece; followers skip it.
OPENED = "opened"
TERMINAL = {RESPONSE, ERROR}
# A finished reply stays in memory this long for late readers; after that it is read from
# Redis (full stack) or rebuilt from the database.
LOCAL_LINGER_SECONDS = 60.0
REDIS_BLOCK_MILLISECONDS = 5000
# A stop published while the pub/sub listener reconnects is still seen this soon.
STOP_KEY_CHECK_SECONDS = 2.0


@dataclass(frozen=True)
class StreamEvent:
    kind: str
    offset: int
    data: dict[str, Any]

    @property
    def is_terminal(self) -> bool:
        return self.kind in TERMINAL


@dataclass
class LocalStream:
    events: list[StreamEvent] = field(default_factory=list)
    grew: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    mirror: "asyncio.Queue[StreamEvent | None] | None" = None

    @property
    def finished(self) -> bool:
        return bool(self.events) and self.events[-1].is_terminal

    def append(self, event: StreamEvent) -> None:
        self.events.append(event)
        self.grew.set()
        self.grew = asyncio.Event()


class StreamGone(Exception):
    """No replica has the reply's events (never started here, or its process died)."""


class ReplyStreams:
    def __init__(self, redis_url: str | None, prefix: str, retention_seconds: int) -> None:
        self._redis = Redis.from_url(redis_url, decode_responses=True) if redis_url else None
        self._prefix = f"{prefix}:chat"
        self._retention = retention_seconds
        self._local: dict[uuid.UUID, LocalStream] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop_listener: asyncio.Task[None] | None = None

    def _key(self, message_id: uuid.UUID) -> str:
        return f"{self._prefix}:reply:{message_id}"

    def _stop_key(self, message_id: uuid.UUID) -> str:
        return f"{self._prefix}:stop:{message_id}"

    @property
    def _stop_channel(self) -> str:
        return f"{self._prefix}:stop"

    async def start(self) -> None:
        if self._redis is not None:
            self._stop_listener = asyncio.create_task(self._listen_for_stops())

    async def close(self) -> None:
        tasks = [*self._tasks, *([self._stop_listener] if self._stop_listener else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._redis is not None:
            await self._redis.aclose()

    async def ping(self) -> bool:
        if self._redis is None:
            return True
        try:
            return bool(await self._redis.ping())
        except Exception:
            return False

    # --- the generating side ---

    def open(self, message_id: uuid.UUID, lifetime_seconds: float) -> LocalStream:
        stream = LocalStream()
        self._local[message_id] = stream
        if self._redis is not None:
            stream.mirror = asyncio.Queue()
            stream.mirror.put_nowait(StreamEvent(OPENED, -1, {}))
            expiry = int(lifetime_seconds) + self._retention
            self._spawn(self._mirror(message_id, stream.mirror, expiry))
        return stream

    def publish(self, message_id: uuid.UUID, event: StreamEvent) -> None:
        stream = self._local[message_id]
        stream.append(event)
        if stream.mirror is not None:
            stream.mirror.put_nowait(event)
        if event.is_terminal:
            if stream.mirror is not None:
                stream.mirror.put_nowait(None)
            self._spawn(self._forget_later(message_id))

    async def wait_for_stop(self, message_id: uuid.UUID) -> None:
        stream = self._local[message_id]
        if self._redis is None:
            await stream.stop.wait()
            return
        while not await self._redis.exists(self._stop_key(message_id)):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stream.stop.wait(), STOP_KEY_CHECK_SECONDS)
                return

    async def _mirror(
        self, message_id: uuid.UUID, queue: "asyncio.Queue[StreamEvent | None]", expiry: int
    ) -> None:
        """Writes the events to Redis in batches, so that the generator never waits on it."""
        assert self._redis is not None
        key = self._key(message_id)
        first = True
        while True:
            batch = [await queue.get()]
            while not queue.empty():
                batch.append(queue.get_nowait())
            events = [event for event in batch if event is not None]
            async with self._redis.pipeline(transaction=False) as pipe:
                for event in events:
                    fields: dict[str, str | int] = {
                        "kind": event.kind,
                        "offset": event.offset,
                        "data": json.dumps(event.data),
                    }
                    pipe.xadd(key, fields)  # type: ignore[arg-type]
                if first and events:
                    pipe.expire(key, expiry)
                    first = False
                if batch[-1] is None:
                    pipe.expire(key, self._retention)
                try:
                    await pipe.execute()
                except Exception as exc:
                    log.warning("reply_mirror_failed", message_id=str(message_id), error=repr(exc))
            if batch[-1] is None:
                return

    async def _forget_later(self, message_id: uuid.UUID) -> None:
        await asyncio.sleep(LOCAL_LINGER_SECONDS)
        self._local.pop(message_id, None)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- any replica ---

    async def request_stop(self, message_id: uuid.UUID) -> None:
        stream = self._local.get(message_id)
        if stream is not None:
            stream.stop.set()
        if self._redis is not None:
            await self._redis.set(self._stop_key(message_id), "1", ex=self._retention)
            await self._redis.publish(self._stop_channel, str(message_id))

    async def _listen_for_stops(self) -> None:
        assert self._redis is not None
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(self._stop_channel)
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        with contextlib.suppress(ValueError):
                            stream = self._local.get(uuid.UUID(message["data"]))
                            if stream is not None:
                                stream.stop.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("reply_stop_listener_failed", error=repr(exc))
                await asyncio.sleep(1.0)

    async def has(self, message_id: uuid.UUID) -> bool:
        if message_id in self._local:
            return True
        if self._redis is None:
            return False
        return bool(await self._redis.exists(self._key(message_id)))

    async def follow(self, message_id: uuid.UUID, after: int = -1) -> AsyncIterator[StreamEvent]:
        """The reply's events after offset `after` (deltas) and its last event, as they come.
        Raises StreamGone when no replica has them, or they stop coming from a dead one."""
        if message_id in self._local:
            async for event in self._follow_local(self._local[message_id], after):
                yield event
            return
        if self._redis is None or not await self._redis.exists(self._key(message_id)):
            raise StreamGone()
        async for event in self._follow_redis(message_id, after):
            yield event

    @staticmethod
    async def _follow_local(stream: LocalStream, after: int) -> AsyncIterator[StreamEvent]:
        index = 0
        while True:
            grew = stream.grew
            while index < len(stream.events):
                event = stream.events[index]
                index += 1
                if event.is_terminal or event.offset > after:
                    yield event
                if event.is_terminal:
                    return
            await grew.wait()

    async def _follow_redis(self, message_id: uuid.UUID, after: int) -> AsyncIterator[StreamEvent]:
        assert self._redis is not None
        key, last_id = self._key(message_id), "0-0"
        while True:
            answer: Any = await self._redis.xread({key: last_id}, block=REDIS_BLOCK_MILLISECONDS)
            if not answer:
                if not await self._redis.exists(self._key(message_id)):
                    raise StreamGone()
                continue
            entries: list[tuple[str, dict[str, str]]] = answer[0][1]
            for entry_id, fields in entries:
                last_id = entry_id
                data = json.loads(fields["data"])
                event = StreamEvent(fields["kind"], int(fields["offset"]), data)
                if event.kind == OPENED:
                    continue
                if event.is_terminal or event.offset > after:
                    yield event
                if event.is_terminal:
                    return
