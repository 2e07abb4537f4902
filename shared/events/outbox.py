"""The transactional outbox: an event is a row committed with the change it describes;
the relay publishes unsent rows (with publisher confirms) and marks them sent."""

import asyncio
from datetime import datetime
from typing import Any

from opentelemetry import propagate
from sqlalchemy import Index, Integer, String, Text, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from shared.db import Database, UTCDateTime, utcnow
from shared.events.bus import EventBus
from shared.events.cloudevents import CloudEvent
from shared.logging import get_logger
from shared.wakeups import WakeOnCommitLoop, flag_work

log = get_logger(__name__)

PENDING_FLAG = "outbox_pending"


class OutboxMixin:
    """Columns of a service's `outbox` table."""

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    type: Mapped[str] = mapped_column(String(100), nullable=False)
    payload: Mapped[str] = mapped_column(Text, nullable=False)
    traceparent: Mapped[str | None] = mapped_column(String(55))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0, nullable=False)

    @declared_attr.directive
    def __table_args__(cls) -> tuple[Any, ...]:
        return (Index(f"ix_{cls.__tablename__}_unpublished", "published_at", "created_at"),)  # type: ignore[attr-defined]


class Outbox:
    """Records a service's events inside the caller's transaction."""

    def __init__(self, model: type[OutboxMixin], source: str) -> None:
        self.model = model
        self.source = source

    def add(
        self, session: AsyncSession, event_type: str, subject: str, data: dict[str, Any]
    ) -> CloudEvent:
        cloud_event = CloudEvent(source=self.source, type=event_type, subject=subject, data=data)
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        model: Any = self.model
        session.add(
            model(
                id=cloud_event.id,
                type=event_type,
                payload=cloud_event.to_json().decode(),
                traceparent=carrier.get("traceparent"),
            )
        )
        flag_work(session, PENDING_FLAG)
        return cloud_event


class OutboxRelay:
    """Publishes what the outbox holds: at once after a commit, and on a poll as a safety net.

    A broker outage leaves rows unsent; they go out, in order, once it is back.
    """

    def __init__(
        self,
        database: Database,
        outbox: Outbox,
        bus: EventBus,
        *,
        poll_seconds: float = 2.0,
        batch_size: int = 100,
    ) -> None:
        self._database = database
        self._model = outbox.model
        self._bus = bus
        self._poll_seconds = poll_seconds
        self._batch_size = batch_size
        self._loop = WakeOnCommitLoop(
            database, PENDING_FLAG, self._publish_step, poll_seconds=poll_seconds, name="outbox"
        )

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def _publish_step(self) -> None:
        if await self.publish_pending():
            # The bus refused: wait a little instead of retrying on every commit.
            await asyncio.sleep(min(1.0, self._poll_seconds))

    async def publish_pending(self) -> bool:
        """Publishes unsent rows in order, stopping at the first failure; returns whether
        any are left behind."""
        model: Any = self._model
        while True:
            async with self._database.sessions() as session, session.begin():
                query = (
                    select(model)
                    .where(model.published_at.is_(None))
                    .order_by(model.created_at)
                    .limit(self._batch_size)
                )
                if not self._database.is_sqlite:
                    query = query.with_for_update(skip_locked=True)
                rows = (await session.scalars(query)).all()
                if not rows:
                    return False
                for row in rows:
                    headers = {"traceparent": row.traceparent} if row.traceparent else {}
                    try:
                        await self._bus.publish(CloudEvent.from_json(row.payload), headers)
                    except Exception as exc:
                        row.attempts += 1
                        log.warning("outbox_publish_failed", event_id=row.id, error=str(exc))
                        return True
                    row.published_at = utcnow()
