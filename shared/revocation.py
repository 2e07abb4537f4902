"""Denied access tokens: by `jti` until they expire, by login (`sid`), and by user from a
point in time.

A user's revocation point is a float of seconds, compared with the token's `iat`, which auth
issues with sub-second precision (RFC 7519 NumericDate may be fractional): a token issued
in the same second as, but after, a revocation (the new login after a role change) is not
caught by it.

Redis in the full stack so that every service and gateway replica sees the same
list; a process-wide dictionary in the embedded mode, where everything shares a process.

Redis is a cache of auth's database, which records every revocation still in force. The
marker key `<prefix>:ready`, without expiry, says that the cache holds all of them: auth
sets it once it has re-published them (`refill`), and checks for it every few seconds. A
Redis that lost its data (restarted without persistence, failed over to an empty replica,
flushed, evicted) has no marker, and until auth has refilled it a lookup cannot tell a
revoked token from a good one: it answers 503, whatever `fail_open` says. The marker is read
in the same `MGET` as the entries, so the check stays one round trip.
"""

import math
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.errors import ServiceUnavailable
from shared.logging import get_logger

log = get_logger(__name__)

# How long a refill may take before its fence lapses and it no longer counts.
REFILL_FENCE_SECONDS = 600
# While the marker is missing, each store logs it at most this often.
INCOMPLETE_LOG_SECONDS = 10.0
# Entries sent to Redis per pipeline when a refill publishes many.
RESTORE_BATCH = 500


DenialKind = Literal["jti", "sid", "user"]


@dataclass(frozen=True)
class Denial:
    """One revocation in force, as auth re-publishes it from its database. `expires_at`
    (seconds since the epoch) is when no token it denies can still be valid; a user's
    `revoked_at` is the instant until which the user's tokens are denied."""

    kind: DenialKind
    subject: str
    expires_at: float
    revoked_at: float = 0.0


class RevocationStore(Protocol):
    async def revoke_token(self, jti: str, expires_at: int) -> None: ...

    async def revoke_user(
        self, user_id: str, ttl_seconds: int, *, revoked_at: float | None = None
    ) -> None: ...

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

    async def restore(self, denials: Iterable[Denial]) -> int:
        """Puts entries back (a user's only if it moves the user's revocation point later);
        returns how many were still in force."""
        ...

    async def is_complete(self) -> bool:
        """Whether the store holds every revocation in force (the marker is there)."""
        ...

    async def refill(self, publish: Callable[[], Awaitable[int]]) -> bool:
        """Runs `publish` (which restores every revocation in force), then marks the store
        complete, unless the store lost its data meanwhile: then False, and the refill
        must run again."""
        ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


class MemoryRevocationStore:
    """The embedded mode's: it lives as long as the process, auth included, so it never
    finds itself emptied under a running auth, and is always complete."""

    def __init__(self) -> None:
        self._tokens: dict[str, int] = {}
        self._users: dict[str, tuple[float, float]] = {}
        self._sessions: dict[str, int] = {}

    async def revoke_token(self, jti: str, expires_at: int) -> None:
        self._tokens[jti] = max(expires_at, self._tokens.get(jti, 0))

    async def revoke_user(
        self, user_id: str, ttl_seconds: int, *, revoked_at: float | None = None
    ) -> None:
        point = time.time() if revoked_at is None else revoked_at
        until = time.time() + ttl_seconds
        current = self._users.get(user_id)
        if current is not None and current[0] >= point:
            self._users[user_id] = (current[0], max(current[1], until))
        else:
            self._users[user_id] = (point, until)

    async def revoke_session(self, session_id: str, ttl_seconds: int) -> None:
        until = int(time.time()) + ttl_seconds
        self._sessions[session_id] = max(until, self._sessions.get(session_id, 0))

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

    async def restore(self, denials: Iterable[Denial]) -> int:
        now = time.time()
        count = 0
        for denial in denials:
            ttl = math.ceil(denial.expires_at - now)
            if ttl <= 0:
                continue
            count += 1
            if denial.kind == "jti":
                await self.revoke_token(denial.subject, math.ceil(denial.expires_at))
            elif denial.kind == "sid":
                await self.revoke_session(denial.subject, ttl)
            else:
                await self.revoke_user(denial.subject, ttl, revoked_at=denial.revoked_at)
        return count

    async def is_complete(self) -> bool:
        return True

    async def refill(self, publish: Callable[[], Awaitable[int]]) -> bool:
        await publish()
        return True

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None


# A user's revocation point only ever moves later: a refill (or a slower replica) that
# writes an older point keeps the newer one, and at most lengthens its expiry.
_RAISE_USER_POINT = """
local current = redis.call('GET', KEYS[1])
if current and tonumber(current) >= tonumber(ARGV[1]) then
  if redis.call('TTL', KEYS[1]) < tonumber(ARGV[2]) then
    redis.call('EXPIRE', KEYS[1], ARGV[2])
  end
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""

# The marker is set only if the refill's fence is still there: a flush during the refill
# took the fence with it, and the entries restored before it.
_COMPLETE_REFILL = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], ARGV[1])
return 1
"""


