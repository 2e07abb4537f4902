"""Credentials kept out of the gateway's logs and traces.

A WebSocket or EventSource client in a browser cannot set headers, so its access token may
travel in the URL (`?token=…`, `?access_token=…`) or, for a WebSocket, in
`Sec-WebSocket-Protocol`. Any line the gateway's process writes (its own, uvicorn's,
websockets' and aiohttp's messages, tracebacks) and any attribute of its spans (the server
span's `url.query`) has those values replaced by `REDACTED`, as have `Bearer` credentials.
"""

import logging
import re

from opentelemetry import context, trace
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider

REDACTED = "REDACTED"
# The query parameters a token may come in.
TOKEN_PARAMETERS = ("token", "access_token")

_QUERY_TOKEN = re.compile(
    rf"(?:^|(?<=[?&;]))((?:{'|'.join(TOKEN_PARAMETERS)})=)[^&#\s\"'\\\x1b]*", re.IGNORECASE
)
# `Authorization: Bearer <token>`, and the subprotocol forms `bearer, <token>`, `bearer.<token>`.
_BEARER_TOKEN = re.compile(r"\b(bearer(?:\s+|\s*,\s*|\.))[A-Za-z0-9._~+/=-]+", re.IGNORECASE)

_installed_on: set[int] = set()


def redact(text: str) -> str:
    """`text` with the values of token query parameters and bearer credentials replaced."""
    if "=" in text:
        text = _QUERY_TOKEN.sub(rf"\g<1>{REDACTED}", text)
    return _BEARER_TOKEN.sub(rf"\g<1>{REDACTED}", text)


class RedactingFormatter(logging.Formatter):
    """Wraps a handler's formatter: the finished line, traceback included, is redacted."""

    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__()
        self.formatter = formatter

    def format(self, record: logging.LogRecord) -> str:
        return redact(self.formatter.format(record))


class RedactingSpanProcessor(SpanProcessor):
    """Redacts string attributes as each span starts, before any exporter sees it."""

    def on_start(self, span: Span, parent_context: context.Context | None = None) -> None:
        for name, value in dict(span.attributes or {}).items():
            if isinstance(value, str):
                redacted = redact(value)
                if redacted != value:
                    span.set_attribute(name, redacted)

    def on_end(self, span: ReadableSpan) -> None:
        pass


def redact_logs() -> None:
    """Every handler of the root logger (configure_logging's) writes redacted lines."""
    for handler in logging.getLogger().handlers:
        formatter = handler.formatter or logging.Formatter()
        if not isinstance(formatter, RedactingFormatter):
            handler.setFormatter(RedactingFormatter(formatter))


def redact_spans() -> None:
    """The process's tracer provider (configure_tracing's) redacts every span it records."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider) and id(provider) not in _installed_on:
        provider.add_span_processor(RedactingSpanProcessor())
        _installed_on.add(id(provider))
