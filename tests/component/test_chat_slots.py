"""At most N generations per user at once: in memory, and across replicas through a real
Redis, where the limit must hold exactly even when replicas race for the last slot."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from services.chat import slots as slots_module
from services.chat.slots import GenerationSlots
from shared.errors import RateLimitExceeded
from tests.conftest import REDIS, require_dependencies

REDIS_URL = f"redis://{REDIS[0]}:{REDIS[1]}/0"
LIFETIME_SECONDS = 300.0


class FakeClock:
    """Stands in for the `time` module of the slots."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


async def acquire_or_none(slots: GenerationSlots, user_id: uuid.UUID) -> uuid.UUID | None:
    try:
        return await slots.acquire(user_id)
    except RateLimitExceeded:
        return None


async def assert_refused(slots: GenerationSlots, user_id: uuid.UUID, limit: int) -> None:
    with pytest.raises(RateLimitExceeded) as refused:
        await slots.acquire(user_id)
    assert refused.value.status_code == 429
    assert refused.value.code == "RATE_LIMIT_EXCEEDED"
    assert refused.value.details == {"limit": limit}
    assert refused.value.headers == {"Retry-After": "1"}


# --- memory ---


async def test_memory_the_third_of_two_is_refused_until_one_is_released() -> None:
    slots = GenerationSlots(None, "test", limit=2, lifetime_seconds=LIFETIME_SECONDS)
    user = uuid.uuid4()
    first = await slots.acquire(user)
    second = await slots.acquire(user)
    assert first != second
    await assert_refused(slots, user, limit=2)

    await slots.release(user, first)
    third = await slots.acquire(user)
    await assert_refused(slots, user, limit=2)

    # Releasing twice, or a slot that is not held, frees nothing more.
    await slots.release(user, first)
    await slots.release(user, uuid.uuid4())
    await assert_refused(slots, user, limit=2)
    await slots.release(user, second)
    await slots.release(user, third)
    await slots.acquire(user)
    await slots.acquire(user)
    await slots.close()


async def test_memory_users_do_not_share_slots() -> None:
    slots = GenerationSlots(None, "test", limit=1, lifetime_seconds=LIFETIME_SECONDS)
    ada, bob = uuid.uuid4(), uuid.uuid4()
    await slots.acquire(ada)
    await slots.acquire(bob)
    await assert_refused(slots, ada, limit=1)
    await assert_refused(slots, bob, limit=1)
    # Releasing for one user never frees another's.
    await slots.release(uuid.uuid4(), uuid.uuid4())
    await assert_refused(slots, ada, limit=1)


async def test_memory_expired_slots_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(1_000_000.0)
    monkeypatch.setattr(slots_module, "time", clock)
    slots = GenerationSlots(None, "test", limit=2, lifetime_seconds=0.5)
    user = uuid.uuid4()
    await slots.acquire(user)
    clock.now += 0.25
    await slots.acquire(user)
    await assert_refused(slots, user, limit=2)

    clock.now += 0.3  # the first is past its lifetime, the second is not
    await slots.acquire(user)
    await assert_refused(slots, user, limit=2)
    clock.now += 10
    await slots.acquire(user)
    await slots.acquire(user)
    await assert_refused(slots, user, limit=2)


async def test_memory_a_tiny_lifetime_never_holds_a_slot() -> None:
    slots = GenerationSlots(None, "test", limit=1, lifetime_seconds=0.0)
    user = uuid.uuid4()
    for _ in range(5):
        await slots.acquire(user)


# --- Redis, two replicas ---


class Replicas:
    def __init__(self, prefix: str, limit: int, lifetime_seconds: float) -> None:
        self.prefix = prefix
        self.a = GenerationSlots(REDIS_URL, prefix, limit, lifetime_seconds)
        self.b = GenerationSlots(REDIS_URL, prefix, limit, lifetime_seconds)
        self.redis = Redis.from_url(REDIS_URL, decode_responses=True)

    def key(self, user_id: uuid.UUID) -> str:
        return f"{self.prefix}:chat:slots:{user_id}"

    async def close(self) -> None:
        await self.a.close()
        await self.b.close()
        keys = [key async for key in self.redis.scan_iter(f"{self.prefix}:*")]
        if keys:
            await self.redis.delete(*keys)
        await self.redis.aclose()


