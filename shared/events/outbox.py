"""The transactional outbox: an event is a row committed with the change it describes;
the relay publishes pending rows (with publisher confirms) and marks them sent.

No row can hold up the others. A row the bus will not take (its payload does not parse,
or the broker refuses it while it takes others) is tried again after a growing delay and,
after `max_attempts`, marked failed and set aside, with a log line naming it and a
metric; the rows behind it go on meanwhile. Rows about one aggregate (one CloudEvent
`subject`, such as `users/<id>`) still go out in the order they were written: while a row
waits for its retry, the later rows of its subject wait with it. A broker outage is not
the rows' fault: every row waits, no attempt is counted and nothing is marked failed.
"""

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from opentelemetry import propagate
from sqlalchemy import Index, Integer, String, Text, exists, func, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, aliased, declared_attr, mapped_column

from shared import metrics
from shared.db import Database, UTCDateTime, utcnow
from shared.events.bus import EventBus, PublishRefused
from shared.events.cloudevents import CloudEvent
from shared.logging import get_logger
from shared.telemetry import current_traceparent, span_in, traced_by
from shared.wakeups import WakeOnCommitLoop, flag_work

log = get_logger(__name__)

PENDING_FLAG = "outbox_pending"
LAST_ERROR_LENGTH = 1000


class OutboxMixin:
    """Columns of a service's `outbox` table.

    A row is pending until `published_at` or `failed_at` is set. `attempts`,
    `next_attempt_at` and `last_error` tell its failures to publish; a broker outage
    leaves them alone. To send a failed row again, set `failed_at` back to NULL and
    `attempts` to 0."""

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    type: Mapped[str] = mapped_column(String(100), nullable=False)
    subject: Mapped[str | None] = mapped_column(String(255))
    payload: Mapped[str] = mapped_column(Text, nullable=False)
    traceparent: Mapped[str | None] = mapped_column(String(55))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    @declared_attr.directive
    def __table_args__(cls) -> tuple[Any, ...]:
        table: str = cls.__tablename__  # type: ignore[attr-defined]
        return (
            Index(f"ix_{table}_unpublished", "published_at", "created_at"),
            Index(f"ix_{table}_subject", "subject", "created_at"),
        )


class Outbox:
    """Records a service's events inside the caller's transaction."""

    def __init__(self, model: type[OutboxMixin], source: str) -> None:
        self.model = model
        self.source = source

    @property
    def service(self) -> str:
        """`lyceum/users` -> `users`: the label of the service's metrics."""
        return self.source.rsplit("/", 1)[-1]

    def add(
        self, session: AsyncSession, event_type: str, subject: str, data: dict[str, Any]
    ) -> CloudEvent:
        traceparent = current_traceparent()
        cloud_event = CloudEvent(
            source=self.source, type=event_type, subject=subject, data=data, traceparent=traceparent
        )
        model: Any = self.model
        session.add(
            model(
                id=cloud_event.id,
                type=event_type,
                subject=subject,
                created_at=_next_created_at(),
                payload=cloud_event.to_json().decode(),
                traceparent=traceparent,
            )
        )
        flag_work(session, PENDING_FLAG)
        return cloud_event


_last_created_at = datetime.min.replace(tzinfo=UTC)


def _next_created_at() -> datetime:
    """Now, but strictly after the previous row this process wrote: two events written in
    one transaction (or one microsecond) keep the order they were written in."""
    global _last_created_at
    now = utcnow()
    if now <= _last_created_at:
        now = _last_created_at + timedelta(microseconds=1)
    _last_created_at = now
    return now


@dataclass
class RelayPass:
    """What one `publish_pending` call did."""

    published: int = 0
    retried: int = 0
    failed: int = 0
    broker_unavailable: bool = False
    next_retry_at: datetime | None = None


class _BrokerUnavailable(Exception):
    """The broker is away: every row waits."""


class _RowFailed(Exception):
    """This row, not the broker, is why it was not published."""

    def __init__(self, reason: str, error: Exception) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error


