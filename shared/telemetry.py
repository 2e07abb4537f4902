"""W3C trace context through every hop; spans only where something will export them.

With `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set, each process
records spans and exports them with OTLP/HTTP (`configure_tracing`): an SDK tracer provider
named after the service (`OTEL_SERVICE_NAME`, the resource's `service.name`) with a batch
processor, and the maintained instrumentations of FastAPI (a server span per request), aiohttp
and httpx clients, SQLAlchemy, Redis and aio-pika. Lyceum's own spans are those no library
makes: the outbox relay publishing an event, a consumer handling one, a webhook delivery.
Every `OTEL_*` setting of the exporter and the batch processor applies (`OTEL_BSP_*`,
`OTEL_EXPORTER_OTLP_HEADERS`, ...); docs/tracing.md tells the rest.

Without an endpoint nothing is instrumented and no span is recorded, and still every request
continues its caller's trace: `TraceContextMiddleware` reads the incoming `traceparent` (with
the process's propagators), gives the request a span id of its own in that trace (a new trace
when none came), and makes it current, so that what the request calls (the gateway's
upstream request) and the events it records (the outbox) carry the trace onward, with the
caller's sampling flag and trace state. Events and webhook deliveries do the same
(`span_in`).
"""

import asyncio
import contextlib
import functools
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import structlog
from opentelemetry import context, propagate, trace
from opentelemetry.sdk.trace import Span, SpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, SamplingResult
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes
from starlette.types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from fastapi import FastAPI
    from opentelemetry.sdk.trace import TracerProvider

_ids = RandomIdGenerator()
tracer = trace.get_tracer("lyceum")

# Requests that make no span: probes and scrapes, many times a minute.
UNTRACED_URLS = "/health$,/ready$,/metrics$"
# Stored `traceparent`s whose contexts are kept (`traced_by`).
TRACED_BY_KEPT = 1024

_provider: "TracerProvider | None" = None


def export_endpoint() -> str | None:
    """Where spans go, from the environment; None when tracing is off."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    for name in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        endpoint = os.environ.get(name, "").strip()
        if endpoint:
            return endpoint
    return None


def configure_tracing(service_name: str) -> bool:
    """Names the service and, when an OTLP endpoint is set, makes the process record and
    export spans (once per process: in the embedded mode the first call names every span of
    the process, see docs/tracing.md). Call before the app starts. Returns whether spans
    are recorded."""
    global _provider
    os.environ.setdefault("OTEL_SERVICE_NAME", service_name)
    if _provider is None and not recording() and export_endpoint() is not None:
        _provider = _export_spans()
    return recording()


def _export_spans() -> "TracerProvider":
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.aio_pika import AioPikaInstrumentor
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # OTEL_TRACES_SAMPLER, when set, chooses the sampler instead (the SDK reads it).
    sampler = None if os.environ.get("OTEL_TRACES_SAMPLER") else ParentBased(EntrySampler())
    # The resource reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
    provider = TracerProvider(resource=Resource.create(), sampler=sampler)
    provider.add_span_processor(ServiceOfContext())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    # The stable HTTP and database attribute names (`http.request.method`, `url.full`,
    # `db.query.text`, ...), unless the environment chooses.
    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http,database")
    AioHttpClientInstrumentor().instrument()
    HTTPXClientInstrumentor().instrument()
    RedisInstrumentor().instrument()
    AioPikaInstrumentor().instrument()
    # It declares SQLAlchemy < 2.1; the engine events it listens to are the same in 2.1.
    SQLAlchemyInstrumentor().instrument(skip_dep_check=True)
    return provider


def instrument_app(app: "FastAPI") -> None:
    """A server span per request of `app`, when this process exports spans."""
    if _provider is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=_provider,
        excluded_urls=os.environ.get("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS", UNTRACED_URLS),
        exclude_spans=["receive", "send"],
    )


async def flush_spans(timeout_seconds: float = 5.0) -> None:
    """Exports the spans still waiting in the batch (at shutdown)."""
    if _provider is not None:
        await asyncio.to_thread(_provider.force_flush, int(timeout_seconds * 1000))


def recording() -> bool:
    """Whether a tracer provider has been configured, so that spans are recorded."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def _continued(incoming: context.Context) -> context.Context:
    parent = trace.get_current_span(incoming).get_span_context()
    if parent.is_valid:
        trace_id, flags, state = parent.trace_id, parent.trace_flags, parent.trace_state
    else:
        trace_id, flags, state = _ids.generate_trace_id(), TraceFlags(TraceFlags.DEFAULT), None
    span_context = SpanContext(
        trace_id, _ids.generate_span_id(), is_remote=False, trace_flags=flags, trace_state=state
    )
    return trace.set_span_in_context(NonRecordingSpan(span_context), incoming)


