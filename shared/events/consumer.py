"""The consumer side: each event handled once per service, in the transaction of its work."""

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import String
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Database, UTCDateTime, utcnow
from shared.events.bus import Subscription, topic_matches
from shared.events.cloudevents import CloudEvent
from shared.logging import get_logger
from shared.telemetry import event_parent, span_in

log = get_logger(__name__)

ContextT = TypeVar("ContextT")

# A handler changes its service's data in the session it is given, with the service's
# collaborators as its third argument; the consumer's unit of work commits.
DomainHandler = Callable[[AsyncSession, CloudEvent, ContextT], Awaitable[None]]


class ProcessedEventMixin:
    """Columns of a service's `processed_events` table: the idempotency record."""

    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(100), nullable=False)
    processed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)


class EventConsumer(Generic[ContextT]):
    """Handlers are keyed by binding key: an event type, or a pattern such as `user.*` or `#`.

    Runs a domain handler and records the event id in one transaction; the bus acks
    after that commit. A redelivered event finds its id recorded and changes nothing."""

    def __init__(
        self,
        database: Database,
        processed_model: type[ProcessedEventMixin],
        queue: str,
        handlers: Mapping[str, DomainHandler[ContextT]],
        context: ContextT,
    ) -> None:
        self._context = context
        self._database = database
        self._processed_model = processed_model
        self._handlers = handlers
        self.subscription = Subscription(queue, tuple(handlers), self.handle)

    async def handle(self, event: CloudEvent, headers: dict[str, str]) -> None:
        handler = self._handlers.get(event.type) or next(
            (h for key, h in self._handlers.items() if topic_matches(key, event.type)), None
        )
        if handler is None:
            return
        attributes = {
            "cloudevents.event_id": event.id,
            "cloudevents.event_type": event.type,
            "cloudevents.event_source": event.source,
        }
        parent = event_parent(event.traceparent, headers)
        with span_in(parent, f"consume {event.type}", attributes=attributes):
            try:
                async with self._database.unit_of_work() as session:
                    if await session.get(self._processed_model, event.id) is not None:
                        log.info("event_duplicate_ignored", event_id=event.id, type=event.type)
                        return
                    await handler(session, event, self._context)
                    processed: Any = self._processed_model
                    session.add(processed(event_id=event.id, event_type=event.type))
            except IntegrityError:
                async with self._database.sessions() as session:
                    if await session.get(self._processed_model, event.id) is None:
                        raise
                log.info("event_duplicate_ignored", event_id=event.id, type=event.type)
                return
        log.info("event_processed", event_id=event.id, type=event.type)
