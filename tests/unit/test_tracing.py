"""The trace context through the outbox, the bus, the consumers and the webhook deliveries
(whether or not this process records spans), which spans are sampled, and the OTLP/HTTP
receiver's decoding of what the SDK's exporter sends."""

import asyncio
import contextlib
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from jsonschema import Draft202012Validator
from opentelemetry import context, propagate
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

import services.webhooks
from launcher.otlp_receiver import OtlpReceiver, render_trace
from services.users.models import Base, OutboxEvent, ProcessedEvent
from services.webhooks.asyncapi import CLOUD_EVENT
from services.webhooks.dispatcher import Dispatcher
from services.webhooks.events import add_message
from services.webhooks.models import SUCCEEDED, Delivery, Endpoint, Message
from services.webhooks.settings import WebhooksSettings
from services.webhooks.signing import new_secret
from services.webhooks.url_safety import Resolver
from shared.db import Database, utcnow
from shared.events.bus import Subscription
from shared.events.cloudevents import CloudEvent
from shared.events.consumer import EventConsumer
from shared.events.inprocess import InProcessBus
from shared.events.outbox import Outbox, OutboxRelay
from shared.logging import service_context
from shared.migrations import upgrade_to_head_async
from shared.telemetry import (
    EntrySampler,
    ServiceOfContext,
    current_traceparent,
    event_parent,
    span_in,
    traced_by,
)
from shared.testing import eventually

WEBHOOK_MIGRATIONS = Path(services.webhooks.__file__).parent / "migrations"


def traceparent(trace_id: str | None = None, span_id: str | None = None) -> str:
    return f"00-{trace_id or secrets.token_hex(16)}-{span_id or secrets.token_hex(8)}-01"


def ids(value: str | None) -> tuple[str, str]:
    """The trace id and span id of a `traceparent`."""
    assert value is not None
    version, trace_id, span_id, _flags = value.split("-")
    assert version == "00"
    return trace_id, span_id


@contextlib.contextmanager
def within(value: str) -> Iterator[None]:
    """The caller's trace `value` current for the block, as a request continuing it."""
    token = context.attach(traced_by(value))
    try:
        yield
    finally:
        context.detach(token)


def span_of(parent: context.Context) -> str:
    """The `traceparent` of what runs in a span of Lyceum's own under `parent`."""
    with span_in(parent, "work"):
        value = current_traceparent()
    assert value is not None
    return value


def test_a_span_continues_its_parent_s_trace_with_an_id_of_its_own() -> None:
    caller = traceparent()
    trace_id, span_id = ids(caller)
    continued = span_of(traced_by(caller))
    assert ids(continued)[0] == trace_id
    assert ids(continued)[1] != span_id
    first, second = ids(span_of(context.Context())), ids(span_of(context.Context()))
    assert first[0] != second[0]
    assert current_traceparent() is None


def test_a_consumer_continues_the_envelope_s_trace_through_its_closest_parent() -> None:
    trace_id = secrets.token_hex(16)
    envelope = traceparent(trace_id)
    publisher = traceparent(trace_id)
    elsewhere = traceparent()

    def parent_of(envelope_value: str | None, headers: dict[str, str]) -> tuple[str, str]:
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=event_parent(envelope_value, headers))
        return ids(carrier["traceparent"])

    assert parent_of(envelope, {}) == ids(envelope)
    # The publisher's span, when it is in the envelope's trace.
    assert parent_of(envelope, {"traceparent": publisher}) == ids(publisher)
    # The envelope decides the trace.
    assert parent_of(envelope, {"traceparent": elsewhere}) == ids(envelope)
    # The headers, when the envelope has no trace context.
    assert parent_of(None, {"traceparent": elsewhere}) == ids(elsewhere)
    # A broker instrumentation's consumer span in the envelope's trace is closer still.
    consumer = traceparent(trace_id)
    with within(consumer):
        assert parent_of(envelope, {"traceparent": publisher}) == ids(consumer)
    with within(elsewhere):
        assert parent_of(envelope, {"traceparent": publisher}) == ids(publisher)


@pytest.fixture
async def users_database(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path}/users.db")
    async with database.engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    yield database
    await database.dispose()


