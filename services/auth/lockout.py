"""Brute-force protection per account: password attempts are counted per (normalised) email
address, whoever sends them and from wherever, and after LOGIN_MAX_FAILURES failures within
LOGIN_FAILURE_WINDOW_SECONDS the address is locked for LOGIN_LOCKOUT_SECONDS, twice as long
at each further lockout (remembered for a day), up to LOGIN_LOCKOUT_MAX_SECONDS.

An attempt is counted before the password is checked and forgotten when it succeeds, so
that parallel guesses cannot slip past the count. Addresses with no account are counted
and locked the same way: the answer tells nothing about who has an account. A successful
password reset clears the address's count and lock.

The counts live in Redis when REDIS_URL is set (shared by every auth replica), else in
memory. While Redis cannot be reached, attempts are let through (and logged): the per-address
limit of the gateway still holds, and logins keep working."""

import hashlib
import math
import time
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.auth.settings import AuthSettings
from shared.logging import get_logger

log = get_logger(__name__)

LEVEL_MEMORY_SECONDS = 24 * 3600


@dataclass(frozen=True)
class LockoutPolicy:
    max_failures: int
    window_seconds: int
    base_seconds: int
    max_seconds: int

    @classmethod
    def from_settings(cls, settings: AuthSettings) -> "LockoutPolicy":
        return cls(
            settings.login_max_failures,
            settings.login_failure_window_seconds,
            settings.login_lockout_seconds,
            max(settings.login_lockout_seconds, settings.login_lockout_max_seconds),
        )

    def interval(self, level: int) -> float:
        """How long the `level`-th lockout in a row lasts."""
        return float(min(self.base_seconds * 2 ** min(level - 1, 32), self.max_seconds))


class LoginLockout(Protocol):
    async def attempt(self, email: str) -> int | None:
        """Counts an attempt on this address: None if it may go on, else the seconds until
        it may be tried again."""
        ...

    async def succeeded(self, email: str) -> None: ...

    async def clear(self, email: str) -> None:
        """Forgets the address's failures and lockouts (a password reset)."""
        ...

    async def close(self) -> None: ...


def _key(email: str) -> str:
    return hashlib.sha256(email.encode()).hexdigest()


class MemoryLoginLockout:
    def __init__(self, policy: LockoutPolicy) -> None:
        self._policy = policy
        self._failures: dict[str, tuple[int, float]] = {}
        self._locked_until: dict[str, float] = {}
        self._levels: dict[str, tuple[int, float]] = {}

    async def attempt(self, email: str) -> int | None:
        key, now = _key(email), time.monotonic()
        locked_until = self._locked_until.get(key, 0.0)
        if locked_until > now:
            return math.ceil(locked_until - now)
        count, expires = self._failures.get(key, (0, 0.0))
        if expires <= now:
            count, expires = 0, now + self._policy.window_seconds
        count += 1
        if count <= self._policy.max_failures:
            self._failures[key] = (count, expires)
            return None
        self._failures.pop(key, None)
        level, level_expires = self._levels.get(key, (0, 0.0))
        level = level + 1 if level_expires > now else 1
        self._levels[key] = (level, now + LEVEL_MEMORY_SECONDS)
        interval = self._policy.interval(level)
        self._locked_until[key] = now + interval
        return math.ceil(interval)

    async def succeeded(self, email: str) -> None:
        self._failures.pop(_key(email), None)

    async def clear(self, email: str) -> None:
        key = _key(email)
        self._failures.pop(key, None)
        self._locked_until.pop(key, None)
        self._levels.pop(key, None)

    async def close(self) -> None:
        return None


# KEYS: failures, lock, level. ARGV: max failures, window s, base s, max s, level memory s.
# Returns 0 when the attempt may go on, else the milliseconds until the address may be tried.
_ATTEMPT = """
local locked = redis.call('PTTL', KEYS[2])
if locked > 0 then return locked end
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
if count <= tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
local level = redis.call('INCR', KEYS[3])
redis.call('EXPIRE', KEYS[3], ARGV[5])
local exponent = math.min(level - 1, 32)
local interval = math.min(tonumber(ARGV[3]) * 2 ^ exponent, tonumber(ARGV[4]))
local milliseconds = math.floor(interval * 1000)
redis.call('SET', KEYS[2], level, 'PX', milliseconds)
return milliseconds
"""


class RedisLoginLockout:
    def __init__(self, redis: Redis, policy: LockoutPolicy, prefix: str) -> None:
        self._redis = redis
        self._policy = policy
        self._prefix = prefix
        self._script = redis.register_script(_ATTEMPT)

    def _keys(self, email: str) -> list[str]:
        key = _key(email)
        return [f"{self._prefix}:{part}:{key}" for part in ("failures", "lock", "level")]

    async def attempt(self, email: str) -> int | None:
        policy = self._policy
        try:
            milliseconds = int(
                await self._script(
                    keys=self._keys(email),
                    args=[
                        policy.max_failures,
                        policy.window_seconds,
                        policy.base_seconds,
                        policy.max_seconds,
                        LEVEL_MEMORY_SECONDS,
                    ],
                )
            )
        except (RedisError, OSError) as exc:
            log.warning("login_lockout_unavailable", error=repr(exc))
            return None
        return math.ceil(milliseconds / 1000) if milliseconds > 0 else None

    async def succeeded(self, email: str) -> None:
        try:
            await self._redis.delete(self._keys(email)[0])
        except (RedisError, OSError) as exc:
            log.warning("login_lockout_unavailable", error=repr(exc))

    async def clear(self, email: str) -> None:
        try:
            await self._redis.delete(*self._keys(email))
        except (RedisError, OSError) as exc:
            log.warning("login_lockout_unavailable", error=repr(exc))

    async def close(self) -> None:
        await self._redis.aclose()


def login_lockout(settings: AuthSettings) -> LoginLockout:
    policy = LockoutPolicy.from_settings(settings)
    if settings.redis_url:
        redis = Redis.from_url(settings.redis_url, socket_connect_timeout=1.0, socket_timeout=1.0)
        return RedisLoginLockout(redis, policy, f"{settings.queue_prefix}:login")
    return MemoryLoginLockout(policy)
