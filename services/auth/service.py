"""Accounts and their credentials: register, log in, refresh, log out, accounts made by
admins, API tokens, and the first admin. Routes call these; none of them commits (the
caller's unit of work does). Changing a password or an address is in `credentials.py`."""

import uuid

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.auth import api_tokens, mails
from services.auth import revocations as revocation_records
from services.auth.events import record_email_verified, record_user_created
from services.auth.lockout import LoginLockout
from services.auth.models import Account, ApiToken
from services.auth.passwords import hash_password, needs_rehash, verify_password
from services.auth.schemas import AccountCreate, LoginRequest, RegisterRequest
from services.auth.settings import AuthSettings
from services.auth.tokens import IssuedTokens, RefreshTokenReused, TokenIssuer
from shared.db import Database
from shared.errors import (
    AuthenticationRequired,
    Conflict,
    InvalidToken,
    NotFound,
    PermissionDenied,
    RateLimitExceeded,
)
from shared.logging import get_logger
from shared.pagination import PageParams, Pagination, paginate
from shared.revocation import RevocationStore
from shared.security import Identity

log = get_logger(__name__)


def email_taken(field: str = "email") -> Conflict:
    return Conflict("Email already registered", details={"field": field})


def too_many_attempts(retry_after: int) -> RateLimitExceeded:
    return RateLimitExceeded(
        "Too many failed attempts for this account; try again later",
        details={"policy": "login_failures", "retry_after": retry_after},
        headers={"Retry-After": str(retry_after)},
    )


async def check_attempt(lockout: LoginLockout, email: str) -> None:
    """Counts a password attempt on the address; 429 while the address is locked."""
    retry_after = await lockout.attempt(email)
    if retry_after is not None:
        raise too_many_attempts(retry_after)


async def _add_account(session: AsyncSession, account: Account) -> None:
    if await session.scalar(select(Account.id).where(Account.email == account.email)):
        raise email_taken()
    session.add(account)
    try:
        await session.flush()
    except IntegrityError as exc:  # taken meanwhile by a concurrent request
        raise email_taken() from exc
    record_user_created(session, account)


async def register(
    session: AsyncSession, issuer: TokenIssuer, request: RegisterRequest
) -> tuple[Account, IssuedTokens]:
    """A new account (never an admin: the request's role is student or instructor), its
    `user.created` and verification mail, and a session, so that the new user is signed in."""
    account = Account(
        email=request.email,
        name=request.name,
        role=request.role,
        password_hash=await hash_password(request.password),
        email_verified=False,
    )
    await _add_account(session, account)
    mails.queue_verification(session, account)
    return account, await issuer.start_session(session, account)


async def create_account(session: AsyncSession, request: AccountCreate) -> Account:
    """An account made by an admin, with any role. With a password, the user gets the
    verification mail as after signing up; without, a mail with a link to choose one (which
    verifies the address too)."""
    account = Account(
        email=request.email,
        name=request.name,
        role=request.role,
        password_hash=await hash_password(request.password) if request.password else None,
        email_verified=False,
    )
    await _add_account(session, account)
    if request.password:
        mails.queue_verification(session, account)
    else:
        mails.queue_account_setup(session, account)
    log.info("account_created_by_admin", account_id=str(account.id), role=account.role)
    return account


async def login(
    session: AsyncSession,
    issuer: TokenIssuer,
    lockout: LoginLockout,
    settings: AuthSettings,
    credentials: LoginRequest,
) -> IssuedTokens:
    """A new login: a refresh-token family and its first access token. An unknown email and
    a wrong password take the same time and get the same answer, and both count towards the
    address's lockout (`lockout.py`)."""
    await check_attempt(lockout, credentials.email)
    account = await session.scalar(select(Account).where(Account.email == credentials.email))
    if not await verify_password(account.password_hash if account else None, credentials.password):
        raise AuthenticationRequired("Invalid email or password")
    assert account is not None
    assert account.password_hash is not None
    await lockout.succeeded(credentials.email)
    if not account.is_active:
        raise PermissionDenied("Account is disabled")
    if needs_rehash(account.password_hash):
        account.password_hash = await hash_password(credentials.password)
    return await issuer.start_session(
        session, account, require_verified=settings.require_verified_email
    )


