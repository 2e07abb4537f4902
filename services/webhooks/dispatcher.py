"""Sends due deliveries from the database: claims them (SKIP LOCKED, so that several webhook
processes never send the same attempt), posts them concurrently with a per-endpoint limit,
records each attempt and schedules the next. Nothing waits in memory for a retry."""

import asyncio
import contextlib
import functools
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.webhooks.events import DELIVERIES_DUE, record_endpoint_disabled
from services.webhooks.models import (
    FAILED,
    PENDING,
    SUCCEEDED,
    Attempt,
    Delivery,
    Endpoint,
    Message,
)
from services.webhooks.sender import AttemptResult, Sender
from services.webhooks.settings import WebhooksSettings
from services.webhooks.signing import signed_headers
from services.webhooks.url_safety import parse_networks
from shared.db import Database, utcnow
from shared.logging import get_logger
from shared.wakeups import WakeOnCommitLoop

log = get_logger(__name__)


@dataclass(frozen=True)
class Job:
    delivery_id: uuid.UUID
    endpoint_id: uuid.UUID
    url: str
    signing_secrets: list[str]
    message_id: str
    body: str
    endpoint_failing: bool


def signing_secrets(endpoint: Endpoint, now: datetime) -> list[str]:
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret and expires is not None and expires > now:
        return [endpoint.secret, endpoint.previous_secret]
    return [endpoint.secret]


