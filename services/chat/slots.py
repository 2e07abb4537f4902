"""At most CHAT_MAX_CONCURRENT_STREAMS generations per user at once, across replicas: a
Redis sorted set per user (full stack) or a set in memory. A slot expires on its own after
the longest a generation may run, so a replica that dies does not hold slots forever."""

import time
import uuid

from redis.asyncio import Redis

from shared.errors import RateLimitExceeded

# Drops expired slots, then takes one if fewer than the limit are held: 1, else 0.
ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


class GenerationSlots:
    def __init__(
        self, redis_url: str | None, prefix: str, limit: int, lifetime_seconds: float
    ) -> None:
        self._redis = Redis.from_url(redis_url, decode_responses=True) if redis_url else None
        self._prefix = f"{prefix}:chat:slots"
        self._limit = limit
        self._lifetime = lifetime_seconds
        self._held: dict[uuid.UUID, dict[uuid.UUID, float]] = {}

    async def acquire(self, user_id: uuid.UUID) -> uuid.UUID:
        slot = uuid.uuid4()
        now = time.time()
        if self._redis is not None:
            taken = await self._redis.eval(
                ACQUIRE,
                1,
                f"{self._prefix}:{user_id}",
                now,
                self._limit,
                now + self._lifetime,
                str(slot),
                int(self._lifetime) + 60,
            )
        else:
            held = self._held.setdefault(user_id, {})
            for expired in [s for s, until in held.items() if until <= now]:
                del held[expired]
            taken = len(held) < self._limit
            if taken:
                held[slot] = now + self._lifetime
        if not taken:
            raise RateLimitExceeded(
                f"At most {self._limit} replies can be generated at once",
                details={"limit": self._limit},
                headers={"Retry-After": "1"},
            )
        return slot

    async def release(self, user_id: uuid.UUID, slot: uuid.UUID) -> None:
        if self._redis is not None:
            await self._redis.zrem(f"{self._prefix}:{user_id}", str(slot))
        else:
            self._held.get(user_id, {}).pop(slot, None)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
