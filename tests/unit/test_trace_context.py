"""Without a tracer provider nothing is recorded, yet every request continues its caller's
trace: the same trace, a span id of its own, the caller's sampling flag and trace state."""

from opentelemetry import propagate, trace

from shared.telemetry import continued_trace

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


def outgoing(carrier: dict[str, str]) -> dict[str, str]:
    sent: dict[str, str] = {}
    propagate.inject(sent, context=continued_trace(carrier))
    return sent


def test_a_request_continues_the_caller_s_trace_with_a_span_of_its_own() -> None:
    for flags in ("01", "00"):
        sent = outgoing(
            {"traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-{flags}", "tracestate": "vendor=1"}
        )
        version, trace_id, span_id, sent_flags = sent["traceparent"].split("-")
        assert (version, trace_id, sent_flags) == ("00", TRACE_ID, flags)
        assert span_id != CALLER_SPAN
        assert sent["tracestate"] == "vendor=1"
    first, second = outgoing({}), outgoing({})
    assert first["traceparent"].split("-")[1] != second["traceparent"].split("-")[1]
    assert int(first["traceparent"].split("-")[2], 16) != 0


def test_nothing_is_recorded() -> None:
    span = trace.get_current_span(continued_trace({}))
    assert not span.is_recording()
