"""Auth's database is the record of every revocation in force, and the shared store a cache
of it: whatever was revoked (a logout's access token and login, an API token, every token of
a user until an instant) is back in an emptied store once auth has refilled it, exactly
(a user's instant to the sub-second), and nothing that has expired comes back. On SQLite and
PostgreSQL, migrated as the launcher migrates, against a real Redis under a prefix of its
own."""

import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from redis.asyncio import Redis
from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from services.auth.models import Account, ApiToken, Base, RefreshToken
from services.auth.revocations import (
    Revocation,
    RevocationPublisher,
    deny_access_token,
    deny_user,
    purge_expired,
    revoke_all_sessions,
    revoke_other_sessions,
)
from services.auth.settings import AuthSettings
from shared.db import Database, utcnow
from shared.errors import ServiceUnavailable
from shared.migrations import upgrade_to_head_async
from shared.registry import AUTH
from shared.revocation import RedisRevocationStore
from shared.security import Identity
from shared.testing import eventually
from tests.conftest import REDIS, require_dependencies
from tests.databases import scratch_database_url

SETTINGS = AuthSettings(access_token_ttl_seconds=900, jwt_leeway_seconds=10)


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with scratch_database_url(request.param, tmp_path, "auth_revocations") as url:
        await upgrade_to_head_async(AUTH.migrations_dir, url)
        database = Database(url)
        yield database
        await database.dispose()


