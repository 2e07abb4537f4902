"""The webhooks' batch statements: fanning an event out into deliveries, claiming due
deliveries and recording successful attempts, many at a time.

On PostgreSQL each is one statement built once, whose values (arrays among them) are
parameters: its text never changes, so every connection prepares it once, and it runs as
a transaction of its own. Due deliveries are picked per endpoint (a LATERAL subquery per
enabled endpoint, on the partial index of pending deliveries) with FOR UPDATE SKIP LOCKED,
so that processes claiming at once take different rows.

SQLite has neither row locks nor arrays: the claim there is an `UPDATE … RETURNING` of
what a window function ranks per endpoint, run under the database's write lock."""

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Insert,
    Integer,
    Select,
    Text,
    Update,
    Uuid,
    bindparam,
    case,
    column,
    func,
    insert,
    literal,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql.selectable import TableValuedAlias
from sqlalchemy.types import TypeEngine

from services.webhooks.models import PENDING, SUCCEEDED, Attempt, Delivery, Endpoint, Message
from shared.db import UTCDateTime

# What a claimed delivery is sent with, besides its id, endpoint and message.
JOB_COLUMNS = (
    Message.body,
    Message.traceparent,
    Endpoint.url,
    Endpoint.secret,
    Endpoint.previous_secret,
    Endpoint.previous_secret_expires_at,
    Endpoint.failing_since,
)


def _unnest(*columns: tuple[str, TypeEngine[Any]]) -> TableValuedAlias:
    """`unnest(:name, …) AS (name, …)`: one row per position of the array parameters."""
    return (
        func.unnest(*(bindparam(name, type_=ARRAY(kind)) for name, kind in columns))
        .table_valued(*(column(name, kind) for name, kind in columns))
        .render_derived()
    )


def _due() -> list[ColumnElement[bool]]:
    # The status as a literal in the SQL, not a parameter: only then can PostgreSQL use
    # the partial index of pending deliveries in a prepared statement's generic plan.
    pending = literal(PENDING, literal_execute=True)
    now = bindparam("now", type_=UTCDateTime())
    return [Delivery.status == pending, Delivery.next_attempt_at <= now]


def _of_endpoints(failing: bool) -> list[ColumnElement[bool]]:
    health = Endpoint.failing_since.is_not(None) if failing else Endpoint.failing_since.is_(None)
    return [Endpoint.enabled.is_(True), health]


def _claim(chosen: Select[Any]) -> Update:
    """Claims the chosen deliveries; parameters `token` and `until` (the claim's lease)."""
    return (
        update(Delivery)
        .where(Delivery.id.in_(chosen))
        .values(
            claim_token=bindparam("token", type_=Uuid()),
            next_attempt_at=bindparam("until", type_=UTCDateTime()),
        )
        .execution_options(synchronize_session=False)
    )


def _healthy_then_failing(healthy: Select[Any], failing: Select[Any]) -> Select[Any]:
    """At most `limit` of both: healthy endpoints' deliveries first."""
    both = union_all(select(healthy.subquery()), select(failing.subquery())).subquery()
    return (
        select(both.c.id)
        .order_by(both.c.failing, both.c.next_attempt_at)
        .limit(bindparam("limit", type_=Integer()))
    )


def claim_on_postgresql(endpoint_cap: int, failing_cap: int) -> Select[Any]:
    """Claims due deliveries and answers what sending them takes. Parameters: `now`,
    `token`, `until`, `limit`, `failing_limit`, and what is in flight here per endpoint,
    `busy_endpoints` and `busy_counts` (an endpoint has room for its cap less those)."""

    def candidates(failing: bool, cap: int, budget: str) -> Select[Any]:
        busy = _unnest(("busy_endpoints", Uuid()), ("busy_counts", Integer()))
        in_flight = func.coalesce(busy.c.busy_counts, 0)
        per_endpoint = (
            select(Delivery.id, Delivery.next_attempt_at)
            .where(Delivery.endpoint_id == Endpoint.id, *_due())
            .order_by(Delivery.next_attempt_at)
            .limit(literal(cap) - in_flight)
            .with_for_update(skip_locked=True)
            .lateral()
        )
        return (
            select(
                per_endpoint.c.id,
                per_endpoint.c.next_attempt_at,
                literal(int(failing), Integer, literal_execute=True).label("failing"),
            )
            .select_from(Endpoint)
            .outerjoin(busy, busy.c.busy_endpoints == Endpoint.id)
            .join(per_endpoint, true())
            .where(*_of_endpoints(failing), in_flight < cap)
            .order_by(per_endpoint.c.next_attempt_at)
            .limit(bindparam(budget, type_=Integer()))
        )

    chosen = _healthy_then_failing(
        candidates(False, endpoint_cap, "limit"), candidates(True, failing_cap, "failing_limit")
    )
    claimed = _claim(chosen).returning(Delivery.id, Delivery.endpoint_id, Delivery.message_id).cte()
    return (
        select(claimed.c.id, claimed.c.endpoint_id, claimed.c.message_id, *JOB_COLUMNS)
        .join_from(claimed, Message, Message.id == claimed.c.message_id)
        .join(Endpoint, Endpoint.id == claimed.c.endpoint_id)
    )


