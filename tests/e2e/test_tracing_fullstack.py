"""One registration, one trace: gateway → auth → outbox relay → broker → the users and
webhooks consumers → the webhook delivery, every hop a span that its process exported with
OTLP/HTTP to a receiver this test runs (decoded with opentelemetry-proto), in a full stack of
its own started with OTEL_EXPORTER_OTLP_ENDPOINT."""

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Callable

import aio_pika
import pytest
from jsonschema import Draft202012Validator

from launcher.otlp_receiver import OtlpReceiver, ReceivedSpan, render_trace
from services.webhooks.asyncapi import CLOUD_EVENT
from shared.testing import Stack, eventually
from tests.conftest import RABBITMQ, Stacks
from tests.e2e.bus_helpers import drain, other_team_queue
from tests.e2e.helpers import PASSWORD, admin_tokens, unique_email
from tests.e2e.webhook_receivers import Receiver, create_endpoint, delete_endpoint, receiving

TRACED_STACK = "full-traced"
REGISTER_ROUTE = "/api/v1/auth/register"


@pytest.fixture(scope="module")
async def otlp() -> AsyncIterator[OtlpReceiver]:
    receiver = await OtlpReceiver().start()
    yield receiver
    await receiver.stop()


@pytest.fixture(scope="module")
async def traced_stack(stacks: Stacks, otlp: OtlpReceiver) -> AsyncIterator[Stack]:
    """Torn down before the receiver, so that the spans flushed at shutdown reach it."""
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url, "OTEL_BSP_SCHEDULE_DELAY": "200"}
    stack = await asyncio.to_thread(stacks.start_other, TRACED_STACK, "full", env)
    yield stack
    await asyncio.to_thread(stacks.stop_other, TRACED_STACK)


class Trace:
    def __init__(self, spans: list[ReceivedSpan]) -> None:
        self.spans = spans
        self.by_id = {span.span_id: span for span in spans}

    def ancestors(self, span: ReceivedSpan) -> list[ReceivedSpan]:
        found = []
        while (parent := self.by_id.get(span.parent_span_id)) is not None:
            found.append(parent)
            span = parent
        return found

    def parent(self, span: ReceivedSpan) -> ReceivedSpan | None:
        return self.by_id.get(span.parent_span_id)

    def find(self, service: str, test: Callable[[ReceivedSpan], bool]) -> list[ReceivedSpan]:
        return [s for s in self.spans if s.service == service and test(s)]

    def only(self, service: str, test: Callable[[ReceivedSpan], bool], what: str) -> ReceivedSpan:
        found = self.find(service, test)
        assert len(found) == 1, (
            f"{what}: {len(found)} spans of {service}\n{render_trace(self.spans)}"
        )
        return found[0]

    def lacking(self, caller_span: str) -> list[str]:
        """What a complete trace of the registration has and this one does not (yet)."""
        missing = [
            f"the parent of {s.service} {s.name!r}"
            for s in self.spans
            if s.parent_span_id not in self.by_id and s.parent_span_id != caller_span
        ]
        wanted: dict[str, Callable[[ReceivedSpan], bool]] = {
            "gateway": lambda s: s.kind == "server",
            "auth": lambda s: s.name.startswith("outbox publish"),
            "users": lambda s: s.kind == "consumer",
            "webhooks": lambda s: s.name == "webhook delivery",
        }
        for service, test in wanted.items():
            if not self.find(service, test):
                missing.append(f"the hop through {service}")
        return missing