@pytest.fixture
async def redis() -> AsyncIterator[tuple[RedisRevocationStore, Redis, str]]:
    require_dependencies("Redis")
    prefix = f"test-auth-revoked-{uuid.uuid4().hex[:12]}"
    client = Redis.from_url(f"redis://{REDIS[0]}:{REDIS[1]}/0", decode_responses=True)
    store = RedisRevocationStore(Redis.from_url(f"redis://{REDIS[0]}:{REDIS[1]}/0"), prefix)
    yield store, client, prefix
    keys = [key async for key in client.scan_iter(f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()
    await store.close()


async def flush(client: Redis, prefix: str) -> None:
    keys = [key async for key in client.scan_iter(f"{prefix}:*")]
    if keys:
        await client.delete(*keys)


async def new_account(database: Database) -> uuid.UUID:
    async with database.unit_of_work() as session:
        account = Account(
            email=f"{uuid.uuid4().hex[:12]}@example.com", name="Ada", password_hash="x"
        )
        session.add(account)
        await session.flush()
        return account.id


async def new_login(database: Database, account_id: uuid.UUID) -> uuid.UUID:
    family = uuid.uuid4()
    async with database.unit_of_work() as session:
        session.add(
            RefreshToken(
                account_id=account_id,
                family_id=family,
                token_hash=uuid.uuid4().hex,
                expires_at=utcnow() + timedelta(days=1),
            )
        )
    return family


def access_identity(account_id: uuid.UUID, session_id: uuid.UUID) -> Identity:
    return Identity(
        user_id=account_id,
        roles=("student",),
        jti=str(uuid.uuid4()),
        expires_at=int(time.time()) + 900,
        session_id=str(session_id),
    )


def publisher(database: Database, store: RedisRevocationStore) -> RevocationPublisher:
    return RevocationPublisher(database, store, SETTINGS, check_seconds=0.1)


async def test_the_migration_matches_the_model(database: Database) -> None:
    def differences(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return [
            difference
            for difference in compare_metadata(context, Base.metadata)
            if Revocation.__tablename__ in repr(difference)
        ]

    async with database.engine.connect() as connection:
        assert await connection.run_sync(differences) == []


async def test_every_revocation_in_force_comes_back_after_the_store_lost_it(
    database: Database, redis: tuple[RedisRevocationStore, Redis, str]
) -> None:
    store, client, prefix = redis
    account = await new_account(database)
    other = await new_account(database)
    logged_out_login = await new_login(database, account)
    live_login = await new_login(database, account)
    logged_out = access_identity(account, logged_out_login)
    async with database.unit_of_work() as session:
        # What a logout does: the login's refresh tokens, and the access token's jti.
        await session.execute(
            update(RefreshToken)
            .where(RefreshToken.family_id == logged_out_login)
            .values(revoked_at=utcnow())
        )
        await deny_access_token(session, store, logged_out)
        user_revoked_at = await deny_user(session, store, other, SETTINGS)
        api_token = ApiToken(
            account_id=account,
            name="ci",
            roles="student",
            expires_at=utcnow() + timedelta(days=30),
            revoked_at=utcnow(),
        )
        session.add(api_token)
    await flush(client, prefix)
    assert not await store.is_complete()

    assert await publisher(database, store).refill()
    assert await store.is_complete()
    now = time.time()
    assert await store.is_revoked(logged_out.jti, str(account), now, str(live_login))
    assert await store.is_revoked(str(uuid.uuid4()), str(account), now, str(logged_out_login))
    assert await store.is_revoked(str(api_token.id), str(account), now, long_lived=True)
    assert not await store.is_revoked(str(uuid.uuid4()), str(account), now, str(live_login))
    # The user's instant itself, not the refill's: a login right after it stands.
    assert await client.get(f"{prefix}:user:{other}") == repr(user_revoked_at)
    assert await store.is_revoked(str(uuid.uuid4()), str(other), user_revoked_at)
    assert not await store.is_revoked(str(uuid.uuid4()), str(other), user_revoked_at + 1e-6)
    ttl = await client.ttl(f"{prefix}:jti:{logged_out.jti}")
    assert 890 <= ttl <= 900


async def test_what_has_expired_is_neither_published_nor_kept(
    database: Database, redis: tuple[RedisRevocationStore, Redis, str]
) -> None:
    store, client, prefix = redis
    account = await new_account(database)
    old_login = await new_login(database, account)
    async with database.unit_of_work() as session:
        long_ago = utcnow() - timedelta(hours=1)
        await session.execute(
            update(RefreshToken)
            .where(RefreshToken.family_id == old_login)
            .values(revoked_at=long_ago)
        )
        session.add(
            Revocation(
                kind="jti",
                subject="expired",
                revoked_at=long_ago.timestamp(),
                expires_at=long_ago + timedelta(minutes=15),
            )
        )
    assert await publisher(database, store).refill()
    assert sorted([key async for key in client.scan_iter(f"{prefix}:*")]) == [f"{prefix}:ready"]
    async with database.unit_of_work() as session:
        assert await purge_expired(session) == 1
    async with database.unit_of_work() as session:
        assert (await session.scalars(select(Revocation))).all() == []


async def test_the_check_refills_only_a_store_without_its_marker(
    database: Database, redis: tuple[RedisRevocationStore, Redis, str]
) -> None:
    store, client, prefix = redis
    account = await new_account(database)
    identity = access_identity(account, await new_login(database, account))
    async with database.unit_of_work() as session:
        await deny_access_token(session, store, identity)
    keeper = publisher(database, store)
    await flush(client, prefix)
    with pytest.raises(ServiceUnavailable):
        await store.is_revoked(str(uuid.uuid4()), str(account), time.time())
    assert await keeper.check()
    assert not await keeper.check()
    assert await store.is_revoked(identity.jti, str(account), time.time())


async def test_the_publisher_fills_at_start_and_again_after_a_flush(
    database: Database, redis: tuple[RedisRevocationStore, Redis, str]
) -> None:
    store, client, prefix = redis
    account = await new_account(database)
    identity = access_identity(account, await new_login(database, account))
    async with database.unit_of_work() as session:
        await deny_access_token(session, store, identity)
    await flush(client, prefix)
    keeper = publisher(database, store)
    await keeper.start()
    try:
        assert await store.is_complete()
        await flush(client, prefix)
        await eventually(store.is_complete, within_seconds=10, interval=0.05)
        assert await store.is_revoked(identity.jti, str(account), time.time())
    finally:
        await keeper.stop()


async def test_revoking_all_sessions_is_recorded_and_denied(
    database: Database, redis: tuple[RedisRevocationStore, Redis, str]
) -> None:
    store, client, prefix = redis
    account = await new_account(database)
    first, second = await new_login(database, account), await new_login(database, account)
    async with database.unit_of_work() as session:
        record = ApiToken(
            account_id=account, name="ci", roles="student", expires_at=utcnow() + timedelta(days=30)
        )
        session.add(record)
    issued_before = time.time()
    async with database.unit_of_work() as session:
        await revoke_all_sessions(session, store, account, settings=SETTINGS)
    async with database.unit_of_work() as session:
        refresh = (
            await session.scalars(select(RefreshToken).where(RefreshToken.account_id == account))
        ).all()
        assert {token.family_id for token in refresh} == {first, second}
        assert all(token.revoked_at is not None for token in refresh)
        api_token = await session.get(ApiToken, record.id)
        assert api_token is not None
        assert api_token.revoked_at is not None
    await flush(client, prefix)
    assert await publisher(database, store).refill()
    assert await store.is_revoked(str(uuid.uuid4()), str(account), issued_before, str(first))
    assert await store.is_revoked(str(uuid.uuid4()), str(account), issued_before)
    assert await store.is_revoked(str(record.id), str(account), time.time(), long_lived=True)
    assert not await store.is_revoked(str(uuid.uuid4()), str(account), time.time() + 1)


async def test_revoking_the_other_sessions_keeps_the_current_one(
    database: Database, redis: tuple[RedisRevocationStore, Redis, str]
) -> None:
    store, client, prefix = redis
    account = await new_account(database)
    current, other = await new_login(database, account), await new_login(database, account)
    async with database.unit_of_work() as session:
        await revoke_other_sessions(session, store, account, current, settings=SETTINGS)
    await flush(client, prefix)
    assert await publisher(database, store).refill()
    now = time.time()
    assert await store.is_revoked(str(uuid.uuid4()), str(account), now, str(other))
    assert not await store.is_revoked(str(uuid.uuid4()), str(account), now, str(current))