def claim_on_sqlite(
    in_flight: Mapping[uuid.UUID, int], endpoint_cap: int, failing_cap: int
) -> Update:
    """The same choice, returning the ids claimed; the same parameters but the busy ones."""

    def candidates(failing: bool, cap: int, budget: str) -> Select[Any]:
        endpoints = _of_endpoints(failing)
        full = [e for e, count in in_flight.items() if count >= cap]
        if full:
            endpoints.append(Endpoint.id.not_in(full))
        rooms = {e: cap - count for e, count in in_flight.items() if count < cap}
        room = case(rooms, value=Endpoint.id, else_=cap) if rooms else literal(cap)
        ranked = (
            select(
                Delivery.id,
                Delivery.next_attempt_at,
                func.row_number()
                .over(partition_by=Delivery.endpoint_id, order_by=Delivery.next_attempt_at)
                .label("rank"),
                room.label("room"),
            )
            .join(Endpoint, Endpoint.id == Delivery.endpoint_id)
            .where(*_due(), *endpoints)
            .subquery()
        )
        return (
            select(ranked.c.id, ranked.c.next_attempt_at, literal(int(failing)).label("failing"))
            .where(ranked.c.rank <= ranked.c.room)
            .order_by(ranked.c.next_attempt_at)
            .limit(bindparam(budget, type_=Integer()))
        )

    chosen = _healthy_then_failing(
        candidates(False, endpoint_cap, "limit"), candidates(True, failing_cap, "failing_limit")
    )
    return _claim(chosen).returning(Delivery.id)


def jobs_of(claimed: list[uuid.UUID]) -> Select[Any]:
    columns: tuple[Any, ...] = (Delivery.id, Delivery.endpoint_id, Delivery.message_id)
    query: Select[Any] = (
        select(*columns, *JOB_COLUMNS)
        .join(Message, Message.id == Delivery.message_id)
        .join(Endpoint, Endpoint.id == Delivery.endpoint_id)
        .where(Delivery.id.in_(claimed))
    )
    return query


def succeeded() -> Update:
    return (
        update(Delivery)
        .values(
            status=SUCCEEDED,
            next_attempt_at=None,
            claim_token=None,
            attempt_count=Delivery.attempt_count + 1,
        )
        .returning(Delivery.id)
        .execution_options(synchronize_session=False)
    )


ATTEMPT_COLUMNS: list[tuple[str, TypeEngine[Any]]] = [
    ("delivery_id", Uuid()),
    ("attempted_at", UTCDateTime()),
    ("response_status", Integer()),
    ("response_body", Text()),
    ("duration_ms", Integer()),
    ("error", Text()),
]


def record_successes_on_postgresql() -> Insert:
    """Marks succeeded the deliveries whose claim still holds, and logs their attempts;
    answers the delivery ids recorded. Parameters: `ids` and `tokens` (the claims), and
    one array per attempt column, in the order of `ids`."""
    held = _unnest(("ids", Uuid()), ("tokens", Uuid()))
    updated = succeeded().where(Delivery.id == held.c.ids, Delivery.claim_token == held.c.tokens)
    done = updated.cte()
    attempts = _unnest(*ATTEMPT_COLUMNS)
    names = [name for name, _ in ATTEMPT_COLUMNS]
    return (
        insert(Attempt)
        .from_select(
            ["id", *names],
            select(func.gen_random_uuid(), *(attempts.c[name] for name in names)).join(
                done, done.c.id == attempts.c.delivery_id
            ),
        )
        .returning(Attempt.delivery_id)
        .add_cte(done)
    )


def fan_out_on_postgresql() -> Insert:
    """One pending delivery of message `message_id` to each endpoint of `endpoint_ids`,
    due `now`."""
    endpoints = _unnest(("endpoint_ids", Uuid()))
    now = bindparam("now", type_=UTCDateTime())
    columns = {
        "id": func.gen_random_uuid(),
        "message_id": bindparam("message_id", type_=Text()),
        "endpoint_id": endpoints.c.endpoint_ids,
        "status": literal(PENDING, literal_execute=True),
        "attempt_count": literal(0, Integer, literal_execute=True),
        "next_attempt_at": now,
        "created_at": now,
        "updated_at": now,
    }
    return insert(Delivery).from_select(list(columns), select(*columns.values()))


def attempt_values(
    delivery_id: uuid.UUID,
    attempted_at: datetime,
    status: int | None,
    body: str | None,
    duration_ms: int,
    error: str | None,
) -> dict[str, Any]:
    return {
        "delivery_id": delivery_id,
        "attempted_at": attempted_at,
        "response_status": status,
        "response_body": body,
        "duration_ms": duration_ms,
        "error": error,
    }