class RedisRevocationStore:
    """`fail_open`: while Redis cannot be reached, tokens count as not revoked (they still
    expire within minutes) rather than every authenticated request failing; else the lookup
    raises ServiceUnavailable (503 in the envelope). A `long_lived` token (an API token,
    valid for up to a year) never fails open: a revoked one must not come back for the
    length of an outage. Nor does a Redis that answers without the marker (see the module's
    notes). `on_error` is called on every lookup that could not be answered (the gateway
    counts them in a metric)."""

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
        self.marker_key = f"{prefix}:ready"
        self._raise_user_point = redis.register_script(_RAISE_USER_POINT)
        self._complete_refill = redis.register_script(_COMPLETE_REFILL)
        self._incomplete_logged_at = float("-inf")

    def _key(self, kind: str, subject: str) -> str:
        return f"{self._prefix}:{kind}:{subject}"

    async def revoke_token(self, jti: str, expires_at: int) -> None:
        ttl = max(1, expires_at - int(time.time()))
        await self._redis.set(self._key("jti", jti), 1, ex=ttl)

    async def revoke_user(
        self, user_id: str, ttl_seconds: int, *, revoked_at: float | None = None
    ) -> None:
        point = time.time() if revoked_at is None else revoked_at
        await self._raise_user_point(
            keys=[self._key("user", user_id)], args=[repr(point), max(1, ttl_seconds)]
        )

    async def revoke_session(self, session_id: str, ttl_seconds: int) -> None:
        await self._redis.set(self._key("sid", session_id), 1, ex=max(1, ttl_seconds))

    @property
    def redis(self) -> Redis:
        return self._redis

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
            entries = await self._redis.mget(self.lookup_keys(jti, user_id, session_id))
        except (RedisError, OSError) as exc:
            return self.lookup_failed(exc, long_lived=long_lived)
        return self.revoked_in(entries, issued_at)

    # A lookup in three steps, so that a caller can send its MGET along with other commands
    # in one round trip (the gateway's rate limit): the keys, then what their values mean,
    # or what a lookup that could not be answered means.

    def lookup_keys(self, jti: str, user_id: str, session_id: str | None) -> list[str]:
        return [
            f"{self._prefix}:jti:{jti}",
            f"{self._prefix}:user:{user_id}",
            f"{self._prefix}:sid:{session_id or '-'}",
            self.marker_key,
        ]

    def revoked_in(self, entries: Sequence[bytes | str | None], issued_at: float) -> bool:
        """Whether the values of `lookup_keys` deny the token; 503 when the store lacks
        its marker and does not list the token."""
        token_entry, user_entry, session_entry, marker = entries
        if token_entry is not None or session_entry is not None:
            return True
        if user_entry is not None and issued_at <= float(user_entry):
            return True
        if marker is None:
            self._report_incomplete()
            raise ServiceUnavailable("Token revocation checks are unavailable")
        return False

    def lookup_failed(self, exc: Exception, *, long_lived: bool) -> bool:
        """A lookup that could not reach the store: not revoked when failing open, else
        503."""
        fail_open = self._fail_open and not long_lived
        log.warning("revocation_store_unavailable", error=repr(exc), fail_open=fail_open)
        if self._on_error is not None:
            self._on_error()
        if fail_open:
            return False
        raise ServiceUnavailable("Token revocation checks are unavailable") from exc

    def _report_incomplete(self) -> None:
        if self._on_error is not None:
            self._on_error()
        now = time.monotonic()
        if now - self._incomplete_logged_at >= INCOMPLETE_LOG_SECONDS:
            self._incomplete_logged_at = now
            log.warning("revocation_store_incomplete", marker=self.marker_key)

    async def restore(self, denials: Iterable[Denial]) -> int:
        now = time.time()
        count = 0
        async with self._redis.pipeline(transaction=False) as pipe:
            for denial in denials:
                ttl = math.ceil(denial.expires_at - now)
                if ttl <= 0:
                    continue
                count += 1
                key = self._key(denial.kind, denial.subject)
                if denial.kind == "user":
                    await self._raise_user_point(
                        keys=[key], args=[repr(denial.revoked_at), ttl], client=pipe
                    )
                else:
                    pipe.set(key, 1, ex=ttl)
                if len(pipe) >= RESTORE_BATCH:
                    await pipe.execute()
            await pipe.execute()
        return count

    async def is_complete(self) -> bool:
        return bool(await self._redis.exists(self.marker_key))

    async def refill(self, publish: Callable[[], Awaitable[int]]) -> bool:
        fence = f"{self._prefix}:refill:{uuid.uuid4().hex}"
        await self._redis.set(fence, 1, ex=REFILL_FENCE_SECONDS)
        await publish()
        completed = await self._complete_refill(
            keys=[fence, self.marker_key], args=[repr(time.time())]
        )
        return bool(completed)

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