async def refresh(database: Database, issuer: TokenIssuer, presented: str) -> IssuedTokens:
    """Spends a refresh token for a new pair, in a unit of work of its own rather than the
    request's: a token presented again revokes its whole family, a change that must persist
    although the request then fails. The spending attempt is rolled back first (on SQLite
    it holds the database's write lock), then the family is revoked, then the 401."""
    try:
        async with database.unit_of_work() as session:
            return await issuer.rotate(session, presented)
    except RefreshTokenReused as reused:
        async with database.unit_of_work() as session:
            await issuer.revoke_family(session, reused.family_id)
        log.warning("refresh_token_reuse", family_id=str(reused.family_id))
        raise InvalidToken("Refresh token already used; the session has been revoked") from None


async def logout(
    session: AsyncSession, issuer: TokenIssuer, revocations: RevocationStore, identity: Identity
) -> None:
    """Revokes this login's refresh-token family and denies the access token until it expires."""
    if identity.session_id:
        await issuer.revoke_family(session, uuid.UUID(identity.session_id))
    await revocation_records.deny_access_token(session, revocations, identity)


async def get_account(session: AsyncSession, account_id: uuid.UUID) -> Account:
    account = await session.get(Account, account_id)
    if account is None:
        raise NotFound("Account not found")
    return account


async def create_first_admin(session: AsyncSession, settings: AuthSettings) -> None:
    """The first admin comes from LYCEUM_ADMIN_EMAIL / LYCEUM_ADMIN_PASSWORD, once: not when
    an admin exists already, nor when the email belongs to another account. The operator
    vouches for the address: it counts as verified (an admin account at that address made
    before verification existed is marked so too)."""
    if not settings.admin_email or not settings.admin_password:
        return
    email = settings.admin_email
    existing = await session.scalar(select(Account).where(Account.email == email))
    if existing is not None and existing.role == "admin" and not existing.email_verified:
        existing.email_verified = True
        record_email_verified(session, existing)
    if await session.scalar(select(Account.id).where(Account.role == "admin").limit(1)):
        return
    if existing is not None:
        log.warning("admin_email_taken", email=email)
        return
    account = Account(
        email=email,
        name="Administrator",
        role="admin",
        password_hash=await hash_password(settings.admin_password),
        email_verified=True,
    )
    session.add(account)
    await session.flush()
    record_user_created(session, account)
    log.info("first_admin_created", email=email)


# API tokens. They are managed with a login's access token (see deps.LoginIdentity), by
# their owner, or by an admin; anybody else is told that the token does not exist.


async def create_api_token(
    session: AsyncSession, issuer: TokenIssuer, identity: Identity, name: str, ttl_days: int
) -> tuple[ApiToken, str]:
    """A new API token for the caller's account, with the account's role; the value is
    returned once and never stored."""
    account = await session.get(Account, identity.user_id)
    if account is None or not account.is_active:
        raise PermissionDenied("Account is disabled")
    return await api_tokens.issue(session, issuer, account, name, ttl_days)


async def list_api_tokens(
    session: AsyncSession, identity: Identity, page: PageParams, account_id: uuid.UUID | None
) -> tuple[list[ApiToken], Pagination]:
    """The caller's tokens, newest first; an admin may list another account's."""
    if account_id is not None and account_id != identity.user_id and not identity.is_admin:
        raise PermissionDenied()
    query = (
        select(ApiToken)
        .where(ApiToken.account_id == (account_id or identity.user_id))
        .order_by(ApiToken.created_at.desc())
    )
    return await paginate(session, query, page)


async def get_api_token(session: AsyncSession, identity: Identity, token_id: uuid.UUID) -> ApiToken:
    record = await session.get(ApiToken, token_id)
    if record is None or (record.account_id != identity.user_id and not identity.is_admin):
        raise NotFound("API token not found")
    return record


async def revoke_api_token(
    session: AsyncSession, revocations: RevocationStore, identity: Identity, token_id: uuid.UUID
) -> None:
    record = await get_api_token(session, identity, token_id)
    await api_tokens.revoke(record, revocations)
