"""What a request with a verified token must still pass: its revocation lookup and its
rate-limit count, in one Redis round trip when Redis holds both.

With the full stack's Redis and the sliding-window-counter strategy, one pipeline carries
the revocation `MGET` (marker included) and `limits`' own two scripts for the client's
window (count the hit, read the window). Their answers are then read as the separate calls
would be, in the same order and each with its own failure policy: revoked is 401, a store
without its marker 503 (never failing open), then over the limit 429. In memory (the
embedded mode) or with the moving-window strategy, the two are asked one after the other.

The count is taken before the revocation is known, so a revoked token's request counts in
its user's budget; refused with 401, it also counts in its address's, as every refused
token does (gateway.proxy).
"""

from redis.exceptions import RedisError

from gateway.ratelimit import RateLimits, StorageUnavailable
from shared.errors import InvalidToken, ServiceUnavailable
from shared.revocation import RedisRevocationStore
from shared.security import Identity, TokenVerifier


class Admission:
    def __init__(self, verifier: TokenVerifier, rate_limits: RateLimits) -> None:
        self._verifier = verifier
        self._rate_limits = rate_limits
        store = verifier.revocations
        self._store: RedisRevocationStore | None = None
        if isinstance(store, RedisRevocationStore) and store.redis is rate_limits.redis:
            self._store = store

    async def admit(
        self,
        method: str,
        path: str,
        identity: Identity,
        client_ip: str,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        """Raises 401 for a revoked token, 503, or 429; the rate-limit headers of the
        answer go into `headers`."""
        policy, key = self._rate_limits.policy_for(method, path, identity, client_ip)
        window = self._rate_limits.sliding_window(policy, key)
        store = self._store
        if store is None or window is None:
            await self._verifier.check_revocation(identity)
            await self._rate_limits.enforce(method, path, identity, client_ip, headers)
            return
        pipe = store.redis.pipeline(transaction=False)
        pipe.mget(store.lookup_keys(identity.jti, str(identity.user_id), identity.session_id))
        window.queue(pipe)
        try:
            entries, acquired, counts = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError) as exc:
            store.lookup_failed(exc, long_lived=identity.long_lived)
            self._storage_failed(exc)
            return
        if isinstance(entries, Exception):
            store.lookup_failed(entries, long_lived=identity.long_lived)
        elif store.revoked_in(entries, identity.issued_at):
            raise InvalidToken("Token has been revoked")
        try:
            decision = await window.decide(acquired, counts)
        except (RedisError, OSError) as exc:
            self._storage_failed(exc)
            return
        self._rate_limits.apply(decision, headers)

    def _storage_failed(self, exc: Exception) -> None:
        try:
            self._rate_limits.storage_failed(exc)
        except StorageUnavailable as unavailable:
            raise ServiceUnavailable("Rate limiting is unavailable") from unavailable
