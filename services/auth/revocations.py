"""Auth's record of the revocations in force, and the shared revocation store as a cache of it.

Auth's database holds every revocation that still denies a token, written in the same
transaction as the change that made it:

- a login logged out, or whose refresh token was reused: its refresh tokens' `revoked_at`
  (a family is a login, the access tokens' `sid`);
- an API token revoked: its row's `revoked_at`;
- the access token a logout denies (`jti`), and the tokens of a user issued until an
  instant (role change, disable, delete, password reset): rows of `revocations`, each
  with the instant its entry may go.

`RevocationPublisher` puts all of them back into the store at start-up and whenever the
store has lost them (its marker is gone, see `shared.revocation`); until then token checks
everywhere answer 503.
"""

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from redis.exceptions import RedisError
from sqlalchemy import Double, String, Uuid, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from services.auth import api_tokens
from services.auth.models import Base, RefreshToken
from services.auth.settings import AuthSettings
from shared.db import Database, UTCDateTime, new_id, utcnow
from shared.logging import get_logger
from shared.revocation import Denial, DenialKind, RevocationStore
from shared.security import Identity

log = get_logger(__name__)

# Rows whose entries have expired are deleted this often.
PURGE_SECONDS = 3600.0


class Revocation(Base):
    """A denial that no other row records: an access token's `jti` (`kind` "jti") until it
    expires, or every token of a user issued until `revoked_at` ("user")."""

    __tablename__ = "revocations"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    subject: Mapped[str] = mapped_column(String(64), nullable=False)
    # Seconds since the epoch, with the clock's sub-second precision, as a token's `iat`.
    revoked_at: Mapped[float] = mapped_column(Double, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True, nullable=False)


def denial_window_seconds(settings: AuthSettings) -> int:
    """How long an access token issued before a revocation can still be presented."""
    return settings.access_token_ttl_seconds + settings.jwt_leeway_seconds


async def deny_access_token(
    session: AsyncSession, revocations: RevocationStore, identity: Identity
) -> None:
    """A logout's access token, denied by its `jti` until it expires."""
    session.add(
        Revocation(
            kind="jti",
            subject=identity.jti,
            revoked_at=time.time(),
            expires_at=datetime.fromtimestamp(identity.expires_at, UTC),
        )
    )
    await session.flush()
    await revocations.revoke_token(identity.jti, identity.expires_at)


async def deny_user(
    session: AsyncSession,
    revocations: RevocationStore,
    account_id: uuid.UUID,
    settings: AuthSettings,
) -> float:
    """Every access token of the account issued until now, denied for as long as one can
    live; returns the instant. The account's own change must be flushed first (see
    `events.disable`)."""
    revoked_at = time.time()
    window = denial_window_seconds(settings)
    session.add(
        Revocation(
            kind="user",
            subject=str(account_id),
            revoked_at=revoked_at,
            expires_at=datetime.fromtimestamp(revoked_at + window, UTC),
        )
    )
    await session.flush()
    await revocations.revoke_user(str(account_id), window, revoked_at=revoked_at)
    return revoked_at


async def revoke_all_sessions(
    session: AsyncSession,
    revocations: RevocationStore,
    account_id: uuid.UUID,
    *,
    settings: AuthSettings,
) -> None:
    """After a password reset: no credential issued until now stands. Every refresh token
    and API token of the account is revoked and every access token issued until now is
    denied, in the caller's transaction and in the store.

    Call it once the account's change (the new password) is flushed, so that a login racing
    with it either is denied here or reads the changed account (it reads the account under
    FOR SHARE before it signs)."""
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.account_id == account_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    await api_tokens.revoke_account_tokens(session, revocations, account_id)
    await deny_user(session, revocations, account_id, settings)