class OutboxRelay:
    """Publishes what the outbox holds: at once after a commit, and on a poll as the safety
    net. Several replicas can relay one outbox on PostgreSQL: each locks the rows it
    publishes (`FOR UPDATE SKIP LOCKED`), so none is published twice by two of them."""

    def __init__(
        self,
        database: Database,
        outbox: Outbox,
        bus: EventBus,
        *,
        poll_seconds: float = 2.0,
        batch_size: int = 100,
        max_attempts: int = 5,
        retry_seconds: float = 1.0,
        retry_max_seconds: float = 300.0,
    ) -> None:
        self._database = database
        self._model = outbox.model
        self._service = outbox.service
        self._bus = bus
        self._poll_seconds = poll_seconds
        self._batch_size = batch_size
        self._max_attempts = max(1, max_attempts)
        self._retry_seconds = retry_seconds
        self._retry_max_seconds = retry_max_seconds
        self._broker_down = False
        self._retry_timer: asyncio.TimerHandle | None = None
        self._retry_due: float | None = None
        self._loop = WakeOnCommitLoop(
            database, PENDING_FLAG, self._publish_step, poll_seconds=poll_seconds, name="outbox"
        )

    def start(self) -> None:
        metrics.add_refresher(self, self.refresh_metrics)
        self._loop.start()

    async def stop(self, *, grace_seconds: float = 0.0) -> None:
        """With `grace_seconds`, the batch being published is finished and marked sent, and
        what was committed meanwhile goes out too, for up to that long."""
        metrics.remove_refresher(self)
        if self._retry_timer is not None:
            self._retry_timer.cancel()
        await self._loop.stop(grace_seconds=grace_seconds)
        metrics.forget_service(self._service)

    async def _publish_step(self) -> None:
        result = await self.publish_pending()
        if result.next_retry_at is not None:
            self._wake_at(result.next_retry_at)
        if result.broker_unavailable:
            # Wait a little instead of knocking on every commit while the broker is away.
            await asyncio.sleep(min(1.0, self._poll_seconds))

    def _wake_at(self, when: datetime) -> None:
        """Wakes the loop when a retry falls due, if that is sooner than the poll would."""
        loop = asyncio.get_running_loop()
        due = loop.time() + max(0.0, (when - utcnow()).total_seconds())
        if self._retry_due is not None and self._retry_due <= due and loop.time() < self._retry_due:
            return
        if self._retry_timer is not None:
            self._retry_timer.cancel()
        self._retry_due = due
        self._retry_timer = loop.call_at(due, self._loop.wake)

    async def publish_pending(self) -> RelayPass:
        """Publishes every row that may go now, batch after batch, until none is left, or
        the broker is unavailable."""
        result = RelayPass()
        while not result.broker_unavailable and await self._publish_batch(result):
            pass
        return result

    def _due_rows(self) -> Any:
        """Pending rows whose retry (if any) is due and that no earlier pending row of their
        subject holds back, oldest first."""
        model: Any = self._model
        earlier: Any = aliased(model)
        held_back = exists().where(
            earlier.subject == model.subject,
            earlier.published_at.is_(None),
            earlier.failed_at.is_(None),
            tuple_(earlier.created_at, earlier.id) < tuple_(model.created_at, model.id),
        )
        query = (
            select(model)
            .where(
                model.published_at.is_(None),
                model.failed_at.is_(None),
                or_(model.next_attempt_at.is_(None), model.next_attempt_at <= utcnow()),
                ~held_back,
            )
            .order_by(model.created_at, model.id)
            .limit(self._batch_size)
        )
        if not self._database.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        return query

    async def _publish_batch(self, result: RelayPass) -> bool:
        """Returns whether there was anything to publish."""
        async with self._database.unit_of_work() as session:
            rows = (await session.scalars(self._due_rows())).all()
            if not rows:
                return False
            # Subjects with a row that failed in this batch: their later rows wait for it.
            held: set[str] = set()
            for row in rows:
                if row.subject is not None and row.subject in held:
                    continue
                try:
                    await self._publish(row)
                except _BrokerUnavailable:
                    result.broker_unavailable = True
                    return True
                except _RowFailed as failure:
                    self._set_aside_or_retry(row, failure, result)
                    if row.subject is not None:
                        held.add(row.subject)
                else:
                    row.published_at = utcnow()
                    result.published += 1
                    metrics.OUTBOX_PUBLISHED.labels(self._service).inc()
        return True

    async def _publish(self, row: Any) -> None:
        try:
            event = CloudEvent.from_json(row.payload)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise _RowFailed("invalid_payload", exc) from exc
        # Rows written before the envelope carried it have it in their column only.
        event.traceparent = event.traceparent or row.traceparent
        attributes = {"cloudevents.event_id": event.id, "cloudevents.event_type": event.type}
        with span_in(
            traced_by(row.traceparent), f"outbox publish {event.type}", attributes=attributes
        ):
            await self._publish_event(row, event)

    async def _publish_event(self, row: Any, event: CloudEvent) -> None:
        # The publishing span's context, in the message headers too.
        headers: dict[str, str] = {}
        propagate.inject(headers)
        try:
            await self._bus.publish(event, headers)
        except PublishRefused as exc:
            raise _RowFailed("refused", exc) from exc
        except OSError as exc:  # ConnectionError, TimeoutError: the broker is away
            self._broker_unavailable(row, exc)
        except Exception as exc:
            if not await self._bus.is_ready():
                self._broker_unavailable(row, exc)
            raise _RowFailed("error", exc) from exc
        if self._broker_down:
            self._broker_down = False
            log.info("outbox_broker_available")

    def _broker_unavailable(self, row: Any, exc: Exception) -> NoReturn:
        metrics.OUTBOX_PUBLISH_FAILURES.labels(self._service, "broker_unavailable").inc()
        if not self._broker_down:
            self._broker_down = True
            log.warning("outbox_broker_unavailable", event_id=row.id, error=str(exc))
        raise _BrokerUnavailable from exc

    def _set_aside_or_retry(self, row: Any, failure: _RowFailed, result: RelayPass) -> None:
        metrics.OUTBOX_PUBLISH_FAILURES.labels(self._service, failure.reason).inc()
        row.attempts += 1
        row.last_error = f"{failure.reason}: {failure.error!r}"[:LAST_ERROR_LENGTH]
        if row.attempts >= self._max_attempts:
            row.failed_at = utcnow()
            row.next_attempt_at = None
            result.failed += 1
            log.error(
                "outbox_event_failed",
                event_id=row.id,
                type=row.type,
                attempts=row.attempts,
                reason=failure.reason,
                error=str(failure.error),
            )
            return
        delay = min(self._retry_seconds * 2 ** (row.attempts - 1), self._retry_max_seconds)
        row.next_attempt_at = utcnow() + timedelta(seconds=delay)
        result.retried += 1
        if result.next_retry_at is None or row.next_attempt_at < result.next_retry_at:
            result.next_retry_at = row.next_attempt_at
        log.warning(
            "outbox_publish_failed",
            event_id=row.id,
            type=row.type,
            attempt=row.attempts,
            retry_in=delay,
            reason=failure.reason,
            error=str(failure.error),
        )

    async def refresh_metrics(self) -> None:
        """Reads the backlog, the age of its oldest row and the failed rows from the table."""
        model: Any = self._model
        async with self._database.sessions() as session:
            pending, oldest = (
                await session.execute(
                    select(func.count(), func.min(model.created_at)).where(
                        model.published_at.is_(None), model.failed_at.is_(None)
                    )
                )
            ).one()
            failed = await session.scalar(
                select(func.count()).select_from(model).where(model.failed_at.is_not(None))
            )
        age = max(0.0, (utcnow() - oldest).total_seconds()) if oldest is not None else 0.0
        metrics.OUTBOX_PENDING.labels(self._service).set(pending)
        metrics.OUTBOX_OLDEST_PENDING_AGE.labels(self._service).set(age)
        metrics.OUTBOX_FAILED.labels(self._service).set(failed or 0)
