"""The revocation store as a cache that knows whether it is complete: on Redis, a lookup
without the marker is refused (never answered "not revoked"), a refill marks it complete
only if the store kept its data throughout, and re-published entries never undo newer
ones. The embedded mode's memory store is always complete."""

import time
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from shared.errors import ServiceUnavailable
from shared.revocation import Denial, MemoryRevocationStore, RedisRevocationStore
from tests.conftest import REDIS, require_dependencies


class Scratch:
    """A Redis store under a prefix of its own, and a client to look behind it."""

    def __init__(self, fail_open: bool = True) -> None:
        self.prefix = f"test-revoked-{uuid.uuid4().hex[:12]}"
        self.redis = Redis.from_url(f"redis://{REDIS[0]}:{REDIS[1]}/0", decode_responses=True)
        self.errors = 0
        self.store = RedisRevocationStore(
            Redis.from_url(f"redis://{REDIS[0]}:{REDIS[1]}/0"),
            self.prefix,
            fail_open=fail_open,
            on_error=self._count,
        )

    def _count(self) -> None:
        self.errors += 1

    async def keys(self) -> list[str]:
        return [key async for key in self.redis.scan_iter(f"{self.prefix}:*")]

    async def flush(self) -> None:
        """What a flushed or replaced Redis looks like to this deployment."""
        keys = await self.keys()
        if keys:
            await self.redis.delete(*keys)


@pytest.fixture
async def scratch() -> AsyncIterator[Scratch]:
    require_dependencies("Redis")
    scratch = Scratch()
    yield scratch
    await scratch.flush()
    await scratch.redis.aclose()
    await scratch.store.close()


async def nothing() -> int:
    return 0


async def test_without_the_marker_a_lookup_is_refused_even_failing_open(scratch: Scratch) -> None:
    assert not await scratch.store.is_complete()
    with pytest.raises(ServiceUnavailable) as refused:
        await scratch.store.is_revoked(str(uuid.uuid4()), str(uuid.uuid4()), time.time())
    assert refused.value.status_code == 503
    assert scratch.errors == 1

    assert await scratch.store.refill(nothing)
    assert await scratch.store.is_complete()
    assert await scratch.redis.ttl(f"{scratch.prefix}:ready") == -1  # never expires
    assert not await scratch.store.is_revoked(str(uuid.uuid4()), str(uuid.uuid4()), time.time())

    await scratch.flush()
    with pytest.raises(ServiceUnavailable):
        await scratch.store.is_revoked(str(uuid.uuid4()), str(uuid.uuid4()), time.time())


async def test_an_entry_found_without_the_marker_still_denies(scratch: Scratch) -> None:
    """What is there is true: a token found in the denylist is refused (401), not 503."""
    user = str(uuid.uuid4())
    jti, sid = str(uuid.uuid4()), str(uuid.uuid4())
    await scratch.store.revoke_token(jti, int(time.time()) + 60)
    await scratch.store.revoke_session(sid, 60)
    await scratch.store.revoke_user(user, 60)
    assert await scratch.store.is_revoked(jti, str(uuid.uuid4()), time.time())
    assert await scratch.store.is_revoked(str(uuid.uuid4()), str(uuid.uuid4()), time.time(), sid)
    assert await scratch.store.is_revoked(str(uuid.uuid4()), user, time.time() - 1)
    with pytest.raises(ServiceUnavailable):  # issued after the user's revocation: unknown
        await scratch.store.is_revoked(str(uuid.uuid4()), user, time.time() + 1)


async def test_a_refill_during_which_the_store_is_flushed_does_not_mark_it(
    scratch: Scratch,
) -> None:
    jti = str(uuid.uuid4())

    async def publish_then_lose_everything() -> int:
        count = await scratch.store.restore([Denial("jti", jti, time.time() + 60)])
        await scratch.flush()
        return count

    assert not await scratch.store.refill(publish_then_lose_everything)
    assert not await scratch.store.is_complete()

    async def publish() -> int:
        return await scratch.store.restore([Denial("jti", jti, time.time() + 60)])

    assert await scratch.store.refill(publish)
    assert await scratch.store.is_revoked(jti, str(uuid.uuid4()), time.time())
    # The refill's fence is gone with it: the entry and the marker are all that is left.
    assert sorted(await scratch.keys()) == [
        f"{scratch.prefix}:jti:{jti}",
        f"{scratch.prefix}:ready",
    ]