@pytest.fixture
async def make_replicas() -> AsyncIterator[Callable[[int, float], Replicas]]:
    require_dependencies("Redis")
    made: list[Replicas] = []

    def make(limit: int, lifetime_seconds: float = LIFETIME_SECONDS) -> Replicas:
        replicas = Replicas(f"test-{uuid.uuid4().hex[:10]}", limit, lifetime_seconds)
        made.append(replicas)
        return replicas

    yield make
    for replicas in made:
        await replicas.close()


async def test_redis_replicas_share_the_limit(
    make_replicas: Callable[[int, float], Replicas],
) -> None:
    replicas = make_replicas(2, LIFETIME_SECONDS)
    a, b = replicas.a, replicas.b
    user = uuid.uuid4()
    on_a = await a.acquire(user)
    on_b = await b.acquire(user)
    await assert_refused(a, user, limit=2)
    await assert_refused(b, user, limit=2)
    assert await replicas.redis.zcard(replicas.key(user)) == 2

    # A slot taken on A can be released on B (the request may end on another replica).
    await b.release(user, on_a)
    again = await a.acquire(user)
    await assert_refused(b, user, limit=2)
    await a.release(user, on_b)
    await a.release(user, again)
    assert await replicas.redis.zcard(replicas.key(user)) == 0
    await b.acquire(user)
    await b.acquire(user)
    await assert_refused(a, user, limit=2)

    ttl = await replicas.redis.ttl(replicas.key(user))
    assert LIFETIME_SECONDS < ttl <= LIFETIME_SECONDS + 60


async def test_redis_the_limit_is_exact_when_replicas_race(
    make_replicas: Callable[[int, float], Replicas],
) -> None:
    replicas = make_replicas(3, LIFETIME_SECONDS)
    for _ in range(10):
        user = uuid.uuid4()
        taken = await asyncio.gather(
            *(acquire_or_none(replicas.a if i % 2 else replicas.b, user) for i in range(24))
        )
        held = [slot for slot in taken if slot is not None]
        assert len(held) == 3
        assert len(set(held)) == 3
        members = await replicas.redis.zrange(replicas.key(user), 0, -1)
        assert sorted(members) == sorted(str(slot) for slot in held)

        # Releasing one in a race again lets exactly one more in.
        await replicas.a.release(user, held[0])
        retaken = await asyncio.gather(
            *(acquire_or_none(replicas.b if i % 2 else replicas.a, user) for i in range(12))
        )
        assert sum(slot is not None for slot in retaken) == 1


async def test_redis_users_do_not_interfere(
    make_replicas: Callable[[int, float], Replicas],
) -> None:
    replicas = make_replicas(1, LIFETIME_SECONDS)
    ada, bob = uuid.uuid4(), uuid.uuid4()
    ada_slot = await replicas.a.acquire(ada)
    await replicas.b.acquire(bob)
    await assert_refused(replicas.b, ada, limit=1)
    await assert_refused(replicas.a, bob, limit=1)

    # Releasing Ada's slot id under Bob's name frees nothing.
    await replicas.a.release(bob, ada_slot)
    await assert_refused(replicas.a, bob, limit=1)
    await replicas.b.release(ada, ada_slot)
    await replicas.b.acquire(ada)
    await assert_refused(replicas.a, bob, limit=1)


async def test_redis_another_prefix_is_another_deployment(
    make_replicas: Callable[[int, float], Replicas],
) -> None:
    one, other = make_replicas(1, LIFETIME_SECONDS), make_replicas(1, LIFETIME_SECONDS)
    user = uuid.uuid4()
    await one.a.acquire(user)
    await other.a.acquire(user)
    await assert_refused(one.b, user, limit=1)


async def test_redis_expired_slots_are_dropped(
    make_replicas: Callable[[int, float], Replicas], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica that died holds its slots for their lifetime only."""
    clock = FakeClock(1_000_000.0)
    monkeypatch.setattr(slots_module, "time", clock)
    replicas = make_replicas(2, 0.5)
    user = uuid.uuid4()
    await replicas.a.acquire(user)
    clock.now += 0.25
    await replicas.b.acquire(user)
    await assert_refused(replicas.a, user, limit=2)

    clock.now += 0.3
    await replicas.b.acquire(user)
    await assert_refused(replicas.a, user, limit=2)
    clock.now += 10
    await replicas.a.acquire(user)
    await replicas.b.acquire(user)
    await assert_refused(replicas.a, user, limit=2)
    assert await replicas.redis.zcard(replicas.key(user)) == 2
