"""Sends due deliveries from the database: claims them in batches (one `UPDATE … RETURNING`
whose rows are picked with SKIP LOCKED, so that several webhook processes never send the
same attempt), posts them concurrently with a per-endpoint limit, records the attempts
and schedules the next. Nothing waits in memory for a retry.

Successful attempts are recorded together: those that end while a batch is being written
go in the next one, in one transaction. Failures, and the first success of a failing
endpoint, are recorded one by one, since they may change the endpoint too.

Fairness: each endpoint has at most `WEBHOOK_ENDPOINT_CONCURRENCY` attempts in flight; an
endpoint that is failing (every attempt since its last success failed, e.g. timed out) at
most `WEBHOOK_FAILING_ENDPOINT_CONCURRENCY`, and all failing endpoints together at most
half the process's slots. Healthy endpoints are claimed first, so endpoints that never
answer cannot hold every slot."""

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from opentelemetry import propagate
from opentelemetry.trace import StatusCode
from sqlalchemy import Executable, insert, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.webhooks import metrics, statements
from services.webhooks.events import DELIVERIES_DUE, record_endpoint_disabled
from services.webhooks.models import (
    FAILED,
    PENDING,
    SUCCEEDED,
    Attempt,
    Delivery,
    Endpoint,
)
from services.webhooks.sender import AttemptResult, Sender, describe
from services.webhooks.settings import WebhooksSettings
from services.webhooks.signing import signed_headers
from services.webhooks.url_safety import Resolver, parse_networks
from shared.db import Database, utcnow
from shared.logging import get_logger
from shared.metrics import add_refresher, remove_refresher
from shared.telemetry import span_in, traced_by
from shared.wakeups import WakeOnCommitLoop

log = get_logger(__name__)

# Names this process in the attempt log lines (`webhook_attempt`), which only a sender writes.
WORKER = f"{socket.gethostname()}:{os.getpid()}"
# Successful attempts recorded in one transaction, at most.
RECORD_BATCH = 500
# A claim waits for at least this share (1/CLAIM_SHARE) of the process's slots to be free.
CLAIM_SHARE = 4


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
    traceparent: str | None = None


@dataclass(frozen=True, eq=False)
class Outcome:
    job: Job
    attempted_at: datetime
    result: AttemptResult


@dataclass(frozen=True)
class Recorded:
    """What a recorded attempt did to its delivery (`metrics.SUCCEEDED`, `RETRYING` or
    `FAILED`) and to its endpoint."""

    delivery: str
    endpoint_disabled: bool = False

    def count(self) -> None:
        metrics.DELIVERIES.labels(self.delivery).inc()
        if self.endpoint_disabled:
            metrics.ENDPOINTS_DISABLED.inc()


def signing_secrets(endpoint: Endpoint, now: datetime) -> list[str]:
    return secrets_in_force(
        endpoint.secret, endpoint.previous_secret, endpoint.previous_secret_expires_at, now
    )


