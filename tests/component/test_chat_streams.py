"""The events of a reply being generated: followed, resumed and stopped on the process that
generates it (memory only), and from another replica through a real Redis (the mirrored
stream for the events, pub/sub and a key for stop requests)."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from redis.asyncio import Redis

from services.chat.streams import DELTA, ERROR, RESPONSE, ReplyStreams, StreamEvent, StreamGone
from shared.testing import eventually
from tests.conftest import REDIS, require_dependencies

REDIS_URL = f"redis://{REDIS[0]}:{REDIS[1]}/0"
RETENTION_SECONDS = 120
TIMEOUT = 10.0
WORDS = ["Gallia", " est", " omnis", " divisa", " in", " partes", " tres", " — “naïve” 🙂"]


def reply_events(words: Sequence[str] = WORDS, kind: str = RESPONSE) -> list[StreamEvent]:
    """Deltas whose offsets are the length of the answer so far, then the terminal event."""
    events, offset = [], 0
    for index, word in enumerate(words):
        offset += len(word)
        events.append(StreamEvent(DELTA, offset, {"id": "reply", "delta": word, "index": index}))
    final: dict[str, Any] = {"content": "".join(words), "usage": {"completion_tokens": 9}}
    if kind == ERROR:
        final = {"code": "PROVIDER_ERROR", "message": "the provider broke"}
    events.append(StreamEvent(kind, offset, final))
    return events


def reply_of(events: Sequence[StreamEvent]) -> tuple[str, list[int], StreamEvent]:
    """What a reader learns from events: the text of the pieces, their offsets and the last
    event. Pieces that were waiting together may come as one (their text joined, the
    offset of the last), so readers are compared on this, not event by event."""
    pieces = [event for event in events if event.kind == DELTA]
    return "".join(e.data["delta"] for e in pieces), [e.offset for e in pieces], events[-1]


def assert_same_reply(followed: Sequence[StreamEvent], published: Sequence[StreamEvent]) -> None:
    text, offsets, last = reply_of(followed)
    expected_text, expected_offsets, expected_last = reply_of(published)
    assert (text, last) == (expected_text, expected_last)
    assert offsets == sorted(set(offsets))
    assert set(offsets) <= set(expected_offsets)
    if expected_offsets:
        assert offsets[-1] == expected_offsets[-1]


async def collect(
    streams: ReplyStreams, message_id: uuid.UUID, after: int = -1
) -> list[StreamEvent]:
    async def run() -> list[StreamEvent]:
        return [event async for event in streams.follow(message_id, after)]

    return await asyncio.wait_for(run(), TIMEOUT)


def follow_into_queue(
    streams: ReplyStreams, message_id: uuid.UUID, after: int = -1
) -> tuple["asyncio.Task[None]", "asyncio.Queue[StreamEvent]"]:
    queue: asyncio.Queue[StreamEvent] = asyncio.Queue()

    async def run() -> None:
        async for event in streams.follow(message_id, after):
            queue.put_nowait(event)

    return asyncio.create_task(run()), queue


async def next_event(queue: "asyncio.Queue[StreamEvent]") -> StreamEvent:
    return await asyncio.wait_for(queue.get(), TIMEOUT)


async def still_pending(task: "asyncio.Task[Any]") -> bool:
    """True if the task has not finished within a short moment (a check that something
    did not happen, which cannot wait on a condition)."""
    done, _ = await asyncio.wait({task}, timeout=0.2)
    return not done


# --- memory only ---


@pytest.fixture
async def local() -> AsyncIterator[ReplyStreams]:
    streams = ReplyStreams(None, f"test-{uuid.uuid4().hex[:10]}", RETENTION_SECONDS)
    await streams.start()
    yield streams
    await streams.close()


async def test_memory_follow_from_the_start_gets_every_event_in_order(local: ReplyStreams) -> None:
    message_id = uuid.uuid4()
    local.open(message_id, lifetime_seconds=60)
    events = reply_events()
    for event in events:
        local.publish(message_id, event)

    followed = await collect(local, message_id)
    assert_same_reply(followed, events)
    assert followed[-1].is_terminal
    assert not any(e.is_terminal for e in followed[:-1])
    # A second reader gets the same, for as long as the reply lingers.
    assert_same_reply(await collect(local, message_id), events)


async def test_memory_follower_started_first_gets_events_as_they_are_published(
    local: ReplyStreams,
) -> None:
    message_id = uuid.uuid4()
    local.open(message_id, lifetime_seconds=60)
    task, queue = follow_into_queue(local, message_id)
    events = reply_events()
    for event in events:
        local.publish(message_id, event)
        assert await next_event(queue) == event
    await asyncio.wait_for(task, TIMEOUT)
    assert queue.empty()


async def test_memory_follow_after_an_offset_skips_what_the_client_has(local: ReplyStreams) -> None:
    message_id = uuid.uuid4()
    local.open(message_id, lifetime_seconds=60)
    events = reply_events()
    for event in events[:3]:
        local.publish(message_id, event)
    seen = events[2].offset

    task, queue = follow_into_queue(local, message_id, after=seen)
    for event in events[3:]:
        local.publish(message_id, event)
    await asyncio.wait_for(task, TIMEOUT)
    resumed = [queue.get_nowait() for _ in range(queue.qsize())]
    assert_same_reply(resumed, events[3:])
    assert all(event.offset > seen for event in resumed if event.kind == DELTA)

    # After the last delta, only the terminal event is left (its offset is not after N).
    assert await collect(local, message_id, after=events[-1].offset) == [events[-1]]
    assert await collect(local, message_id, after=10_000) == [events[-1]]


async def test_memory_an_error_ends_the_stream_too(local: ReplyStreams) -> None:
    message_id = uuid.uuid4()
    local.open(message_id, lifetime_seconds=60)
    events = reply_events(WORDS[:2], kind=ERROR)
    for event in events:
        local.publish(message_id, event)
    followed = await collect(local, message_id)
    assert_same_reply(followed, events)
    assert followed[-1].kind == ERROR
    assert followed[-1].is_terminal


async def test_memory_request_stop_ends_wait_for_stop(local: ReplyStreams) -> None:
    message_id, other = uuid.uuid4(), uuid.uuid4()
    local.open(message_id, lifetime_seconds=60)
    local.open(other, lifetime_seconds=60)
    waiting = asyncio.create_task(local.wait_for_stop(message_id))
    waiting_other = asyncio.create_task(local.wait_for_stop(other))
    assert await still_pending(waiting)

    await local.request_stop(message_id)
    await asyncio.wait_for(waiting, TIMEOUT)
    # Only that reply is stopped.
    assert await still_pending(waiting_other)
    waiting_other.cancel()


async def test_memory_has_and_unknown_replies(local: ReplyStreams) -> None:
    message_id = uuid.uuid4()
    assert not await local.has(message_id)
    local.open(message_id, lifetime_seconds=60)
    assert await local.has(message_id)
    assert not await local.has(uuid.uuid4())

    with pytest.raises(StreamGone):
        await collect(local, uuid.uuid4())
    # Stopping an unknown reply is harmless.
    await local.request_stop(uuid.uuid4())


# --- two replicas on one Redis ---


class Replicas:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.a = ReplyStreams(REDIS_URL, prefix, RETENTION_SECONDS)
        self.b = ReplyStreams(REDIS_URL, prefix, RETENTION_SECONDS)
        self.redis = Redis.from_url(REDIS_URL, decode_responses=True)

    def reply_key(self, message_id: uuid.UUID) -> str:
        return f"{self.prefix}:chat:reply:{message_id}"

    async def mirrored(self, message_id: uuid.UUID, count: int) -> bool:
        """Whether the first `count` events of the reply have reached Redis."""
        return int(await self.redis.xlen(self.reply_key(message_id))) >= count

    async def listeners_subscribed(self) -> bool:
        [(_, subscribers)] = await self.redis.pubsub_numsub(f"{self.prefix}:chat:stop")
        return int(subscribers) >= 2


@pytest.fixture
async def replicas() -> AsyncIterator[Replicas]:
    require_dependencies("Redis")
    pair = Replicas(f"test-{uuid.uuid4().hex[:10]}")
    await pair.a.start()
    await pair.b.start()
    yield pair
    await pair.a.close()
    await pair.b.close()
    keys = [key async for key in pair.redis.scan_iter(f"{pair.prefix}:*")]
    if keys:
        await pair.redis.delete(*keys)
    await pair.redis.aclose()


async def test_replica_b_replays_a_finished_reply_of_replica_a(replicas: Replicas) -> None:
    a, b = replicas.a, replicas.b
    message_id = uuid.uuid4()
    a.open(message_id, lifetime_seconds=60)
    events = reply_events()
    for event in events:
        a.publish(message_id, event)
    await eventually(lambda: replicas.mirrored(message_id, len(events)), within_seconds=TIMEOUT)

    assert await b.has(message_id)
    assert_same_reply(await collect(b, message_id), events)
    assert_same_reply(await collect(b, message_id), events)
    # Once finished, the mirror is kept for the retention time only.
    ttl = await replicas.redis.ttl(replicas.reply_key(message_id))
    assert 0 < ttl <= RETENTION_SECONDS


async def test_replica_b_follows_a_reply_of_replica_a_as_it_is_published(
    replicas: Replicas,
) -> None:
    a, b = replicas.a, replicas.b
    message_id = uuid.uuid4()
    a.open(message_id, lifetime_seconds=60)
    events = reply_events()
    a.publish(message_id, events[0])
    await eventually(lambda: b.has(message_id), within_seconds=TIMEOUT)
    # While generating, the mirror lives for the reply's lifetime plus the retention.
    ttl = await replicas.redis.ttl(replicas.reply_key(message_id))
    assert RETENTION_SECONDS < ttl <= 60 + RETENTION_SECONDS

    task, queue = follow_into_queue(b, message_id)
    assert await next_event(queue) == events[0]
    for event in events[1:]:
        a.publish(message_id, event)
        assert await next_event(queue) == event
    await asyncio.wait_for(task, TIMEOUT)
    assert queue.empty()


async def test_replica_b_resumes_after_an_offset(replicas: Replicas) -> None:
    a, b = replicas.a, replicas.b
    message_id = uuid.uuid4()
    a.open(message_id, lifetime_seconds=60)
    events = reply_events()
    for event in events[:4]:
        a.publish(message_id, event)
    await eventually(lambda: replicas.mirrored(message_id, 4), within_seconds=TIMEOUT)
    seen = events[1].offset

    task, queue = follow_into_queue(b, message_id, after=seen)
    # The two pieces already written come as one.
    caught_up = await next_event(queue)
    assert caught_up.offset == events[3].offset
    assert caught_up.data["delta"] == events[2].data["delta"] + events[3].data["delta"]
    for event in events[4:]:
        a.publish(message_id, event)
    await asyncio.wait_for(task, TIMEOUT)
    assert_same_reply([queue.get_nowait() for _ in range(queue.qsize())], events[4:])

    assert await collect(b, message_id, after=events[-1].offset) == [events[-1]]


async def test_replica_b_does_not_know_a_reply_nobody_has(replicas: Replicas) -> None:
    unknown = uuid.uuid4()
    assert not await replicas.b.has(unknown)
    with pytest.raises(StreamGone):
        await collect(replicas.b, unknown)


async def test_a_stop_requested_on_replica_b_reaches_replica_a(replicas: Replicas) -> None:
    a, b = replicas.a, replicas.b
    message_id, other = uuid.uuid4(), uuid.uuid4()
    a.open(message_id, lifetime_seconds=60)
    a.open(other, lifetime_seconds=60)
    await eventually(replicas.listeners_subscribed, within_seconds=TIMEOUT)
    waiting = asyncio.create_task(a.wait_for_stop(message_id))
    waiting_other = asyncio.create_task(a.wait_for_stop(other))
    assert await still_pending(waiting)

    await b.request_stop(message_id)
    await asyncio.wait_for(waiting, TIMEOUT)
    assert await still_pending(waiting_other)
    waiting_other.cancel()


async def test_a_stop_requested_before_replica_a_waits_is_still_seen(replicas: Replicas) -> None:
    """Requested before A even opened the reply: the pub/sub message found nothing to stop
    on A, and the stop key is what tells it."""
    a, b = replicas.a, replicas.b
    message_id = uuid.uuid4()
    await eventually(replicas.listeners_subscribed, within_seconds=TIMEOUT)
    await b.request_stop(message_id)

    a.open(message_id, lifetime_seconds=60)
    await asyncio.wait_for(a.wait_for_stop(message_id), TIMEOUT)


async def test_a_stop_requested_before_the_listener_runs_is_still_seen() -> None:
    require_dependencies("Redis")
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    a = ReplyStreams(REDIS_URL, prefix, RETENTION_SECONDS)
    b = ReplyStreams(REDIS_URL, prefix, RETENTION_SECONDS)
    redis = Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        message_id = uuid.uuid4()
        a.open(message_id, lifetime_seconds=60)
        await b.request_stop(message_id)
        await asyncio.wait_for(a.wait_for_stop(message_id), TIMEOUT)
        assert 0 < await redis.ttl(f"{prefix}:chat:stop:{message_id}") <= RETENTION_SECONDS
    finally:
        await a.close()
        await b.close()
        keys = [key async for key in redis.scan_iter(f"{prefix}:*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
