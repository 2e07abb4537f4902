"""Access tokens (signed JWTs) and refresh tokens (opaque, hashed, rotated, in families)."""

import hashlib
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

import jwt
from sqlalchemy import CursorResult, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.auth.errors import EmailNotVerified
from services.auth.keys import ALGORITHM, SigningKeys
from services.auth.models import Account, RefreshToken
from services.auth.settings import AuthSettings
from shared.db import utcnow
from shared.errors import InvalidToken, PermissionDenied, TokenExpired
from shared.revocation import RevocationStore


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    refresh_token: str
    expires_in: int


@dataclass(frozen=True)
class SignedToken:
    value: str
    issued_at: float  # `iat`, with sub-second precision (see `issued_at_now`)
    not_before: int  # `nbf`: the whole second of `iat`
    expires_at: int  # `exp`


class RefreshTokenReused(Exception):
    """A spent or revoked refresh token was presented again: its family must be revoked,
    in a unit of work of its own, since the request that presented it fails."""

    def __init__(self, family_id: uuid.UUID) -> None:
        super().__init__(str(family_id))
        self.family_id = family_id


def issued_at_now() -> float:
    """The `iat` of a new token, with the clock's sub-second precision (a NumericDate may be
    fractional): a user's revocation denies the tokens issued until that instant, and a
    token issued right after it, in the same second, must not be denied with them. The
    float goes through JSON unchanged (its repr round-trips)."""
    return time.time()


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenIssuer:
    def __init__(
        self, settings: AuthSettings, keys: SigningKeys, revocations: RevocationStore
    ) -> None:
        self._settings = settings
        self._keys = keys
        self._revocations = revocations

    async def sign(
        self,
        account: Account,
        *,
        jti: str,
        lifetime_seconds: int,
        extra_claims: Mapping[str, Any] | None = None,
    ) -> SignedToken:
        """The one place a JWT is built: access tokens and API tokens carry the same
        registered claims, signed by the current key of the ring."""
        kid, private_key = await self._keys.signing_key()
        issued_at = issued_at_now()
        not_before = int(issued_at)
        expires_at = not_before + lifetime_seconds
        claims = {
            "iss": self._settings.jwt_issuer,
            "aud": self._settings.jwt_audience,
            "sub": str(account.id),
            "iat": issued_at,
            "nbf": not_before,
            "exp": expires_at,
            "jti": jti,
            "roles": [account.role],
            "email_verified": account.email_verified,
            **(extra_claims or {}),
        }
        value = jwt.encode(claims, private_key, algorithm=ALGORITHM, headers={"kid": kid})
        return SignedToken(value, issued_at, not_before, expires_at)

    async def access_token(self, account: Account, session_id: uuid.UUID) -> str:
        signed = await self.sign(
            account,
            jti=str(uuid.uuid4()),
            lifetime_seconds=self._settings.access_token_ttl_seconds,
            extra_claims={"sid": str(session_id)},
        )
        return signed.value

    async def start_session(
        self, session: AsyncSession, account: Account, *, require_verified: bool = False
    ) -> IssuedTokens:
        """A new login; `require_verified` refuses an account whose address is not verified
        (403 EMAIL_NOT_VERIFIED)."""
        tokens = await self._issue(
            session, account, family_id=uuid.uuid4(), require_verified=require_verified
        )
        if tokens is None:
            raise PermissionDenied("Account is disabled")
        return tokens

    async def rotate(self, session: AsyncSession, presented: str) -> IssuedTokens:
        """Spends a refresh token for a new pair. A token spent twice raises
        `RefreshTokenReused`: the caller revokes its family (`revoke_family`) in a unit of
        work of its own, after this one has been rolled back.

        The token is spent by a conditional UPDATE (`used_at IS NULL`), so that of concurrent
        refreshes with one token exactly one wins, on PostgreSQL and SQLite alike (SQLite
        has no `SELECT ... FOR UPDATE`); the others count as reuse."""
        query = select(RefreshToken).where(RefreshToken.token_hash == hash_refresh_token(presented))
        token = await session.scalar(query)
        if token is None:
            raise InvalidToken("Unknown refresh token")
        if token.used_at is None and token.revoked_at is None:
            if token.expires_at <= utcnow():
                raise TokenExpired("Refresh token has expired")
            spent = await session.execute(
                update(RefreshToken)
                .where(
                    RefreshToken.id == token.id,
                    RefreshToken.used_at.is_(None),
                    RefreshToken.revoked_at.is_(None),
                )
                .values(used_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            if cast("CursorResult[Any]", spent).rowcount == 1:
                account = await session.get(Account, token.account_id)
                tokens = None
                if account is not None:
                    tokens = await self._issue(
                        session,
                        account,
                        family_id=token.family_id,
                        require_verified=self._settings.require_verified_email,
                    )
                if tokens is None:
                    raise InvalidToken("Account is disabled")
                return tokens
        raise RefreshTokenReused(token.family_id)

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
        self,
        session: AsyncSession,
        account: Account,
        family_id: uuid.UUID,
        *,
        require_verified: bool = False,
    ) -> IssuedTokens | None:
        """A new refresh token in the family and an access token; None if the account is
        disabled, EmailNotVerified if `require_verified` and its address is not verified.

        The account is read again after the refresh token is written and under FOR SHARE,
        so that the access token carries the account as it is at its `iat`: a concurrent
        change to the account (role, disable, delete: see events.py) either commits first
        and is read here, or waits for this transaction, and then denies the tokens issued
        until it. The write takes SQLite's database lock, FOR SHARE the row's on PostgreSQL."""
        refresh_token = secrets.token_urlsafe(32)
        session.add(
            RefreshToken(
                account_id=account.id,
                family_id=family_id,
                token_hash=hash_refresh_token(refresh_token),
                expires_at=utcnow() + timedelta(seconds=self._settings.refresh_token_ttl_seconds),
            )
        )
        await session.flush()
        await session.refresh(account, with_for_update={"read": True})
        if not account.is_active:
            return None
        if require_verified and not account.email_verified:
            raise EmailNotVerified("Confirm your email address first: follow the link we sent")
        return IssuedTokens(
            access_token=await self.access_token(account, family_id),
            refresh_token=refresh_token,
            expires_in=self._settings.access_token_ttl_seconds,
        )
