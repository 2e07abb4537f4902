"""API tokens for machine clients: long-lived JWTs signed like access tokens, with
`token_use: "api"`, so that the gateway and every service verify them with the same shared
code. Each one is a row (its `jti` is the row id) so that it can be listed and revoked;
revoking denies the `jti` in the shared revocation store until the token expires."""

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.auth.models import Account, ApiToken
from services.auth.settings import AuthSettings
from services.auth.tokens import TokenIssuer
from shared.db import utcnow
from shared.errors import PermissionDenied
from shared.revocation import Denial, RevocationStore

MAX_TTL_DAYS = 365
MAX_TTL_SECONDS = MAX_TTL_DAYS * 24 * 3600
TOKEN_USE = "api"  # noqa: S105 (a claim value, not a secret)


async def issue(
    session: AsyncSession, issuer: TokenIssuer, account: Account, name: str, ttl_days: int
) -> tuple[ApiToken, str]:
    """Records a new API token and returns it with its value, which is never stored."""
    record = ApiToken(
        id=uuid.uuid4(),
        account_id=account.id,
        name=name,
        roles=account.role,
        expires_at=utcnow() + timedelta(days=ttl_days),
    )
    session.add(record)
    # As for a login (TokenIssuer._issue): written first, then the account read again under
    # FOR SHARE, so that a concurrent change to the account either commits first and is
    # read here, or waits for this transaction and then revokes the token.
    await session.flush()
    await session.refresh(account, with_for_update={"read": True})
    if not account.is_active:
        raise PermissionDenied("Account is disabled")
    signed = await issuer.sign(
        account,
        jti=str(record.id),
        lifetime_seconds=ttl_days * 24 * 3600,
        extra_claims={"token_use": TOKEN_USE, "name": name},
    )
    record.roles = account.role
    record.created_at = datetime.fromtimestamp(signed.not_before, UTC)
    record.expires_at = datetime.fromtimestamp(signed.expires_at, UTC)
    return record, signed.value


async def revoke(record: ApiToken, revocations: RevocationStore) -> None:
    if record.revoked_at is None:
        record.revoked_at = utcnow()
    await revocations.revoke_token(str(record.id), int(record.expires_at.timestamp()))


async def revoke_account_tokens(
    session: AsyncSession, revocations: RevocationStore, account_id: uuid.UUID
) -> None:
    records = (
        await session.scalars(
            select(ApiToken).where(
                ApiToken.account_id == account_id,
                ApiToken.revoked_at.is_(None),
                ApiToken.expires_at > utcnow(),
            )
        )
    ).all()
    for record in records:
        await revoke(record, revocations)
    await session.execute(
        update(ApiToken)
        .where(ApiToken.account_id == account_id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


async def republish_revocations(session: AsyncSession, revocations: RevocationStore) -> int:
    """Puts every revoked, unexpired API token back into the revocation store, so that a
    flushed or replaced Redis cannot bring one back to life (see `revocations.republish`)."""
    records = await session.scalars(
        select(ApiToken).where(ApiToken.revoked_at.is_not(None), ApiToken.expires_at > utcnow())
    )
    return await revocations.restore(
        Denial("jti", str(record.id), record.expires_at.timestamp()) for record in records
    )


def verify_window_seconds(settings: AuthSettings) -> int:
    """How long a retired signing key stays published: until the longest-lived token it can
    have signed (an API token) has expired."""
    return max(settings.access_token_ttl_seconds, MAX_TTL_SECONDS) + settings.jwt_leeway_seconds
