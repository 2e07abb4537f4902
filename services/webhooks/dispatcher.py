"""Sends due deliveries from the database: claims them (SKIP LOCKED, so that several webhook
processes never send the same attempt), posts them concurrently with a per-endpoint limit,
records each attempt and schedules the next. Nothing waits in memory for a retry.

Fairness: each endpoint has at most `WEBHOOK_ENDPOINT_CONCURRENCY` attempts in flight; an
endpoint that is failing (every attempt since its last success failed, e.g. timed out) at
most `WEBHOOK_FAILING_ENDPOINT_CONCURRENCY`, and all failing endpoints together at most
half the process's slots. Healthy endpoints are claimed first, so endpoints that never
answer cannot hold every slot."""

import asyncio
import contextlib
import functools
import os
import socket
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Select, func, select, update
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
from services.webhooks.sender import AttemptResult, Sender, describe
from services.webhooks.settings import WebhooksSettings
from services.webhooks.signing import signed_headers
from services.webhooks.url_safety import Resolver, parse_networks
from shared.db import Database, utcnow
from shared.logging import get_logger
from shared.wakeups import WakeOnCommitLoop

log = get_logger(__name__)

# Names this process in the attempt log lines (`webhook_attempt`), which only a sender writes.
WORKER = f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Job:
    delivery_id: uuid.UUID
    claim_token: uuid.UUID
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
    def __init__(self, database: Database, settings: WebhooksSettings, resolver: Resolver) -> None:
        self._database = database
        self._delays = settings.retry_delays()
        self._disable_after = timedelta(seconds=settings.webhook_disable_after_seconds)
        # A claimed attempt is someone else's to retry only once its sender must be gone.
        self._lease = timedelta(seconds=2 * settings.webhook_attempt_timeout_seconds + 5)
        self._concurrency = settings.webhook_concurrency
        self._endpoint_concurrency = settings.webhook_endpoint_concurrency
        self._failing_endpoint_concurrency = min(
            settings.webhook_failing_endpoint_concurrency, settings.webhook_endpoint_concurrency
        )
        self._failing_concurrency = settings.failing_concurrency()
        self._sender = Sender(
            parse_networks(settings.webhook_allowed_networks),
            settings.webhook_attempt_timeout_seconds,
            settings.webhook_response_body_limit,
            resolver,
            keepalive_per_host=settings.webhook_endpoint_concurrency,
        )
        self._in_flight: Counter[uuid.UUID] = Counter()
        self._failing_in_flight = 0
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
            self._failing_in_flight += int(job.endpoint_failing)
            task = asyncio.create_task(self._attempt(job))
            self._tasks.add(task)
            task.add_done_callback(functools.partial(self._finished, job))
        return len(jobs) == free

    def _finished(self, job: Job, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._in_flight[job.endpoint_id] -= 1
        if self._in_flight[job.endpoint_id] <= 0:
            del self._in_flight[job.endpoint_id]
        self._failing_in_flight -= int(job.endpoint_failing)
        self._loop.wake()

    def _due(self, now: datetime, failing: bool, cap: int) -> Select[Delivery]:
        """Due deliveries of healthy (or failing) endpoints, at most `cap` per endpoint
        counting those in flight here, earliest first."""
        busy = [endpoint_id for endpoint_id, count in self._in_flight.items() if count >= cap]
        failing_filter = (
            Endpoint.failing_since.is_not(None) if failing else Endpoint.failing_since.is_(None)
        )
        ranked = (
            select(
                Delivery.id,
                func.row_number()
                .over(partition_by=Delivery.endpoint_id, order_by=Delivery.next_attempt_at)
                .label("rank"),
            )
            .join(Endpoint, Endpoint.id == Delivery.endpoint_id)
            .where(
                Delivery.status == PENDING,
                Delivery.next_attempt_at <= now,
                Endpoint.enabled,
                failing_filter,
            )
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
                Delivery.id.in_(select(candidates.c.id).where(candidates.c.rank <= cap)),
                Delivery.status == PENDING,
                Delivery.next_attempt_at <= now,
            )
            .order_by(Delivery.next_attempt_at)
        )
        if not self._database.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        return query

    async def _claim(self, limit: int) -> list[Job]:
        now = utcnow()
        failing_room = max(0, self._failing_concurrency - self._failing_in_flight)
        # Read, then claim what was read: one writer at a time (SQLite's write lock; the
        # rows' SKIP LOCKED locks on PostgreSQL, where other workers claim other rows).
        async with self._database.unit_of_work(write_lock=True) as session:
            chosen: list[Delivery] = []
            # Healthy endpoints first, then failing ones within their own, smaller budget.
            for failing, cap, budget in (
                (False, self._endpoint_concurrency, limit),
                (True, self._failing_endpoint_concurrency, failing_room),
            ):
                budget = min(budget, limit - len(chosen))
                if budget <= 0:
                    continue
                query = self._due(now, failing, cap).limit(budget)
                deliveries = (await session.scalars(query)).all()
                room = Counter(
                    {d.endpoint_id: cap - self._in_flight[d.endpoint_id] for d in deliveries}
                )
                for delivery in deliveries:
                    if room[delivery.endpoint_id] > 0:
                        room[delivery.endpoint_id] -= 1
                        chosen.append(delivery)
            if not chosen:
                return []
            for delivery in chosen:
                delivery.next_attempt_at = now + self._lease
                delivery.claim_token = uuid.uuid4()
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
            bodies = dict(rows.all())
            jobs = []
            for d in chosen:
                assert d.claim_token is not None
                endpoint = endpoints[d.endpoint_id]
                jobs.append(
                    Job(
                        delivery_id=d.id,
                        claim_token=d.claim_token,
                        endpoint_id=d.endpoint_id,
                        url=endpoint.url,
                        signing_secrets=signing_secrets(endpoint, now),
                        message_id=d.message_id,
                        body=bodies[d.message_id],
                        endpoint_failing=endpoint.failing_since is not None,
                    )
                )
            return jobs

    async def _attempt(self, job: Job) -> None:
        attempted_at = utcnow()
        started = time.monotonic()
        try:
            headers = signed_headers(job.message_id, attempted_at, job.body, job.signing_secrets)
            result = await self._sender.send(job.url, headers, job.body)
        except Exception as exc:
            # send() reports its own failures; this is for anything before or around it.
            log.warning(
                "webhook_attempt_failed_early", delivery_id=str(job.delivery_id), exc_info=True
            )
            elapsed = int((time.monotonic() - started) * 1000)
            result = AttemptResult(None, None, elapsed, describe(exc))
        try:
            await self._record(job, attempted_at, result)
        except Exception:
            log.exception("webhook_attempt_not_recorded", delivery_id=str(job.delivery_id))
            # Perhaps the answer itself could not be stored: the outcome without it, then.
            error = result.error
            if error is not None:
                error = f"{error[:400]} (the response could not be stored)"
            bare = AttemptResult(result.status, None, result.duration_ms, error)
            try:
                await self._record(job, attempted_at, bare)
            except Exception:
                # The claim lapses and another attempt follows: at least once, never lost.
                log.exception("webhook_attempt_not_recorded", delivery_id=str(job.delivery_id))
                return
        log.info(
            "webhook_attempt",
            delivery_id=str(job.delivery_id),
            message_id=job.message_id,
            endpoint_id=str(job.endpoint_id),
            worker=WORKER,
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
        async with self._database.unit_of_work(write_lock=True) as session:
            if result.succeeded and not job.endpoint_failing:
                # The common case, in two statements.
                succeeded = await session.execute(
                    update(Delivery)
                    .where(Delivery.id == job.delivery_id, Delivery.claim_token == job.claim_token)
                    .values(
                        status=SUCCEEDED,
                        next_attempt_at=None,
                        claim_token=None,
                        attempt_count=Delivery.attempt_count + 1,
                    )
                    .execution_options(synchronize_session=False)
                )
                if succeeded.rowcount == 1:  # type: ignore[attr-defined]
                    session.add(attempt)
                    return
            # Endpoint before delivery, in the order deleting an endpoint locks them (its
            # deliveries go with it), so that the two never deadlock. NO KEY UPDATE locks:
            # new deliveries and attempts that refer to these rows are not held up.
            lock = {"key_share": True}
            endpoint = await session.get(Endpoint, job.endpoint_id, with_for_update=lock)
            delivery = await session.get(Delivery, job.delivery_id, with_for_update=lock)
            if endpoint is None or delivery is None:
                return  # the endpoint was deleted meanwhile
            # The request was sent, so it goes in the log in any case.
            session.add(attempt)
            if delivery.claim_token != job.claim_token:
                # Someone else holds the delivery now (the claim lapsed, or an admin asked
                # for a retry after it lapsed): their attempt decides what happens next.
                log.warning(
                    "webhook_attempt_claim_lost",
                    delivery_id=str(job.delivery_id),
                    message_id=job.message_id,
                )
                return
            delivery.attempt_count += 1
            delivery.claim_token = None
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
