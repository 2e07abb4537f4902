"""The tokens of the links auth sends by mail: random (256 bits), single-use, expiring, and
stored only as their SHA-256. A token is spent by a conditional UPDATE (`used_at IS NULL`),
so that of two requests with one token exactly one succeeds."""

import hashlib
import secrets
import uuid
from datetime import timedelta
from typing import Any, Literal, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.auth.models import OneTimeToken
from shared.db import utcnow

Purpose = Literal["verify_email", "reset_password", "set_password", "change_email"]
Reason = Literal["unknown", "used", "expired"]


class TokenRejected(Exception):
    def __init__(self, reason: Reason) -> None:
        super().__init__(reason)
        self.reason: Reason = reason


def hash_token(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def issue(
    account_id: uuid.UUID, purpose: Purpose, email: str, ttl: timedelta
) -> tuple[OneTimeToken, str]:
    """A new token and its value; the caller stores the record once the value is on its way."""
    value = secrets.token_urlsafe(32)
    now = utcnow()
    record = OneTimeToken(
        id=uuid.uuid4(),
        account_id=account_id,
        purpose=purpose,
        token_hash=hash_token(value),
        email=email,
        created_at=now,
        expires_at=now + ttl,
    )
    return record, value


async def spend(
    session: AsyncSession, purposes: tuple[Purpose, ...], presented: str
) -> OneTimeToken:
    """Marks the token used and returns it; TokenRejected when it is unknown (or not for
    this use), used already or expired."""
    token = await session.scalar(
        select(OneTimeToken).where(
            OneTimeToken.token_hash == hash_token(presented), OneTimeToken.purpose.in_(purposes)
        )
    )
    if token is None:
        raise TokenRejected("unknown")
    if token.used_at is not None:
        raise TokenRejected("used")
    if token.expires_at <= utcnow():
        raise TokenRejected("expired")
    spent = await session.execute(
        update(OneTimeToken)
        .where(OneTimeToken.id == token.id, OneTimeToken.used_at.is_(None))
        .values(used_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if cast("CursorResult[Any]", spent).rowcount != 1:
        raise TokenRejected("used")
    return token


async def retire(
    session: AsyncSession, account_id: uuid.UUID, purposes: tuple[Purpose, ...]
) -> None:
    """Spends every unused token of the account for these purposes: once a password is
    set or an address switched, the other links that would do it are void."""
    await session.execute(
        update(OneTimeToken)
        .where(
            OneTimeToken.account_id == account_id,
            OneTimeToken.purpose.in_(purposes),
            OneTimeToken.used_at.is_(None),
        )
        .values(used_at=utcnow())
        .execution_options(synchronize_session=False)
    )


async def outstanding(session: AsyncSession, account_id: uuid.UUID, purpose: Purpose) -> int:
    """How many unused, unexpired tokens of this purpose the account has."""
    rows = await session.scalars(
        select(OneTimeToken.id).where(
            OneTimeToken.account_id == account_id,
            OneTimeToken.purpose == purpose,
            OneTimeToken.used_at.is_(None),
            OneTimeToken.expires_at > utcnow(),
        )
    )
    return len(rows.all())