def continued_trace(carrier: Mapping[str, str]) -> context.Context:
    """A context whose current span continues the trace `carrier` names (or a new trace),
    with a span id of its own and nothing recorded."""
    return _continued(propagate.extract(carrier) if carrier else context.Context())


@functools.lru_cache(maxsize=TRACED_BY_KEPT)
def traced_by(traceparent: str | None) -> context.Context:
    """The context of a stored `traceparent` (an empty one for None). Kept for the next
    caller with the same one (a webhook message goes to each of its endpoints; a context
    cannot be changed)."""
    return propagate.extract({"traceparent": traceparent}) if traceparent else context.Context()


def current_traceparent() -> str | None:
    """The `traceparent` of the current span, to store with work done later."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


def event_parent(traceparent: str | None, headers: Mapping[str, str]) -> context.Context:
    """What the handling of a consumed event continues. The envelope's `traceparent` names
    the trace (the message headers, when the envelope has none); within it the closest
    parent wins: the broker instrumentation's consumer span when it is current, else the
    publisher's span of the headers, else the envelope's own."""
    envelope = traced_by(traceparent)
    wanted = trace.get_current_span(envelope).get_span_context()
    from_headers = propagate.extract(headers) if headers else context.Context()
    for candidate in (context.get_current(), from_headers):
        found = trace.get_current_span(candidate).get_span_context()
        if found.is_valid and (not wanted.is_valid or found.trace_id == wanted.trace_id):
            return candidate
    return envelope


@contextlib.contextmanager
def span_in(
    parent: context.Context,
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Attributes = None,
) -> Iterator[trace.Span]:
    """A span of Lyceum's own, child of `parent` and current while the block runs. While no
    tracer provider records spans: only a span id of its own in the parent's trace (a new
    trace when the parent has none), as `TraceContextMiddleware` gives a request."""
    if recording():
        with tracer.start_as_current_span(
            name, context=parent, kind=kind, attributes=attributes
        ) as span:
            yield span
        return
    continued = _continued(parent)
    token = context.attach(continued)
    try:
        yield trace.get_current_span(continued)
    finally:
        context.detach(token)


class EntrySampler(Sampler):
    """Samples the traces that begin where work begins: a request served, a message
    consumed, Lyceum's own spans. A client span that begins a trace (a query, a Redis
    command or an HTTP call that no request or event encloses) is a background loop's poll:
    not recorded. Used as the root sampler of `ParentBased`, which follows the parent's
    sampling flag everywhere else."""

    def should_sample(
        self,
        parent_context: context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if kind is SpanKind.CLIENT:
            return SamplingResult(Decision.DROP)
        return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, trace_state)

    def get_description(self) -> str:
        return "EntrySampler"


class ServiceOfContext(SpanProcessor):
    """Sets `lyceum.service` on each span started in a context that names a service: in the
    embedded mode, where every service shares one process and so one `service.name`."""

    def on_start(self, span: Span, parent_context: context.Context | None = None) -> None:
        service = service_of_context()
        if service is not None:
            span.set_attribute("lyceum.service", service)


def service_of_context() -> str | None:
    """The service the current context names (the embedded mode's servers each run in one,
    shared.logging.service_context)."""
    service = structlog.contextvars.get_contextvars().get("service")
    return service if isinstance(service, str) else None


class TraceContextMiddleware:
    """Pure ASGI: while no tracer provider records spans, each HTTP request and WebSocket
    continues its caller's trace (see the module's notes); otherwise the FastAPI
    instrumentation's server span does, and this passes the request through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.fields = {name.encode() for name in propagate.get_global_textmap().fields}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or recording():
            await self.app(scope, receive, send)
            return
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in self.fields
        }
        token = context.attach(continued_trace(carrier))
        try:
            await self.app(scope, receive, send)
        finally:
            context.detach(token)
