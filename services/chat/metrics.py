"""Prometheus metrics of the chat service, in the services' registry (docs/metrics.md)."""

from prometheus_client import Counter, Gauge

from shared.metrics import REGISTRY

# The kinds of tokens counted, as the providers' usage reports name them.
PROMPT, COMPLETION = "prompt", "completion"

TOKENS = Counter(
    "chat_tokens_total",
    "Tokens of the replies saved, by model and kind: prompt (sent to the model) or "
    "completion (produced by it), as charged to the users' quotas",
    ["model", "kind"],
    registry=REGISTRY,
)
REPLIES = Counter(
    "chat_replies_total",
    "Replies that ended, by model and outcome: completed, stopped (by the user or a time "
    "limit) or failed",
    ["model", "outcome"],
    registry=REGISTRY,
)
STREAMS_IN_FLIGHT = Gauge(
    "chat_streams_in_flight",
    "Replies being generated (streamed from the model) now",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