def secrets_in_force(
    secret: str, previous: str | None, previous_expires: datetime | None, now: datetime
) -> list[str]:
    if previous and previous_expires is not None and previous_expires > now:
        return [secret, previous]
    return [secret]


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
        # While attempts are in flight, a claim waits for this many free slots: under load
        # one claim then takes many deliveries instead of one per attempt that ends.
        self._claim_at_least = max(1, self._concurrency // CLAIM_SHARE)
        self._claim_on_postgresql = None
        self._record_on_postgresql = None
        if not database.is_sqlite:
            self._claim_on_postgresql = statements.claim_on_postgresql(
                self._endpoint_concurrency, self._failing_endpoint_concurrency
            )
            self._record_on_postgresql = statements.record_successes_on_postgresql()
        self._sender = Sender(
            parse_networks(settings.webhook_allowed_networks),
            settings.webhook_attempt_timeout_seconds,
            settings.webhook_response_body_limit,
            resolver,
            connections=settings.webhook_concurrency,
        )
        # Attempts being sent (not those only waiting to be recorded): all, per endpoint,
        # and to failing endpoints.
        self._sending = 0
        self._in_flight: Counter[uuid.UUID] = Counter()
        self._failing_in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._unrecorded: list[tuple[Outcome, asyncio.Future[bool]]] = []
        self._recorder: asyncio.Task[None] | None = None
        self._loop = WakeOnCommitLoop(
            database,
            DELIVERIES_DUE,
            self._dispatch_all_due,
            poll_seconds=settings.webhook_poll_seconds,
            name="webhook-dispatcher",
        )

    def start(self) -> None:
        self._loop.start()
        add_refresher(self, self._refresh_metrics)

    async def _refresh_metrics(self) -> None:
        await metrics.count_disabled_endpoints(self._database)

    async def stop(self) -> None:
        remove_refresher(self)
        await self._loop.stop()
        for task in self._tasks:
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._recorder is not None:
            # What was sent is recorded rather than sent again once its claim lapses.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._recorder), 10)
        await self._sender.close()

    async def _dispatch_all_due(self) -> None:
        while await self._dispatch_due():
            pass

    async def _dispatch_due(self) -> bool:
        """Starts what is due and fits; returns whether more may be waiting."""
        # Attempts waiting to be recorded count too, so that a slow database holds up
        # claims instead of piling up outcomes in memory.
        free = min(self._concurrency - self._sending, 2 * self._concurrency - len(self._tasks))
        if free <= 0 or (free < self._claim_at_least and self._sending > 0):
            return False
        jobs = await self._claim(free)
        for job in jobs:
            self._sending += 1
            self._in_flight[job.endpoint_id] += 1
            self._failing_in_flight += int(job.endpoint_failing)
            task = asyncio.create_task(self._attempt(job))
            self._tasks.add(task)
            task.add_done_callback(self._finished)
        return len(jobs) == free

    def _sent(self, job: Job) -> None:
        self._sending -= 1
        self._in_flight[job.endpoint_id] -= 1
        if self._in_flight[job.endpoint_id] <= 0:
            del self._in_flight[job.endpoint_id]
        self._failing_in_flight -= int(job.endpoint_failing)
        self._loop.wake()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._loop.wake()

    async def _claim(self, limit: int) -> list[Job]:
        now = utcnow()
        token = uuid.uuid4()  # one per claim: a later claim of any of these rows has another
        failing_room = max(0, self._failing_concurrency - self._failing_in_flight)
        values: dict[str, Any] = {
            "now": now,
            "token": token,
            "until": now + self._lease,
            "limit": limit,
            "failing_limit": min(limit, failing_room),
        }
        rows: Sequence[Any]
        if self._claim_on_postgresql is not None:
            values["busy_endpoints"] = list(self._in_flight)
            values["busy_counts"] = list(self._in_flight.values())
            rows = await self._alone(self._claim_on_postgresql, values)
        else:
            claim = statements.claim_on_sqlite(
                self._in_flight, self._endpoint_concurrency, self._failing_endpoint_concurrency
            )
            # No row locks: the write lock taken first keeps other claims out meanwhile.
            async with self._database.unit_of_work(write_lock=True) as session:
                claimed = list((await session.scalars(claim, values)).all())
                if not claimed:
                    return []
                rows = (await session.execute(statements.jobs_of(claimed))).all()
        return [
            Job(
                delivery_id=row.id,
                claim_token=token,
                endpoint_id=row.endpoint_id,
                url=row.url,
                signing_secrets=secrets_in_force(
                    row.secret, row.previous_secret, row.previous_secret_expires_at, now
                ),
                message_id=row.message_id,
                body=row.body,
                endpoint_failing=row.failing_since is not None,
                traceparent=row.traceparent,
            )
            for row in rows
        ]

    async def _alone(self, statement: Executable, values: dict[str, Any]) -> Sequence[Any]:
        """One statement as a transaction of its own: no BEGIN and COMMIT round trips."""
        async with self._database.autocommit_engine.connect() as connection:
            return (await connection.execute(statement, values)).all()

    async def _attempt(self, job: Job) -> None:
        attempted_at = utcnow()
        started = time.monotonic()
        try:
            result = await self._send(job, attempted_at)
        except Exception as exc:
            # send() reports its own failures; this is for anything before or around it.
            log.warning(
                "webhook_attempt_failed_early", delivery_id=str(job.delivery_id), exc_info=True
            )
            elapsed = int((time.monotonic() - started) * 1000)
            result = AttemptResult(None, None, elapsed, describe(exc))
        finally:
            self._sent(job)
        metrics.ATTEMPT_LATENCY.labels(
            metrics.SUCCEEDED if result.succeeded else metrics.FAILED
        ).observe(time.monotonic() - started)
        outcome = Outcome(job, attempted_at, result)
        batched = result.succeeded and not job.endpoint_failing
        recorded = batched and await self._record_with_others(outcome)
        if not recorded and not await self._record_alone(outcome):
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

    async def _send(self, job: Job, attempted_at: datetime) -> AttemptResult:
        """One attempt, in the trace of the event that caused it: the receiver gets its
        `traceparent` (the HTTP client's span's, when spans are recorded)."""
        attributes = {
            "webhook.delivery_id": str(job.delivery_id),
            "webhook.endpoint_id": str(job.endpoint_id),
            "cloudevents.event_id": job.message_id,
        }
        with span_in(traced_by(job.traceparent), "webhook delivery", attributes=attributes) as span:
            headers = signed_headers(job.message_id, attempted_at, job.body, job.signing_secrets)
            propagate.inject(headers)
            result = await self._sender.send(job.url, headers, job.body)
            if result.error is not None:
                span.set_status(StatusCode.ERROR, result.error)
            return result

    async def _record_alone(self, outcome: Outcome) -> bool:
        job, attempted_at, result = outcome.job, outcome.attempted_at, outcome.result
        try:
            recorded = await self._record(job, attempted_at, result)
        except Exception:
            log.exception("webhook_attempt_not_recorded", delivery_id=str(job.delivery_id))
            # Perhaps the answer itself could not be stored: the outcome without it, then.
            error = result.error
            if error is not None:
                error = f"{error[:400]} (the response could not be stored)"
            bare = AttemptResult(result.status, None, result.duration_ms, error)
            try:
                recorded = await self._record(job, attempted_at, bare)
            except Exception:
                # The claim lapses and another attempt follows: at least once, never lost.
                log.exception("webhook_attempt_not_recorded", delivery_id=str(job.delivery_id))
                return False
        if recorded is not None:
            recorded.count()
        return True

    async def _record_with_others(self, outcome: Outcome) -> bool:
        """Records a success in the next batch; False when that did not record it (the
        claim was lost, the delivery is gone, or the batch failed)."""
        recorded = asyncio.get_running_loop().create_future()
        self._unrecorded.append((outcome, recorded))
        if self._recorder is None:
            self._recorder = asyncio.create_task(self._record_batches())
        result: bool = await recorded
        return result

    async def _record_batches(self) -> None:
        try:
            while self._unrecorded:
                batch = self._unrecorded[:RECORD_BATCH]
                del self._unrecorded[:RECORD_BATCH]
                try:
                    recorded = await self._record_successes([outcome for outcome, _ in batch])
                except Exception:
                    log.exception("webhook_attempts_not_recorded", count=len(batch))
                    recorded = set()
                if recorded:
                    metrics.DELIVERIES.labels(metrics.SUCCEEDED).inc(len(recorded))
                for outcome, future in batch:
                    if not future.done():
                        future.set_result(outcome in recorded)
        finally:
            self._recorder = None

    async def _record_successes(self, outcomes: list[Outcome]) -> set[Outcome]:
        """Successful attempts of healthy endpoints, in one transaction, each on its
        delivery only while its claim holds; returns those recorded."""
        claims: dict[uuid.UUID, Outcome] = {}
        for outcome in outcomes:
            claims.setdefault(outcome.job.delivery_id, outcome)  # twice: the other alone
        attempts = [_attempt_values(o) for o in claims.values()]
        if self._record_on_postgresql is not None:
            values: dict[str, Any] = {
                "ids": list(claims),
                "tokens": [o.job.claim_token for o in claims.values()],
            }
            for name, _ in statements.ATTEMPT_COLUMNS:
                values[name] = [attempt[name] for attempt in attempts]
            rows = await self._alone(self._record_on_postgresql, values)
            return {claims[row.delivery_id] for row in rows}
        async with self._database.unit_of_work(write_lock=True) as session:
            pairs = [(o.job.delivery_id, o.job.claim_token) for o in claims.values()]
            recorded = set(
                await session.scalars(
                    statements.succeeded().where(
                        Delivery.id.in_(claims),
                        tuple_(Delivery.id, Delivery.claim_token).in_(pairs),
                    )
                )
            )
            if recorded:
                await session.execute(
                    insert(Attempt), [a for a in attempts if a["delivery_id"] in recorded]
                )
        return {claims[delivery_id] for delivery_id in recorded}

    async def _record(
        self, job: Job, attempted_at: datetime, result: AttemptResult
    ) -> Recorded | None:
        """None when the attempt changed nothing (its claim was lost, or its endpoint
        deleted)."""
        attempt = Attempt(**_attempt_values(Outcome(job, attempted_at, result)))
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
                    return Recorded(metrics.SUCCEEDED)
            # Endpoint before delivery, in the order deleting an endpoint locks them (its
            # deliveries go with it), so that the two never deadlock. NO KEY UPDATE locks:
            # new deliveries and attempts that refer to these rows are not held up.
            lock = {"key_share": True}
            endpoint = await session.get(Endpoint, job.endpoint_id, with_for_update=lock)
            delivery = await session.get(Delivery, job.delivery_id, with_for_update=lock)
            if endpoint is None or delivery is None:
                return None  # the endpoint was deleted meanwhile
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
                return None
            delivery.attempt_count += 1
            delivery.claim_token = None
            if result.succeeded:
                delivery.status, delivery.next_attempt_at = SUCCEEDED, None
                endpoint.failing_since = None
                return Recorded(metrics.SUCCEEDED)
            if delivery.attempt_count <= len(self._delays):
                delay = timedelta(seconds=self._delays[delivery.attempt_count - 1])
                delivery.status, delivery.next_attempt_at = PENDING, utcnow() + delay
            else:
                delivery.status, delivery.next_attempt_at = FAILED, None
            disabled = False
            if endpoint.failing_since is None:
                endpoint.failing_since = attempted_at
            elif attempted_at - endpoint.failing_since >= self._disable_after:
                disabled = await self._disable(session, endpoint)
            return Recorded(
                metrics.RETRYING if delivery.status == PENDING else metrics.FAILED, disabled
            )

    async def _disable(self, session: AsyncSession, endpoint: Endpoint) -> bool:
        reason = f"Every attempt failed since {endpoint.failing_since:%Y-%m-%dT%H:%M:%SZ}"
        disabled = await session.execute(
            update(Endpoint)
            .where(Endpoint.id == endpoint.id, Endpoint.enabled)
            .values(enabled=False, disabled_reason=reason)
            .execution_options(synchronize_session=False)
        )
        if disabled.rowcount != 1:  # type: ignore[attr-defined]
            return False
        record_endpoint_disabled(session, endpoint, reason)
        log.warning("webhook_endpoint_disabled", endpoint_id=str(endpoint.id), reason=reason)
        return True


def _attempt_values(outcome: Outcome) -> dict[str, Any]:
    result = outcome.result
    return statements.attempt_values(
        outcome.job.delivery_id,
        outcome.attempted_at,
        result.status,
        result.body,
        result.duration_ms,
        result.error,
    )
