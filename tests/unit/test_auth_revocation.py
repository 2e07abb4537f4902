"""A user's revocation (role change, disable, delete) denies the tokens issued until that
instant, and not those issued right after it within the same second, such as the new login
that follows a role change. Against both stores, with frozen clocks, so that the "same
second" is certain rather than likely."""

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from redis.asyncio import Redis

from services.auth import tokens
from services.auth.models import Account
from services.auth.settings import AuthSettings
from services.auth.tokens import TokenIssuer
from shared import revocation
from shared.errors import InvalidToken
from shared.revocation import MemoryRevocationStore, RedisRevocationStore, RevocationStore
from shared.security import CallableKeySource, TokenVerifier
from tests.conftest import REDIS, require_dependencies

SIGNING_KEY = Ed25519PrivateKey.generate()


class FrozenClock:
    """Stands in for the `time` module of the code under test."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


class StaticKeys:
    async def signing_key(self) -> tuple[str, Ed25519PrivateKey]:
        return "key-1", SIGNING_KEY


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[RevocationStore]:
    if request.param == "memory":
        yield MemoryRevocationStore()
        return
    require_dependencies("Redis")
    prefix = f"test-revoked-{uuid.uuid4().hex[:12]}"
    redis = Redis.from_url(f"redis://{REDIS[0]}:{REDIS[1]}/0")
    redis_store = RedisRevocationStore(redis, prefix, fail_open=False)

    async def nothing_to_publish() -> int:
        return 0

    assert await redis_store.refill(nothing_to_publish)  # as auth does at start-up
    yield redis_store
    keys = [key async for key in redis.scan_iter(f"{prefix}:*")]
    if keys:
        await redis.delete(*keys)
    await redis_store.close()


@pytest.fixture
def second() -> float:
    """The start of the current whole second: every instant of a test falls within it."""
    return float(int(time.time()))


async def test_a_token_issued_after_a_user_revocation_in_the_same_second_is_not_revoked(
    store: RevocationStore, second: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(revocation, "time", FrozenClock(second + 0.25))
    user_id = str(uuid.uuid4())
    await store.revoke_user(user_id, 600)

    assert not await store.is_revoked(str(uuid.uuid4()), user_id, second + 0.75)
    assert not await store.is_revoked(str(uuid.uuid4()), user_id, second + 0.250001)
    for issued_at in (second + 0.25, second + 0.2, second, second - 1):
        assert await store.is_revoked(str(uuid.uuid4()), user_id, issued_at), issued_at
    assert not await store.is_revoked(str(uuid.uuid4()), str(uuid.uuid4()), second)


async def test_a_login_right_after_a_role_change_is_accepted_and_one_before_is_not(
    store: RevocationStore, second: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real issuing and verification paths: auth's `iat` is fractional, and the shared
    verifier hands it to the store as it is."""
    issuing_clock = FrozenClock(second + 0.1)
    monkeypatch.setattr(tokens, "time", issuing_clock)
    monkeypatch.setattr(revocation, "time", FrozenClock(second + 0.5))
    issuer = TokenIssuer(AuthSettings(), StaticKeys(), store)
    account = Account(id=uuid.uuid4(), email="ada@example.com", name="Ada", role="student")

    async def public_key(kid: str) -> Any:
        return SIGNING_KEY.public_key() if kid == "key-1" else None

    verifier = TokenVerifier(
        CallableKeySource(public_key),
        store,
        issuer="lyceum",
        audience="lyceum-api",
        algorithms=["EdDSA"],
    )

    before = await issuer.access_token(account, uuid.uuid4())
    await verifier.verify(before)
    await store.revoke_user(str(account.id), 600)  # the role changes
    account.role = "instructor"
    issuing_clock.now = second + 0.9
    after = await issuer.access_token(account, uuid.uuid4())

    identity = await verifier.verify(after)
    assert identity.roles == ("instructor",)
    assert identity.claims["iat"] == second + 0.9
    with pytest.raises(InvalidToken, match="revoked"):
        await verifier.verify(before)
