"""The lockout per address: LOGIN_MAX_FAILURES attempts pass, the next is refused for
LOGIN_LOCKOUT_SECONDS, twice as long at each further lockout up to the cap; a success forgets
the failures, a reset forgets everything. In memory and on the real Redis."""

import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from services.auth import lockout
from services.auth.lockout import (
    LockoutPolicy,
    LoginLockout,
    MemoryLoginLockout,
    RedisLoginLockout,
)
from shared.testing import eventually
from tests.conftest import REDIS, require_dependencies

POLICY = LockoutPolicy(max_failures=3, window_seconds=60, base_seconds=10, max_seconds=25)


class FrozenClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FrozenClock:
    frozen = FrozenClock()
    monkeypatch.setattr(lockout, "time", frozen)
    return frozen


async def redis_lockout(policy: LockoutPolicy) -> tuple[RedisLoginLockout, Redis, str]:
    require_dependencies("Redis")
    prefix = f"test-login-{uuid.uuid4().hex[:12]}"
    redis = Redis.from_url(f"redis://{REDIS[0]}:{REDIS[1]}/0")
    store = RedisLoginLockout(Redis.from_url(f"redis://{REDIS[0]}:{REDIS[1]}/0"), policy, prefix)
    return store, redis, prefix


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[LoginLockout]:
    if request.param == "memory":
        yield MemoryLoginLockout(POLICY)
        return
    redis_store, redis, prefix = await redis_lockout(POLICY)
    yield redis_store
    keys = [key async for key in redis.scan_iter(f"{prefix}:*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()
    await redis_store.close()


async def attempts(store: LoginLockout, email: str, count: int) -> list[int | None]:
    return [await store.attempt(email) for _ in range(count)]


async def test_the_attempt_after_the_limit_is_refused_for_the_interval(
    store: LoginLockout,
) -> None:
    assert await attempts(store, "ada@example.com", 3) == [None, None, None]
    retry_after = await store.attempt("ada@example.com")
    assert retry_after == 10
    assert await store.attempt("ada@example.com") in (9, 10)
    # Another address has a count of its own.
    assert await store.attempt("grace@example.com") is None


async def test_a_success_forgets_the_failures(store: LoginLockout) -> None:
    assert await attempts(store, "ada@example.com", 3) == [None, None, None]
    await store.succeeded("ada@example.com")
    assert await attempts(store, "ada@example.com", 3) == [None, None, None]
    assert await store.attempt("ada@example.com") == 10


async def test_a_reset_forgets_the_lockout(store: LoginLockout) -> None:
    await attempts(store, "ada@example.com", 4)
    assert await store.attempt("ada@example.com") is not None
    await store.clear("ada@example.com")
    assert await store.attempt("ada@example.com") is None


async def test_each_further_lockout_lasts_twice_as_long_up_to_the_cap(
    clock: FrozenClock,
) -> None:
    store = MemoryLoginLockout(POLICY)
    intervals = []
    for _ in range(3):
        await attempts(store, "ada@example.com", 3)
        retry_after = await store.attempt("ada@example.com")
        assert retry_after is not None
        intervals.append(retry_after)
        clock.now += retry_after
    assert intervals == [10, 20, 25]
    # A day without lockouts and the next one is short again.
    clock.now += lockout.LEVEL_MEMORY_SECONDS
    await attempts(store, "ada@example.com", 3)
    assert await store.attempt("ada@example.com") == 10


async def test_failures_older_than_the_window_are_forgotten(clock: FrozenClock) -> None:
    store = MemoryLoginLockout(POLICY)
    await attempts(store, "ada@example.com", 3)
    clock.now += POLICY.window_seconds
    assert await attempts(store, "ada@example.com", 3) == [None, None, None]


async def test_redis_lockouts_grow_and_end() -> None:
    policy = LockoutPolicy(max_failures=2, window_seconds=60, base_seconds=1, max_seconds=2)
    store, redis, prefix = await redis_lockout(policy)
    try:
        await attempts(store, "ada@example.com", 2)
        assert await store.attempt("ada@example.com") == 1

        async def unlocked() -> bool:
            return await store.attempt("ada@example.com") is None

        await eventually(unlocked, within_seconds=5, interval=0.1)
        await attempts(store, "ada@example.com", 1)
        assert await store.attempt("ada@example.com") == 2
        assert await store.attempt("ada@example.com") == 2
    finally:
        keys = [key async for key in redis.scan_iter(f"{prefix}:*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
        await store.close()


async def test_an_unreachable_redis_lets_attempts_through() -> None:
    closed = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    store = RedisLoginLockout(closed, POLICY, "test-login-unreachable")
    assert await attempts(store, "ada@example.com", 5) == [None] * 5
    await store.close()
