"""What auth publishes (`user.created`, `user.email_verified`, `user.email_changed`,
`user.password_changed`) and learns from users (`user.updated`, `user.deleted`)."""

# The handlers are typed with the service's collaborators, whose start-up records
# `user.created` through this module: the annotations are not evaluated at import.
from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from services.auth import api_tokens, revocations
from services.auth.models import Account, OutboxEvent
from shared.events.cloudevents import CloudEvent
from shared.events.consumer import DomainHandler
from shared.events.outbox import Outbox

if TYPE_CHECKING:
    from services.auth.deps import AuthCollaborators

outbox = Outbox(OutboxEvent, source="lyceum/auth")


def user_data(account: Account) -> dict[str, Any]:
    return {
        "id": str(account.id),
        "email": account.email,
        "name": account.name,
        "role": account.role,
        "email_verified": account.email_verified,
    }


def record_user_created(session: AsyncSession, account: Account) -> None:
    outbox.add(session, "user.created", f"users/{account.id}", user_data(account))


def record_email_verified(session: AsyncSession, account: Account) -> None:
    outbox.add(
        session,
        "user.email_verified",
        f"users/{account.id}",
        {"id": str(account.id), "email": account.email},
    )


def record_email_changed(session: AsyncSession, account: Account, previous_email: str) -> None:
    outbox.add(
        session,
        "user.email_changed",
        f"users/{account.id}",
        {"id": str(account.id), "email": account.email, "previous_email": previous_email},
    )


PasswordChange = Literal["change", "reset", "set"]


def record_password_changed(
    session: AsyncSession, account: Account, reason: PasswordChange
) -> None:
    outbox.add(
        session,
        "user.password_changed",
        f"users/{account.id}",
        {"id": str(account.id), "reason": reason},
    )


async def on_user_updated(
    session: AsyncSession, event: CloudEvent, auth: AuthCollaborators
) -> None:
    """A new name or role, or `is_active` set by an admin: `false` disables the account as
    user.deleted does (see `disable`), `true` lets it log in again."""
    account = await session.get(Account, uuid.UUID(event.data["id"]))
    if account is None:
        return
    role_changed = "role" in event.data and event.data["role"] != account.role
    if event.data.get("is_active") is False and account.is_active:
        await disable(session, auth, account)
        role_changed = False  # every token issued until now is denied already
    for field in ("name", "role", "is_active"):
        if field in event.data:
            setattr(account, field, event.data[field])
    await session.flush()  # before denying: see `disable`
    if role_changed:
        await deny_tokens_issued_until_now(session, auth, account.id)


async def deny_tokens_issued_until_now(
    session: AsyncSession, auth: AuthCollaborators, account_id: uuid.UUID
) -> None:
    """Every token issued so far carries what the account was: access tokens issued until
    now are denied (for as long as one can live) and API tokens are revoked. Refresh tokens
    stay: the access tokens they give from now on carry the account as it is."""
    await api_tokens.revoke_account_tokens(session, auth.revocations, account_id)
    await revocations.deny_user(session, auth.revocations, account_id, auth.settings)


async def on_user_deleted(
    session: AsyncSession, event: CloudEvent, auth: AuthCollaborators
) -> None:
    account = await session.get(Account, uuid.UUID(event.data["id"]))
    if account is None:
        return
    await disable(session, auth, account)


async def disable(session: AsyncSession, auth: AuthCollaborators, account: Account) -> None:
    """No more logins or refreshes, and every token issued until now denied.

    The order matters. The account row is changed (and flushed) before tokens are denied: a
    login or refresh under way writes, then reads the account under FOR SHARE before it
    signs (TokenIssuer._issue), so it either sees this change or finishes first, and then
    its tokens are among those denied. The refresh tokens are revoked before the account
    row is changed: a refresh under way locks its refresh token, then the account, and
    this takes them in the same order (no deadlock on PostgreSQL)."""
    await auth.token_issuer.revoke_account(session, account.id)
    account.is_active = False
    await session.flush()
    await deny_tokens_issued_until_now(session, auth, account.id)


handlers: dict[str, DomainHandler[AuthCollaborators]] = {
    "user.updated": on_user_updated,
    "user.deleted": on_user_deleted,
}
