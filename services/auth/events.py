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


async def on_user_updated(session: AsyncSession, event: CloudEvent, _state: State) -> None:
    account = await session.get(Account, uuid.UUID(event.data["id"]))
    if account is None:
        return
    for field in ("name", "role"):
        if field in event.data:
            setattr(account, field, event.data[field])


async def on_user_deleted(session: AsyncSession, event: CloudEvent, state: State) -> None:
    account = await session.get(Account, uuid.UUID(event.data["id"]))
    if account is None:
        return
    account.is_active = False
    await state.token_issuer.revoke_account(session, account.id)
    await api_tokens.revoke_account_tokens(session, state.revocations, account.id)
    await state.revocations.revoke_user(str(account.id), state.settings.access_token_ttl_seconds)


handlers: dict[str, DomainHandler] = {
    "user.updated": on_user_updated,
    "user.deleted": on_user_deleted,
}