async def revoke_other_sessions(
    session: AsyncSession,
    revocations: RevocationStore,
    account_id: uuid.UUID,
    keep_session: uuid.UUID | None,
    *,
    settings: AuthSettings,
) -> None:
    """After a password change: every login of the account but `keep_session` (the one
    that made the change) is revoked, its refresh tokens and its access tokens (by `sid`).
    API tokens stay."""
    conditions = [RefreshToken.account_id == account_id, RefreshToken.revoked_at.is_(None)]
    if keep_session is not None:
        conditions.append(RefreshToken.family_id != keep_session)
    families = (
        await session.scalars(select(RefreshToken.family_id).where(*conditions).distinct())
    ).all()
    if not families:
        return
    await session.execute(update(RefreshToken).where(*conditions).values(revoked_at=utcnow()))
    window = denial_window_seconds(settings)
    for family in families:
        await revocations.revoke_session(str(family), window)


async def republish(
    session: AsyncSession, revocations: RevocationStore, settings: AuthSettings
) -> int:
    """Puts every revocation in force back into the store; returns how many."""
    now = utcnow()
    window = denial_window_seconds(settings)
    count = await api_tokens.republish_revocations(session, revocations)
    logins = await session.execute(
        select(RefreshToken.family_id, func.max(RefreshToken.revoked_at))
        .where(RefreshToken.revoked_at > now - timedelta(seconds=window))
        .group_by(RefreshToken.family_id)
    )
    count += await revocations.restore(
        Denial("sid", str(family), revoked_at.timestamp() + window)
        for family, revoked_at in logins
        if revoked_at is not None
    )
    rows = await session.scalars(select(Revocation).where(Revocation.expires_at > now))
    count += await revocations.restore(_denials(rows))
    return count


def _denials(rows: Iterable[Revocation]) -> Iterable[Denial]:
    for row in rows:
        kind: DenialKind = "jti" if row.kind == "jti" else "user"
        yield Denial(kind, row.subject, row.expires_at.timestamp(), row.revoked_at)


async def purge_expired(session: AsyncSession) -> int:
    result = await session.execute(delete(Revocation).where(Revocation.expires_at <= utcnow()))
    return int(getattr(result, "rowcount", 0) or 0)


class RevocationPublisher:
    """Keeps the store a complete copy of the database's revocations: fills it at start-up,
    then every `check_seconds` looks for its marker and fills it again when the marker is
    gone. Every auth replica runs one; refills by several at once publish the same entries,
    and each marks the store complete only if the store kept its data throughout."""

    def __init__(
        self,
        database: Database,
        revocations: RevocationStore,
        settings: AuthSettings,
        *,
        check_seconds: float,
    ) -> None:
        self._database = database
        self._revocations = revocations
        self._settings = settings
        self._check_seconds = check_seconds
        self._task: asyncio.Task[None] | None = None
        self._purged_at = float("-inf")

    async def refill(self) -> bool:
        """Publishes everything and marks the store complete; False when the store lost its
        data meanwhile (the next check tries again)."""
        published = 0

        async def publish() -> int:
            nonlocal published
            async with self._database.unit_of_work() as session:
                published = await republish(session, self._revocations, self._settings)
            return published

        completed = await self._revocations.refill(publish)
        if completed:
            log.info("revocations_republished", count=published)
        else:
            log.warning("revocations_refill_interrupted", count=published)
        return completed

    async def check(self) -> bool:
        """Refills the store if its marker is gone; True when it did."""
        if await self._revocations.is_complete():
            return False
        log.warning("revocation_store_incomplete_refilling")
        await self.refill()
        return True

    async def start(self) -> None:
        """The first fill, then the checks in the background. A store that cannot be
        reached now is filled by the first check that reaches it."""
        try:
            await self.refill()
        except (RedisError, OSError) as exc:
            log.warning("revocations_refill_failed", error=repr(exc))
        self._task = asyncio.create_task(self._run(), name="revocation-publisher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._check_seconds)
            try:
                await self.check()
                await self._purge()
            except Exception as exc:
                log.warning("revocation_check_failed", error=repr(exc))

    async def _purge(self) -> None:
        if time.monotonic() - self._purged_at < PURGE_SECONDS:
            return
        self._purged_at = time.monotonic()
        async with self._database.unit_of_work() as session:
            purged = await purge_expired(session)
        if purged:
            log.info("expired_revocations_purged", count=purged)