async def test_restore_skips_what_expired_and_keeps_each_entry_s_expiry(scratch: Scratch) -> None:
    now = time.time()
    denials = [
        Denial("jti", "live-token", now + 100),
        Denial("sid", "live-login", now + 50),
        Denial("user", "live-user", now + 900, revoked_at=now - 10),
        Denial("jti", "expired-token", now - 1),
        Denial("user", "expired-user", now - 1, revoked_at=now - 1000),
    ]
    assert await scratch.store.restore(denials) == 3
    assert 99 <= await scratch.redis.ttl(f"{scratch.prefix}:jti:live-token") <= 101
    assert 49 <= await scratch.redis.ttl(f"{scratch.prefix}:sid:live-login") <= 51
    assert await scratch.redis.get(f"{scratch.prefix}:user:live-user") == repr(now - 10)
    assert not await scratch.redis.exists(
        f"{scratch.prefix}:jti:expired-token", f"{scratch.prefix}:user:expired-user"
    )


async def test_restore_sends_large_batches(scratch: Scratch) -> None:
    now = time.time()
    denials = [Denial("jti", f"token-{index}", now + 60) for index in range(1234)]
    assert await scratch.store.restore(denials) == 1234
    assert len(await scratch.keys()) == 1234


async def test_a_user_s_revocation_point_only_moves_later(scratch: Scratch) -> None:
    """A refill (or a slow replica) writing an older point keeps the newer one: tokens
    issued between the two stay denied."""
    user = str(uuid.uuid4())
    key = f"{scratch.prefix}:user:{user}"
    now = time.time()
    await scratch.store.revoke_user(user, 60, revoked_at=now)
    await scratch.store.restore([Denial("user", user, now + 600, revoked_at=now - 30)])
    assert await scratch.redis.get(key) == repr(now)
    assert await scratch.redis.ttl(key) > 60  # the longer expiry is kept
    await scratch.store.revoke_user(user, 60, revoked_at=now + 5)
    assert await scratch.redis.get(key) == repr(now + 5)


async def test_an_unreachable_store_still_fails_open_for_access_tokens() -> None:
    """An outage (no answer at all) is not a store that lost its data: REVOCATION_FAIL_OPEN
    still applies to it, as documented."""
    store = RedisRevocationStore(Redis.from_url("redis://127.0.0.1:1/0"), "test-revoked-nowhere")
    try:
        assert not await store.is_revoked(str(uuid.uuid4()), str(uuid.uuid4()), time.time())
        with pytest.raises(ServiceUnavailable):
            await store.is_revoked(
                str(uuid.uuid4()), str(uuid.uuid4()), time.time(), long_lived=True
            )
    finally:
        await store.close()


async def test_the_memory_store_is_always_complete_and_refills_by_publishing() -> None:
    store = MemoryRevocationStore()
    assert await store.is_complete()
    assert not await store.is_revoked("jti", "user", time.time())
    now = time.time()

    async def publish() -> int:
        return await store.restore(
            [
                Denial("jti", "token", now + 60),
                Denial("sid", "login", now + 60),
                Denial("user", "user", now + 60, revoked_at=now),
                Denial("jti", "gone", now - 1),
            ]
        )

    assert await store.refill(publish)
    assert await store.is_revoked("token", "someone", now)
    assert await store.is_revoked("other", "someone", now, "login")
    assert await store.is_revoked("other", "user", now)
    assert not await store.is_revoked("other", "user", now + 0.001)
    assert not await store.is_revoked("gone", "someone", now)
    await store.revoke_user("user", 60, revoked_at=now - 5)
    assert not await store.is_revoked("other", "user", now + 0.001)
    assert await store.is_revoked("other", "user", now - 1)
