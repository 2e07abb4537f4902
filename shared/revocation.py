"""Denied access tokens: by `jti` until they expire, and by user from a point in time.

A user's revocation point is a float of seconds, compared with the token's `iat`, which auth
issues with sub-second precision (RFC 7519 NumericDate may be fractional): a token issued
in the same second as, but after, a revocation (the new login after a role change) is not
caught by it.

Redis in the full stack so that every service and gateway replica sees the same
list; a process-wide dictionary in the embedded mode, where everything shares a process.
"""

import time
from collections.abc import Callable
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.errors import ServiceUnavailable
from shared.logging import get_logger

log = get_logger(__name__)


class RevocationStore(Protocol):
    async def revoke_token(self, jti: str, expires_at: int) -> None: ...

    async def revoke_user(self, user_id: str, ttl_seconds: int) -> None: ...

    async def revoke_session(self, session_id: str, ttl_seconds: int) -> None: ...

    async def is_revoked(
        self,
        jti: str,
        user_id: str,
        issued_at: float,
        session_id: str | None = None,
        *,
        long_lived: bool = False,
    ) -> bool: ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


class MemoryRevocationStore:
    def __init__(self) -> None:
        self._tokens: dict[str, int] = {}
        self._users: dict[str, tuple[float, float]] = {}
        self._sessions: dict[str, int] = {}

    async def revoke_token(self, jti: str, expires_at: int) -> None:
        self._tokens[jti] = expires_at

    async def revoke_user(self, user_id: str, ttl_seconds: int) -> None:
        now = time.time()
        self._users[user_id] = (now, now + ttl_seconds)

    async def revoke_session(self, session_id: str, ttl_seconds: int) -> None:
        self._sessions[session_id] = int(time.time()) + ttl_seconds

    async def is_revoked(
        self,
        jti: str,
        user_id: str,
        issued_at: float,
        session_id: str | None = None,
        *,
        long_lived: bool = False,
    ) -> bool:
        now = time.time()
        for entries, key in ((self._tokens, jti), (self._sessions, session_id)):
            until = entries.get(key) if key else None
            if until is not None:
                if until > now:
                    return True
                del entries[key]  # type: ignore[arg-type]
        user_entry = self._users.get(user_id)
        if user_entry is not None:
            revoked_at, user_until = user_entry
            if user_until <= now:
                del self._users[user_id]
            elif issued_at <= revoked_at:
                return True
        return False

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None


class RedisRevocationStore:
    """`fail_open`: while Redis cannot be reached, tokens count as not revoked (they still
    expire within minutes) rather than every authenticated request failing; else the lookup
    raises ServiceUnavailable (503 in the envelope). A `long_lived` token (an API token,
    valid for up to a year) never fails open: a revoked one must not come back for the
    length of an outage. `on_error` is called on every failed lookup (the gateway counts
    them in a metric)."""

    def __init__(
        self,
        redis: Redis,
        prefix: str = "lyceum:revoked",
        *,
        fail_open: bool = True,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._fail_open = fail_open
        self._on_error = on_error

    async def revoke_token(self, jti: str, expires_at: int) -> None:
        ttl = max(1, expires_at - int(time.time()))
        await self._redis.set(f"{self._prefix}:jti:{jti}", 1, ex=ttl)

    async def revoke_user(self, user_id: str, ttl_seconds: int) -> None:
        await self._redis.set(
            f"{self._prefix}:user:{user_id}", repr(time.time()), ex=max(1, ttl_seconds)
        )

    async def revoke_session(self, session_id: str, ttl_seconds: int) -> None:
        await self._redis.set(f"{self._prefix}:sid:{session_id}", 1, ex=max(1, ttl_seconds))

    async def is_revoked(
        self,
        jti: str,
        user_id: str,
        issued_at: float,
        session_id: str | None = None,
        *,
        long_lived: bool = False,
    ) -> bool:
        try:
            token_entry, user_entry, session_entry = await self._redis.mget(
                f"{self._prefix}:jti:{jti}",
                f"{self._prefix}:user:{user_id}",
                f"{self._prefix}:sid:{session_id or '-'}",
            )
        except (RedisError, OSError) as exc:
            fail_open = self._fail_open and not long_lived
            log.warning("revocation_store_unavailable", error=repr(exc), fail_open=fail_open)
            if self._on_error is not None:
                self._on_error()
            if fail_open:
                return False
            raise ServiceUnavailable("Token revocation checks are unavailable") from exc
        if token_entry is not None or session_entry is not None:
            return True
        return user_entry is not None and issued_at <= float(user_entry)

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except Exception:
            return False

    async def close(self) -> None:
        await self._redis.aclose()


_process_store = MemoryRevocationStore()


def revocation_store(
    redis_url: str | None,
    prefix: str = "lyceum:revoked",
    *,
    fail_open: bool = True,
    on_error: Callable[[], None] | None = None,
) -> RevocationStore:
    if redis_url:
        redis = Redis.from_url(redis_url, socket_connect_timeout=1.0, socket_timeout=1.0)
        return RedisRevocationStore(redis, prefix, fail_open=fail_open, on_error=on_error)
    return _process_store