async def test_an_event_carries_its_trace_in_the_envelope_and_the_headers_to_its_consumer(
    users_database: Database,
) -> None:
    caller = traceparent()
    trace_id, caller_span = ids(caller)
    outbox = Outbox(OutboxEvent, source="lyceum/users")
    with within(caller):
        async with users_database.unit_of_work() as session:
            recorded = outbox.add(session, "user.updated", "users/1", {"id": "1"})
    stored = recorded.traceparent
    assert ids(stored)[0] == trace_id
    async with users_database.sessions() as session:
        row = await session.get(OutboxEvent, recorded.id)
    assert row is not None
    assert row.traceparent == stored
    assert CloudEvent.from_json(row.payload).traceparent == stored

    handled: list[tuple[CloudEvent, dict[str, str], str | None]] = []

    async def handler(_session: AsyncSession, event: CloudEvent, _context: None) -> None:
        handled.append((event, dict(received_headers), current_traceparent()))

    received_headers: dict[str, str] = {}
    consumer = EventConsumer(
        users_database, ProcessedEvent, "test.tracing", {"user.updated": handler}, None
    )

    async def receive(event: CloudEvent, headers: dict[str, str]) -> None:
        received_headers.update(headers)
        await consumer.handle(event, headers)

    bus = InProcessBus()
    await bus.consume(Subscription("test.tracing", ("user.*",), receive))
    relay = OutboxRelay(users_database, outbox, bus, poll_seconds=0.05)
    relay.start()
    try:

        async def delivered() -> bool:
            return bool(handled)

        await eventually(delivered, within_seconds=10, interval=0.02)
    finally:
        await relay.stop()
        await bus.close()
    [(event, headers, during_handling)] = handled
    assert event.traceparent == stored
    assert not list(Draft202012Validator(CLOUD_EVENT).iter_errors(event.model_dump(mode="json")))
    # The header names the relay's own span in the same trace; the handling a span of its own.
    relay_trace, relay_span = ids(headers["traceparent"])
    assert relay_trace == trace_id
    assert relay_span not in (caller_span, ids(stored)[1])
    assert ids(during_handling)[0] == trace_id
    assert ids(during_handling)[1] not in (relay_span, caller_span)


@pytest.fixture
async def webhooks_database(tmp_path: Path) -> AsyncIterator[Database]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'webhooks.db'}"
    await upgrade_to_head_async(WEBHOOK_MIGRATIONS, url)
    database = Database(url)
    yield database
    await database.dispose()


@contextlib.asynccontextmanager
async def receiver_of_headers() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """A webhook receiver on 127.0.0.1 that keeps each request's headers."""
    seen: list[dict[str, str]] = []

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        seen.append({k.lower(): v for k, v in request.headers.items()})
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/hook", seen
    finally:
        await runner.cleanup()


async def test_each_delivery_continues_the_trace_of_the_event_that_caused_it(
    webhooks_database: Database,
) -> None:
    caller = traceparent()
    trace_id, caller_span = ids(caller)
    settings = WebhooksSettings(webhook_allowed_networks="127.0.0.1/32")
    resolver = Resolver(threads=1)
    dispatcher = Dispatcher(webhooks_database, settings, resolver)
    try:
        async with receiver_of_headers() as (url, seen):
            async with webhooks_database.unit_of_work() as session:
                endpoint = Endpoint(url=url, event_types=["*"], description="", secret=new_secret())
                session.add(endpoint)
                await session.flush()
                with within(caller):
                    [delivery] = add_message(
                        session, str(uuid.uuid4()), "user.updated", utcnow(), {}, [endpoint]
                    )
            await dispatcher._dispatch_all_due()
            while dispatcher._tasks:
                await asyncio.gather(*list(dispatcher._tasks))
        async with webhooks_database.sessions() as session:
            message = await session.scalar(select(Message))
            sent = await session.get(Delivery, delivery.id)
        assert message is not None
        assert sent is not None
        assert sent.status == SUCCEEDED
        assert ids(message.traceparent)[0] == trace_id
        [headers] = seen
        assert headers["webhook-id"] == message.id
        sent_trace, sent_span = ids(headers["traceparent"])
        assert sent_trace == trace_id
        assert sent_span not in (caller_span, ids(message.traceparent)[1])
    finally:
        await dispatcher.stop()
        resolver.close()