class Dispatcher:
    def __init__(self, database: Database, settings: WebhooksSettings) -> None:
        self._database = database
        self._delays = settings.retry_delays()
        self._disable_after = timedelta(seconds=settings.webhook_disable_after_seconds)
        # A claimed attempt is someone else's to retry only once its sender must be gone.
        self._lease = timedelta(seconds=2 * settings.webhook_attempt_timeout_seconds + 5)
        self._concurrency = settings.webhook_concurrency
        self._endpoint_concurrency = settings.webhook_endpoint_concurrency
        self._sender = Sender(
            parse_networks(settings.webhook_allowed_networks),
            settings.webhook_attempt_timeout_seconds,
            settings.webhook_response_body_limit,
        )
        self._in_flight: Counter[uuid.UUID] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop = WakeOnCommitLoop(
            database,
            DELIVERIES_DUE,
            self._dispatch_all_due,
            poll_seconds=settings.webhook_poll_seconds,
            name="webhook-dispatcher",
        )

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
        for task in self._tasks:
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._sender.close()

    async def _dispatch_all_due(self) -> None:
        while await self._dispatch_due():
            pass

    async def _dispatch_due(self) -> bool:
        """Starts what is due and fits; returns whether more may be waiting."""
        free = self._concurrency - len(self._tasks)
        if free <= 0:
            return False
        jobs = await self._claim(free)
        for job in jobs:
            self._in_flight[job.endpoint_id] += 1
            task = asyncio.create_task(self._attempt(job))
            self._tasks.add(task)
            task.add_done_callback(functools.partial(self._finished, job))
        return len(jobs) == free

    def _finished(self, job: Job, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._in_flight[job.endpoint_id] -= 1
        if self._in_flight[job.endpoint_id] <= 0:
            del self._in_flight[job.endpoint_id]
        self._loop.wake()

    async def _claim(self, limit: int) -> list[Job]:
        now = utcnow()
        busy = [
            endpoint_id
            for endpoint_id, count in self._in_flight.items()
            if count >= self._endpoint_concurrency
        ]
        # At most the per-endpoint limit from each endpoint, so one cannot fill every slot.
        ranked = (
            select(
                Delivery.id,
                func.row_number()
                .over(partition_by=Delivery.endpoint_id, order_by=Delivery.next_attempt_at)
                .label("rank"),
            )
            .join(Endpoint, Endpoint.id == Delivery.endpoint_id)
            .where(Delivery.status == PENDING, Delivery.next_attempt_at <= now, Endpoint.enabled)
        )
        if busy:
            ranked = ranked.where(Delivery.endpoint_id.not_in(busy))
        candidates = ranked.subquery()
        # The due conditions again on the locked rows themselves: PostgreSQL re-checks them
        # against a row that another worker claimed (and moved on) meanwhile, but not the
        # subquery's.
        query = (
            select(Delivery)
            .where(
                Delivery.id.in_(
                    select(candidates.c.id).where(candidates.c.rank <= self._endpoint_concurrency)
                ),
                Delivery.status == PENDING,
                Delivery.next_attempt_at <= now,
            )
            .order_by(Delivery.next_attempt_at)
            .limit(limit)
        )
        if not self._database.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        async with self._database.sessions() as session, session.begin():
            deliveries = (await session.scalars(query)).all()
            room = Counter(
                {
                    d.endpoint_id: self._endpoint_concurrency - self._in_flight[d.endpoint_id]
                    for d in deliveries
                }
            )
            chosen = []
            for delivery in deliveries:
                if room[delivery.endpoint_id] > 0:
                    room[delivery.endpoint_id] -= 1
                    delivery.next_attempt_at = now + self._lease
                    chosen.append(delivery)
            if not chosen:
                return []
            endpoints = {
                e.id: e
                for e in await session.scalars(
                    select(Endpoint).where(Endpoint.id.in_({d.endpoint_id for d in chosen}))
                )
            }
            rows = await session.execute(
                select(Message.id, Message.body).where(
                    Message.id.in_({d.message_id for d in chosen})
                )
            )
            bodies = dict(rows.tuples().all())
            return [
                Job(
                    delivery_id=d.id,
                    endpoint_id=d.endpoint_id,
                    url=endpoints[d.endpoint_id].url,
                    signing_secrets=signing_secrets(endpoints[d.endpoint_id], now),
                    message_id=d.message_id,
                    body=bodies[d.message_id],
                    endpoint_failing=endpoints[d.endpoint_id].failing_since is not None,
                )
                for d in chosen
            ]

    async def _attempt(self, job: Job) -> None:
        attempted_at = utcnow()
        headers = signed_headers(job.message_id, attempted_at, job.body, job.signing_secrets)
        result = await self._sender.send(job.url, headers, job.body)
        try:
            await self._record(job, attempted_at, result)
        except Exception:
            # The claim lapses and another attempt follows: at least once, never lost.
            log.exception("webhook_attempt_not_recorded", delivery_id=str(job.delivery_id))
            return
        log.info(
            "webhook_attempt",
            delivery_id=str(job.delivery_id),
            message_id=job.message_id,
            endpoint_id=str(job.endpoint_id),
            status=result.status,
            error=result.error,
            duration_ms=result.duration_ms,
        )

    async def _record(self, job: Job, attempted_at: datetime, result: AttemptResult) -> None:
        attempt = Attempt(
            delivery_id=job.delivery_id,
            attempted_at=attempted_at,
            response_status=result.status,
            response_body=result.body,
            duration_ms=result.duration_ms,
            error=result.error,
        )
        async with self._database.sessions() as session, session.begin():
            if result.succeeded and not job.endpoint_failing:
                # The common case, in two statements.
                succeeded = await session.execute(
                    update(Delivery)
                    .where(Delivery.id == job.delivery_id)
                    .values(
                        status=SUCCEEDED,
                        next_attempt_at=None,
                        attempt_count=Delivery.attempt_count + 1,
                    )
                    .execution_options(synchronize_session=False)
                )
                if succeeded.rowcount == 1:  # type: ignore[attr-defined]
                    session.add(attempt)
                return
            delivery = await session.get(Delivery, job.delivery_id)
            endpoint = await session.get(Endpoint, job.endpoint_id)
            if delivery is None or endpoint is None:
                return  # the endpoint was deleted meanwhile
            session.add(attempt)
            delivery.attempt_count += 1
            if result.succeeded:
                delivery.status, delivery.next_attempt_at = SUCCEEDED, None
                endpoint.failing_since = None
                return
            if delivery.attempt_count <= len(self._delays):
                delay = timedelta(seconds=self._delays[delivery.attempt_count - 1])
                delivery.status, delivery.next_attempt_at = PENDING, utcnow() + delay
            else:
                delivery.status, delivery.next_attempt_at = FAILED, None
            if endpoint.failing_since is None:
                endpoint.failing_since = attempted_at
            elif attempted_at - endpoint.failing_since >= self._disable_after:
                await self._disable(session, endpoint)

    async def _disable(self, session: AsyncSession, endpoint: Endpoint) -> None:
        reason = f"Every attempt failed since {endpoint.failing_since:%Y-%m-%dT%H:%M:%SZ}"
        disabled = await session.execute(
            update(Endpoint)
            .where(Endpoint.id == endpoint.id, Endpoint.enabled)
            .values(enabled=False, disabled_reason=reason)
            .execution_options(synchronize_session=False)
        )
        if disabled.rowcount == 1:  # type: ignore[attr-defined]
            record_endpoint_disabled(session, endpoint, reason)
            log.warning("webhook_endpoint_disabled", endpoint_id=str(endpoint.id), reason=reason)
