"""The daily token ledger and the quota it enforces (CHAT_DAILY_TOKEN_LIMIT)."""

import math
import uuid
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.chat.models import DailyUsage
from services.chat.providers.base import Usage
from shared.db import is_sqlite, utcnow
from shared.errors import QuotaExceeded


def period_of(now: datetime) -> tuple[datetime, datetime]:
    start = datetime.combine(now.date(), time.min, tzinfo=UTC)
    return start, start + timedelta(days=1)


async def tokens_used(session: AsyncSession, user_id: uuid.UUID, day: date) -> DailyUsage | None:
    return await session.get(DailyUsage, (user_id, day))


async def check_quota(session: AsyncSession, user_id: uuid.UUID, limit: int) -> None:
    """Before the provider is called: over the day's limit is 429 until the day ends. A
    reply that starts under the limit may end over it; the next one is refused."""
    if limit <= 0:
        return
    now = utcnow()
    row = await tokens_used(session, user_id, now.date())
    if row is not None and row.total_tokens >= limit:
        _, resets_at = period_of(now)
        retry_after = max(1, math.ceil((resets_at - now).total_seconds()))
        raise QuotaExceeded(
            f"Daily limit of {limit} tokens reached",
            details={"limit": limit, "used": row.total_tokens, "resets_at": resets_at.isoformat()},
            headers={"Retry-After": str(retry_after)},
        )


async def record(session: AsyncSession, user_id: uuid.UUID, usage: Usage) -> None:
    """Adds a reply's tokens to today's row, atomically across replicas."""
    values = {
        "user_id": user_id,
        "day": utcnow().date(),
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "replies": 1,
    }
    insert = sqlite_insert if is_sqlite(session) else postgresql_insert
    statement = insert(DailyUsage).values(**values)
    columns = ("prompt_tokens", "completion_tokens", "total_tokens", "replies")
    statement = statement.on_conflict_do_update(
        index_elements=["user_id", "day"],
        set_={
            column: getattr(DailyUsage, column) + statement.excluded[column] for column in columns
        },
    )
    await session.execute(statement)


async def current_period(session: AsyncSession, user_id: uuid.UUID, limit: int) -> dict[str, Any]:
    now = utcnow()
    start, resets_at = period_of(now)
    row = await session.scalar(
        select(DailyUsage).where(DailyUsage.user_id == user_id, DailyUsage.day == now.date())
    )
    prompt_tokens = row.prompt_tokens if row else 0
    completion_tokens = row.completion_tokens if row else 0
    total = row.total_tokens if row else 0
    return {
        "period": "day",
        "period_start": start,
        "resets_at": resets_at,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": total,
        "tokens_used": total,
        "limit": limit,
        "remaining": max(0, limit - total) if limit > 0 else None,
    }
