"""The gateway's revocation lookup and rate-limit count in one Redis round trip: the same
answers as the two asked apart, with the library's own figures for the window."""

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from limits import parse
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from redis.asyncio import Redis

from gateway.admission import Admission
from gateway.ratelimit import RateLimits, make_storage
from gateway.settings import GatewaySettings
from shared.errors import InvalidToken, RateLimitExceeded, ServiceUnavailable
from shared.revocation import RedisRevocationStore
from shared.security import Identity, TokenVerifier
from shared.testing import token_claims
from tests.conftest import REDIS, require_dependencies

LIMIT = 5


@dataclass
class Deployment:
    prefix: str
    rate_limits: RateLimits
    store: RedisRevocationStore
    admission: Admission
    redis: Redis

    async def admit(self, identity: Identity) -> list[tuple[bytes, bytes]]:
        headers: list[tuple[bytes, bytes]] = []
        await self.admission.admit("GET", "/api/v1/users/me", identity, "127.0.0.1", headers)
        return headers


@pytest.fixture
async def deployment() -> AsyncIterator[Deployment]:
    require_dependencies("Redis")
    prefix = f"test-admission-{uuid.uuid4().hex[:12]}"
    settings = GatewaySettings(
        redis_url=f"redis://{REDIS[0]}:{REDIS[1]}/0",
        queue_prefix=prefix,
        rate_limit_default=f"{LIMIT}/minute",
    )
    rate_limits = RateLimits(settings, make_storage(settings))
    assert rate_limits.redis is not None
    store = RedisRevocationStore(rate_limits.redis, f"{prefix}:revoked")
    verifier = TokenVerifier(
        _no_keys(), store, issuer="lyceum", audience="lyceum-api", algorithms=["EdDSA"]
    )
    redis = Redis.from_url(f"redis://{REDIS[0]}:{REDIS[1]}/0")
    await redis.set(store.marker_key, 1)
    yield Deployment(prefix, rate_limits, store, Admission(verifier, rate_limits), redis)
    keys = [key async for key in redis.scan_iter(f"{prefix}:*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()
    await store.close()


class _no_keys:
    async def get_key(self, kid: str) -> None:
        return None


def identity(**claims: object) -> Identity:
    payload = token_claims(sid=str(uuid.uuid4()), iat=time.time(), **claims)
    return Identity(
        user_id=uuid.UUID(str(payload["sub"])),
        roles=("student",),
        jti=str(payload["jti"]),
        expires_at=int(payload["exp"]),
        session_id=str(payload["sid"]),
        claims=payload,
    )


def header(headers: list[tuple[bytes, bytes]], name: str) -> str:
    return dict(headers)[name.encode()].decode()


async def test_each_request_counts_once_and_the_figures_are_the_library_s(
    deployment: Deployment,
) -> None:
    caller = identity()
    limiter = SlidingWindowCounterRateLimiter(deployment.rate_limits.storage)
    item = parse(f"{LIMIT}/minute")
    for remaining in range(LIMIT - 1, -1, -1):
        headers = await deployment.admit(caller)
        assert header(headers, "x-ratelimit-remaining") == str(remaining)
        stats = await limiter.get_window_stats(item, "default", f"user:{caller.user_id}")
        assert stats.remaining == remaining
        reset_after = int(header(headers, "x-ratelimit-reset")) - time.time()
        assert -1 <= reset_after <= 61
    with pytest.raises(RateLimitExceeded):
        await deployment.admit(caller)
    # Another user has a budget of their own.
    assert header(await deployment.admit(identity()), "x-ratelimit-remaining") == str(LIMIT - 1)


async def test_a_revoked_token_is_refused(deployment: Deployment) -> None:
    by_jti, by_session, by_user = identity(), identity(), identity()
    prefix = f"{deployment.prefix}:revoked"
    await deployment.redis.set(f"{prefix}:jti:{by_jti.jti}", 1, ex=60)
    await deployment.redis.set(f"{prefix}:sid:{by_session.session_id}", 1, ex=60)
    await deployment.redis.set(f"{prefix}:user:{by_user.user_id}", repr(time.time() + 1), ex=60)
    for revoked in (by_jti, by_session, by_user):
        with pytest.raises(InvalidToken):
            await deployment.admit(revoked)
    assert await deployment.admit(identity())


async def test_a_store_without_its_marker_answers_503_unless_it_lists_the_token(
    deployment: Deployment,
) -> None:
    revoked = identity()
    await deployment.redis.set(f"{deployment.prefix}:revoked:jti:{revoked.jti}", 1, ex=60)
    await deployment.redis.delete(deployment.store.marker_key)
    with pytest.raises(ServiceUnavailable):
        await deployment.admit(identity())
    with pytest.raises(InvalidToken):
        await deployment.admit(revoked)


async def test_scripts_redis_forgot_are_loaded_again(deployment: Deployment) -> None:
    caller = identity()
    assert header(await deployment.admit(caller), "x-ratelimit-remaining") == str(LIMIT - 1)
    await deployment.redis.script_flush()
    assert header(await deployment.admit(caller), "x-ratelimit-remaining") == str(LIMIT - 2)
