"""Access tokens (signed JWTs) and refresh tokens (opaque, hashed, rotated, in families)."""

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

import jwt
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.auth.keys import ALGORITHM, KeyRing
from services.auth.models import Account, RefreshToken
from services.auth.settings import AuthSettings
from shared.db import utcnow
from shared.errors import InvalidToken, TokenExpired
from shared.logging import get_logger
from shared.revocation import RevocationStore

log = get_logger(__name__)


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    refresh_token: str
    expires_in: int


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenIssuer:
    def __init__(self, settings: AuthSettings, keys: KeyRing, revocations: RevocationStore) -> None:
        self._settings = settings
        self._keys = keys
        self._revocations = revocations

    async def access_token(self, account: Account, session_id: uuid.UUID) -> str:
        kid, private_key = await self._keys.signing_key()
        now = int(time.time())
        claims = {
            "iss": self._settings.jwt_issuer,
            "aud": self._settings.jwt_audience,
            "sub": str(account.id),
            "iat": now,
            "nbf": now,
            "exp": now + self._settings.access_token_ttl_seconds,
            "jti": str(uuid.uuid4()),
            "sid": str(session_id),
            "roles": [account.role],
        }
        return jwt.encode(claims, private_key, algorithm=ALGORITHM, headers={"kid": kid})

    async def start_session(self, session: AsyncSession, account: Account) -> IssuedTokens:
        return await self._issue(session, account, family_id=uuid.uuid4())

    async def rotate(self, session: AsyncSession, presented: str) -> IssuedTokens:
        """Spends a refresh token for a new pair. A token spent twice revokes its family."""
        query = select(RefreshToken).where(RefreshToken.token_hash == hash_refresh_token(presented))
        token = await session.scalar(query.with_for_update())
        if token is None:
            raise InvalidToken("Unknown refresh token")
        if token.used_at is not None or token.revoked_at is not None:
            await self.revoke_family(session, token.family_id)
            await session.commit()
            log.warning("refresh_token_reuse", family_id=str(token.family_id))
            raise InvalidToken("Refresh token already used; the session has been revoked")
        if token.expires_at <= utcnow():
            raise TokenExpired("Refresh token has expired")
        account = await session.get(Account, token.account_id)
        if account is None or not account.is_active:
            raise InvalidToken("Account is disabled")
        token.used_at = utcnow()
        return await self._issue(session, account, family_id=token.family_id)

    async def revoke_family(self, session: AsyncSession, family_id: uuid.UUID) -> None:
        """Revokes a login's refresh tokens, and denies the access tokens issued with them."""
        await self._revocations.revoke_session(
            str(family_id),
            self._settings.access_token_ttl_seconds + self._settings.jwt_leeway_seconds,
        )
        await session.execute(
            update(RefreshToken)
            .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )

    async def revoke_account(self, session: AsyncSession, account_id: uuid.UUID) -> None:
        await session.execute(
            update(RefreshToken)
            .where(RefreshToken.account_id == account_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )

    async def _issue(
        self, session: AsyncSession, account: Account, family_id: uuid.UUID
    ) -> IssuedTokens:
        refresh_token = secrets.token_urlsafe(32)
        session.add(
            RefreshToken(
                account_id=account.id,
                family_id=family_id,
                token_hash=hash_refresh_token(refresh_token),
                expires_at=utcnow() + timedelta(seconds=self._settings.refresh_token_ttl_seconds),
            )
        )
        return IssuedTokens(
            access_token=await self.access_token(account, family_id),
            refresh_token=refresh_token,
            expires_in=self._settings.access_token_ttl_seconds,
        )