async def test_one_registration_is_one_trace_from_the_gateway_to_the_webhook_receiver(
    traced_stack: Stack, otlp: OtlpReceiver
) -> None:
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    email = unique_email("traced")
    broker = await aio_pika.connect(f"amqp://guest:guest@{RABBITMQ[0]}:{RABBITMQ[1]}/")
    async with broker, traced_stack.client() as client, receiving() as receiver:
        queue = await other_team_queue(await broker.channel(), traced_stack, "user.created")
        admin = await admin_tokens(client)
        endpoint = await create_endpoint(client, admin, receiver, ["user.created"])
        try:
            response = await client.post(
                REGISTER_ROUTE,
                json={"email": email, "password": PASSWORD, "name": "Traced"},
                headers={"traceparent": f"00-{trace_id}-{caller_span}-01"},
            )
            assert response.status_code == 201, response.text
            [message] = await drain(queue, 1, email)
            spans = await complete_trace(otlp, receiver, trace_id, caller_span, email)
        finally:
            await delete_endpoint(client, admin, endpoint)
    print(f"\ntrace {trace_id}\n{render_trace(spans)}")
    found = Trace(spans)

    # One tree: a single span whose parent is not in the trace, the gateway's server span,
    # child of the caller's own span.
    assert len(found.by_id) == len(spans)
    [root] = [s for s in spans if s.parent_span_id not in found.by_id]
    assert (root.service, root.kind, root.parent_span_id) == ("gateway", "server", caller_span)

    # gateway → auth
    auth = found.only(
        "auth",
        lambda s: s.kind == "server" and s.attributes.get("http.route") == REGISTER_ROUTE,
        "auth's server span",
    )
    call = found.parent(auth)
    assert call is not None
    assert (call.service, call.kind, found.parent(call)) == ("gateway", "client", root)
    assert found.find("auth", lambda s: s.kind == "client" and root in found.ancestors(s)), (
        "auth's queries are spans of the request"
    )

    # auth's outbox → the relay → the broker
    relay = found.only("auth", lambda s: s.name == "outbox publish user.created", "the relay")
    assert auth in found.ancestors(relay)
    publish = found.only("auth", lambda s: s.kind == "producer", "aio-pika's publish")
    assert found.parent(publish) is relay

    # the broker → each consumer, and its handling of the event
    handled = {}
    for service in ("users", "webhooks"):
        consumed = found.only(service, lambda s: s.kind == "consumer", "aio-pika's consumer")
        assert found.parent(consumed) is publish
        handled[service] = found.only(
            service, lambda s: s.name == "consume user.created", "the consumer's handling"
        )
        assert found.parent(handled[service]) is consumed
    assert found.find("users", lambda s: handled["users"] in found.ancestors(s)), (
        "users' writes are spans of its handling"
    )

    # the webhooks consumer → the dispatcher's delivery → the receiver
    delivery = found.only("webhooks", lambda s: s.name == "webhook delivery", "the delivery")
    assert handled["webhooks"] in found.ancestors(delivery)
    post = found.only(
        "webhooks", lambda s: s.kind == "client" and found.parent(s) is delivery, "the POST"
    )
    [request] = receiver.about("email", email, "user.created")
    version, sent_trace, sent_parent, flags = request.headers["traceparent"].split("-")
    assert (version, sent_trace, sent_parent, flags) == ("00", trace_id, post.span_id, "01")

    # The envelope names the trace (CloudEvents distributed tracing extension) and validates
    # against the catalogue's envelope; the message header names the publisher's span.
    envelope = json.loads(message.body)
    assert not list(Draft202012Validator(CLOUD_EVENT).iter_errors(envelope))
    _, envelope_trace, envelope_span, _ = envelope["traceparent"].split("-")
    assert envelope_trace == trace_id
    assert auth in [found.by_id[envelope_span], *found.ancestors(found.by_id[envelope_span])]
    assert str(message.headers["traceparent"]).split("-")[1:3] == [trace_id, publish.span_id]


async def complete_trace(
    otlp: OtlpReceiver, receiver: Receiver, trace_id: str, caller_span: str, email: str
) -> list[ReceivedSpan]:
    """The trace once every hop's span and every span's parent has arrived, and the
    receiver has the delivery."""

    async def complete() -> bool:
        delivered = receiver.about("email", email, "user.created")
        return bool(delivered) and not Trace(otlp.trace(trace_id)).lacking(caller_span)

    try:
        await eventually(complete, within_seconds=60, interval=0.2)
    except AssertionError:
        spans = otlp.trace(trace_id)
        raise AssertionError(
            f"the trace is incomplete: {Trace(spans).lacking(caller_span)}\n{render_trace(spans)}"
        ) from None
    return otlp.trace(trace_id)
