"""W3C trace context through every hop; spans only where something will export them.

Spans are recorded when a tracer provider is configured in the process: by the environment
(`opentelemetry-instrument`, or FastAPI's `FASTAPI_OTEL_AUTO_CONFIGURE=true` with
`OTEL_EXPORTER_OTLP_ENDPOINT`) or in code. FastAPI then records a server span per request
(and, in the services, spans of its operations), named after the service.

Without one, recording spans would only cost time, so none is recorded; every request still
continues its caller's trace. `TraceContextMiddleware` reads the incoming `traceparent`
(with the process's propagators), gives the request a span id of its own in that trace (a
new trace when none came), and makes it current: what the request calls (the gateway's
upstream request) and the events it publishes (the outbox) carry the trace onward, with the
caller's sampling flag and trace state.
"""

import os

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from starlette.types import ASGIApp, Receive, Scope, Send

_ids = RandomIdGenerator()


def configure_tracing(service_name: str) -> None:
    """Names the service in the spans of a tracer provider the environment makes later
    (call before the app starts). The first service of a process names it."""
    os.environ.setdefault("OTEL_SERVICE_NAME", service_name)


def recording() -> bool:
    """Whether a tracer provider has been configured, so that spans are recorded."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def continued_trace(carrier: dict[str, str]) -> context.Context:
    """A context whose current span continues the trace `carrier` names (or a new trace),
    with a span id of its own and nothing recorded."""
    incoming = propagate.extract(carrier) if carrier else context.Context()
    parent = trace.get_current_span(incoming).get_span_context()
    if parent.is_valid:
        trace_id, flags, state = parent.trace_id, parent.trace_flags, parent.trace_state
    else:
        trace_id, flags, state = _ids.generate_trace_id(), TraceFlags(TraceFlags.DEFAULT), None
    span_context = SpanContext(
        trace_id, _ids.generate_span_id(), is_remote=False, trace_flags=flags, trace_state=state
    )
    return trace.set_span_in_context(NonRecordingSpan(span_context), incoming)


class TraceContextMiddleware:
    """Pure ASGI: while no tracer provider records spans, each HTTP request and WebSocket
    continues its caller's trace (see the module's notes); otherwise FastAPI's own server
    span does, and this passes the request through."""

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
