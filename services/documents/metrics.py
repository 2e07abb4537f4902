"""Prometheus metrics of the documents service, in the services' registry (docs/metrics.md)."""

from prometheus_client import Counter, Histogram

from shared.metrics import REGISTRY

PROCESSED = Counter(
    "document_processing_total",
    "Documents whose text extraction ended, by outcome: ready or failed",
    ["outcome"],
    registry=REGISTRY,
)
PROCESSING_DURATION = Histogram(
    "document_processing_duration_seconds",
    "Time to process one document (copy it out of the store, extract its text, save its "
    "chunks), by outcome: ready or failed",
    ["outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
    registry=REGISTRY,
)
