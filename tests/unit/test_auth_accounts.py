"""Auth's accounts on a migrated database: the first admin at a special-use domain logs in,
mailed tokens are single-use and expire and only their hash is kept, and
REQUIRE_VERIFIED_EMAIL refuses logins and refreshes of unverified accounts."""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import jwt
import pytest
from sqlalchemy import select

from services.auth import one_time_tokens, service
from services.auth.errors import EmailNotVerified
from services.auth.keys import KeyRing
from services.auth.lockout import LockoutPolicy, MemoryLoginLockout
from services.auth.models import Account, OneTimeToken
from services.auth.one_time_tokens import TokenRejected
from services.auth.schemas import LoginRequest, RegisterRequest
from services.auth.settings import AuthSettings
from services.auth.tokens import TokenIssuer
from shared.db import Database
from shared.migrations import upgrade_to_head_async
from shared.revocation import MemoryRevocationStore

MIGRATIONS = Path(__file__).resolve().parents[2] / "services" / "auth" / "migrations"
PASSWORD = "admin password"


@dataclass
class Auth:
    settings: AuthSettings
    database: Database
    issuer: TokenIssuer
    lockout: MemoryLoginLockout


async def make_auth(tmp_path: Path, **settings: object) -> Auth:
    url = f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}"
    await upgrade_to_head_async(MIGRATIONS, url)
    auth_settings = AuthSettings(database_url=url, **settings)  # type: ignore[arg-type]
    database = Database(url)
    keys = KeyRing(database, 3600)
    await keys.ensure_signing_key()
    issuer = TokenIssuer(auth_settings, keys, MemoryRevocationStore())
    lockout = MemoryLoginLockout(LockoutPolicy.from_settings(auth_settings))
    return Auth(auth_settings, database, issuer, lockout)


@pytest.fixture
async def auth(tmp_path: Path) -> AsyncIterator[Auth]:
    made = await make_auth(tmp_path, admin_email="Admin@Lyceum.Test", admin_password=PASSWORD)
    yield made
    await made.database.dispose()


async def log_in(auth: Auth, email: str, password: str) -> dict[str, object]:
    async with auth.database.unit_of_work() as session:
        tokens = await service.login(
            session,
            auth.issuer,
            auth.lockout,
            auth.settings,
            LoginRequest(email=email, password=password),
        )
    claims: dict[str, object] = jwt.decode(tokens.access_token, options={"verify_signature": False})
    return claims


async def test_the_first_admin_at_a_special_use_domain_logs_in(auth: Auth) -> None:
    async with auth.database.unit_of_work() as session:
        await service.create_first_admin(session, auth.settings)
    async with auth.database.sessions() as session:
        admin = await session.scalar(select(Account).where(Account.role == "admin"))
    assert admin is not None
    assert admin.email == "admin@lyceum.test"
    assert admin.email_verified
    for typed in ("admin@lyceum.test", "Admin@Lyceum.Test "):
        claims = await log_in(auth, typed, PASSWORD)
        assert claims["roles"] == ["admin"]
        assert claims["email_verified"] is True


async def test_mailed_tokens_are_single_use_expiring_and_stored_hashed(auth: Auth) -> None:
    async with auth.database.unit_of_work() as session:
        await service.create_first_admin(session, auth.settings)
        admin = await session.scalar(select(Account))
        assert admin is not None
        record, value = one_time_tokens.issue(
            admin.id, "verify_email", admin.email, timedelta(hours=1)
        )
        expired, old_value = one_time_tokens.issue(
            admin.id, "verify_email", admin.email, timedelta(seconds=-1)
        )
        session.add_all([record, expired])
    async with auth.database.sessions() as session:
        stored = await session.get(OneTimeToken, record.id)
    assert stored is not None
    assert stored.token_hash == one_time_tokens.hash_token(value) != value
    assert value not in repr(vars(stored))

    async with auth.database.unit_of_work() as session:
        spent = await one_time_tokens.spend(session, ("verify_email",), value)
        assert spent.id == record.id
    for presented, purposes, reason in (
        (value, ("verify_email",), "used"),
        (old_value, ("verify_email",), "expired"),
        ("made-up", ("verify_email",), "unknown"),
        (old_value, ("reset_password",), "unknown"),
    ):
        async with auth.database.unit_of_work() as session:
            with pytest.raises(TokenRejected) as rejected:
                await one_time_tokens.spend(session, purposes, presented)  # type: ignore[arg-type]
        assert rejected.value.reason == reason


async def test_unverified_accounts_cannot_log_in_or_refresh_when_verification_is_required(
    tmp_path: Path,
) -> None:
    auth = await make_auth(tmp_path, require_verified_email=True)
    try:
        request = RegisterRequest(email="ada@example.com", password="correct horse", name="Ada")
        async with auth.database.unit_of_work() as session:
            _, signed_up = await service.register(session, auth.issuer, request)
        with pytest.raises(EmailNotVerified):
            await log_in(auth, "ada@example.com", "correct horse")
        with pytest.raises(EmailNotVerified):
            await service.refresh(auth.database, auth.issuer, signed_up.refresh_token)
        async with auth.database.unit_of_work() as session:
            account = await session.scalar(select(Account))
            assert account is not None
            account.email_verified = True
        # The refresh token was not spent by the refused refresh.
        refreshed = await service.refresh(auth.database, auth.issuer, signed_up.refresh_token)
        assert refreshed.access_token
        claims = await log_in(auth, "ada@example.com", "correct horse")
        assert claims["email_verified"] is True
    finally:
        await auth.database.dispose()
