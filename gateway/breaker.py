"""A circuit breaker per upstream: after enough failures in a row it opens and the gateway
answers 503 at once; after a pause one trial request goes through, and its success closes it."""

import time

from gateway.metrics import BREAKER_OPEN
from shared.logging import get_logger

log = get_logger(__name__)


class CircuitBreaker:
    def __init__(self, upstream: str, failure_threshold: int, reset_seconds: float) -> None:
        self.upstream = upstream
        self._threshold = failure_threshold
        self._reset_seconds = reset_seconds
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False
        BREAKER_OPEN.labels(upstream).set(0)

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    def allow(self) -> bool:
        """May a request go to the upstream now? While open, only one trial at a time."""
        if self._opened_at is None:
            return True
        if self._trial_running or time.monotonic() - self._opened_at < self._reset_seconds:
            return False
        self._trial_running = True
        return True

    def succeeded(self) -> None:
        if self._opened_at is not None:
            log.info("circuit_closed", upstream=self.upstream)
            BREAKER_OPEN.labels(self.upstream).set(0)
        self._failures = 0
        self._opened_at = None
        self._trial_running = False

    def failed(self) -> None:
        self._failures += 1
        self._trial_running = False
        if self._opened_at is not None:
            self._opened_at = time.monotonic()
        elif self._failures >= self._threshold:
            self._opened_at = time.monotonic()
            BREAKER_OPEN.labels(self.upstream).set(1)
            log.warning("circuit_opened", upstream=self.upstream, failures=self._failures)