def recorded_by(provider: TracerProvider) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


def test_background_polls_start_no_trace_and_everything_else_follows_its_parent() -> None:
    provider = TracerProvider(sampler=ParentBased(EntrySampler()))
    exporter = recorded_by(provider)
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT):
        pass
    with (
        tracer.start_as_current_span("POST /things", kind=SpanKind.SERVER),
        tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT),
    ):
        pass
    with tracer.start_as_current_span("outbox publish thing.happened"):
        pass
    with tracer.start_as_current_span("queue receive", kind=SpanKind.CONSUMER):
        pass
    unsampled = traced_by("00-" + secrets.token_hex(16) + "-" + secrets.token_hex(8) + "-00")
    with tracer.start_as_current_span("POST /other", context=unsampled, kind=SpanKind.SERVER):
        pass
    recorded = [(s.name, s.kind, s.parent is not None) for s in exporter.get_finished_spans()]
    assert recorded == [
        ("SELECT", SpanKind.CLIENT, True),
        ("POST /things", SpanKind.SERVER, False),
        ("outbox publish thing.happened", SpanKind.INTERNAL, False),
        ("queue receive", SpanKind.CONSUMER, False),
    ]


def test_in_the_embedded_mode_each_span_names_its_service() -> None:
    provider = TracerProvider()
    provider.add_span_processor(ServiceOfContext())
    exporter = recorded_by(provider)
    tracer = provider.get_tracer("test")

    def in_users() -> None:
        with tracer.start_as_current_span("consume user.created"):
            pass

    service_context("users").run(in_users)
    with tracer.start_as_current_span("elsewhere"):
        pass
    spans = {span.name: dict(span.attributes or {}) for span in exporter.get_finished_spans()}
    assert spans["consume user.created"]["lyceum.service"] == "users"
    assert "lyceum.service" not in spans["elsewhere"]


async def test_the_receiver_decodes_what_the_otlp_exporter_sends() -> None:
    receiver = await OtlpReceiver().start()
    provider = TracerProvider(resource=Resource.create({"service.name": "auth"}))
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{receiver.url}/v1/traces"))
    )
    tracer = provider.get_tracer("test")
    try:
        with (
            tracer.start_as_current_span(
                "POST /api/v1/auth/register",
                kind=SpanKind.SERVER,
                attributes={"http.route": "/api/v1/auth/register", "http.status_code": 201},
            ) as server,
            tracer.start_as_current_span("INSERT", kind=SpanKind.CLIENT) as query,
        ):
            query.set_status(StatusCode.ERROR, "duplicate key")
        assert await asyncio.to_thread(provider.force_flush, 10_000)
        trace_id = format(server.get_span_context().trace_id, "032x")
        spans = receiver.trace(trace_id)
    finally:
        await asyncio.to_thread(provider.shutdown)
        await receiver.stop()
    assert [(s.name, s.kind, s.service) for s in spans] == [
        ("POST /api/v1/auth/register", "server", "auth"),
        ("INSERT", "client", "auth"),
    ]
    root, child = spans
    assert root.parent_span_id == ""
    assert child.parent_span_id == root.span_id
    assert root.attributes == {"http.route": "/api/v1/auth/register", "http.status_code": 201}
    assert (root.failed, child.failed) == (False, True)
    assert root.duration_ms >= child.duration_ms >= 0
    lines = render_trace(spans).splitlines()
    assert lines[0].split() == ["service", "span", "duration", "span", "id", "parent"]
    assert lines[1].split()[0] == lines[2].split()[0] == "auth"
    # The child one step further in, its parent's id in the last column.
    assert lines[2].index("INSERT (error)") == lines[1].index("POST /api/v1/auth/register") + 2
    assert lines[2].split()[-1] == root.span_id
    assert lines[1].split()[-1] == "-"


async def test_the_receiver_refuses_what_is_not_a_trace_export() -> None:
    receiver = await OtlpReceiver().start()
    try:
        async with httpx.AsyncClient(timeout=5.0) as client:
            answer = await client.post(
                f"{receiver.url}/v1/traces",
                content=b"\xff\xff not protobuf",
                headers={"content-type": "application/x-protobuf"},
            )
    finally:
        await receiver.stop()
    assert answer.status_code == 400
    assert receiver.spans == []
