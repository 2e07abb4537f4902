"""A small OTLP/HTTP trace receiver on this machine: it accepts `POST /v1/traces` as the
OTLP exporters send it (protobuf, plain or gzip) and keeps the spans, decoded with
opentelemetry-proto. `make trace-demo` and the tracing tests read traces from it;
`render_trace` draws one as an indented tree."""

import asyncio
import gzip
import socket
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

PROTOBUF = "application/x-protobuf"


@dataclass(frozen=True)
class ReceivedSpan:
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a span that begins its trace
    name: str
    kind: str  # internal, server, client, producer or consumer
    service: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)
    failed: bool = False

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind)


def _attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def decode(body: bytes) -> list[ReceivedSpan]:
    """The spans of one `ExportTraceServiceRequest`."""
    request = ExportTraceServiceRequest.FromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        service = str(_attributes(resource_spans.resource.attributes).get("service.name", ""))
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        name=span.name,
                        kind=Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_").lower(),
                        service=service,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        attributes=_attributes(span.attributes),
                        failed=span.status.code == Status.STATUS_CODE_ERROR,
                    )
                )
    return spans


class OtlpReceiver:
    """`url` is what OTEL_EXPORTER_OTLP_ENDPOINT takes (the exporter adds `/v1/traces`)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self.arrived = asyncio.Event()
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        self._runner = web.AppRunner(app, access_log=None)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> "OtlpReceiver":
        """Raises OSError when the port is taken."""
        listening = socket.socket()
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listening.bind((self.host, self.port))
        except OSError:
            listening.close()
            raise
        self.port = listening.getsockname()[1]
        await self._runner.setup()
        await web.SockSite(self._runner, listening).start()
        return self

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def _traces(self, request: web.Request) -> web.Response:
        body = await request.read()
        encoding = request.headers.get("content-encoding", "").lower()
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            spans = decode(body)
        except Exception as exc:
            return web.Response(status=400, text=f"not an OTLP trace export: {exc!r}")
        self.requests += 1
        self.spans.extend(spans)
        self.arrived.set()
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(), content_type=PROTOBUF
        )

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        """The spans received so far of one trace, in the order they began."""
        return sorted((s for s in self.spans if s.trace_id == trace_id), key=lambda s: s.start_ns)


def render_trace(spans: list[ReceivedSpan]) -> str:
    """One trace as an indented tree, a span a line (its children below it, in the order
    they began): service, span name, duration, its span id and its parent's."""
    by_id = {span.span_id: span for span in spans}
    children: dict[str, list[ReceivedSpan]] = {}
    for span in spans:
        children.setdefault(span.parent_span_id, []).append(span)
    for siblings in children.values():
        siblings.sort(key=lambda s: s.start_ns)
    roots = sorted((s for s in spans if s.parent_span_id not in by_id), key=lambda s: s.start_ns)
    rows: list[tuple[str, str, str, str, str]] = []

    def walk(span: ReceivedSpan, depth: int) -> None:
        name = "  " * depth + span.name + (" (error)" if span.failed else "")
        parent = span.parent_span_id or "-"
        if span.parent_span_id and span.parent_span_id not in by_id:
            parent += " (caller)"
        rows.append((span.service, name, f"{span.duration_ms:.1f} ms", span.span_id, parent))
        for child in children.get(span.span_id, []):
            walk(child, depth + 1)

    for root in roots:
        walk(root, 0)
    header = ("service", "span", "duration", "span id", "parent")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(5)]
    lines = []
    for row in [header, *rows]:
        service, name, duration, span_id, parent = row
        lines.append(
            f"{service:<{widths[0]}}  {name:<{widths[1]}}  {duration:>{widths[2]}}  "
            f"{span_id:<{widths[3]}}  {parent}"
        )
    return "\n".join(lines)
