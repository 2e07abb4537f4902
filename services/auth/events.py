"""What auth publishes (`user.created`) and learns from users (`user.updated`, `user.deleted`)."""

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import State

from services.auth import api_tokens
from services.auth.models import Account, OutboxEvent
from shared.events.cloudevents import CloudEvent
from shared.events.consumer import DomainHandler
from shared.events.outbox import Outbox

outbox = Outbox(OutboxEvent, source="lyceum/auth")


def user_data(account: Account) -> dict[str, Any]:
    return {
        "id": str(account.id),
        "email": account.email,
        "name": account.name,
        "role": account.role,
    }


def record_user_created(session: AsyncSession, account: Account) -> None:
    outbox.add(session, "user.created", f"users/{account.id}", user_data(account))


async def on_user_updated(session: AsyncSession, event: CloudEvent, state: State) -> None:
    account = await session.get(Account, uuid.UUID(event.data["id"]))
    if account is None:
        return
    role_changed = "role" in event.data and event.data["role"] != account.role
    for field in ("name", "role"):
        if field in event.data:
            setattr(account, field, event.data[field])
    if role_changed:
        await deny_tokens_issued_until_now(session, state, account.id)


async def deny_tokens_issued_until_now(
    session: AsyncSession, state: State, account_id: uuid.UUID
) -> None:
    """Every token issued so far carries what the account was: access tokens issued until
    now are denied (for as long as one can live) and API tokens are revoked. Refresh tokens
    stay: the access tokens they give from now on carry the account as it is."""
    await api_tokens.revoke_account_tokens(session, state.revocations, account_id)
    await state.revocations.revoke_user(
        str(account_id),
        state.settings.access_token_ttl_seconds + state.settings.jwt_leeway_seconds,
    )


async def on_user_deleted(session: AsyncSession, event: CloudEvent, state: State) -> None:
    account = await session.get(Account, uuid.UUID(event.data["id"]))
    if account is None:
        return
    account.is_active = False
    await state.token_issuer.revoke_account(session, account.id)
    await deny_tokens_issued_until_now(session, state, account.id)


handlers: dict[str, DomainHandler] = {
    "user.updated": on_user_updated,
    "user.deleted": on_user_deleted,
}
