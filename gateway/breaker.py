"""A circuit breaker per upstream: after enough failures in a row it opens and the gateway
answers 503 at once; after a pause one trial request goes through, and its success closes it.

`allow()` hands out a permit. A request that ends without a verdict on the upstream (its
body was over the limit, its client went away, anything raised before the upstream
answered) gives the permit back with `release()`, so that a trial can never stay taken."""

import time

from gateway.metrics import BREAKER_OPEN
from shared.logging import get_logger

log = get_logger(__name__)


class Permit:
    """Leave to send one request; `trial` when it is the one request of a half-open breaker."""

    __slots__ = ("trial",)

    def __init__(self, trial: bool) -> None:
        self.trial = trial


_CLOSED = Permit(trial=False)


class CircuitBreaker:
    def __init__(self, upstream: str, failure_threshold: int, reset_seconds: float) -> None:
        self.upstream = upstream
        self._threshold = failure_threshold
        self._reset_seconds = reset_seconds
        self._failures = 0
        self._opened_at: float | None = None
        self._trial: Permit | None = None
        BREAKER_OPEN.labels(upstream).set(0)

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    @property
    def trial_running(self) -> bool:
        return self._trial is not None

    def allow(self) -> Permit | None:
        """A permit to call the upstream now, or None. While open, one trial at a time."""
        if self._opened_at is None:
            return _CLOSED
        if self._trial is not None or time.monotonic() - self._opened_at < self._reset_seconds:
            return None
        self._trial = Permit(trial=True)
        return self._trial

    def release(self, permit: Permit) -> None:
        """The request ended with no verdict on the upstream (or one already given): a trial
        it still holds is freed, so that the next request may try."""
        if permit.trial and self._trial is permit:
            self._trial = None

    def succeeded(self) -> None:
        if self._opened_at is not None:
            log.info("circuit_closed", upstream=self.upstream)
            BREAKER_OPEN.labels(self.upstream).set(0)
        self._failures = 0
        self._opened_at = None
        self._trial = None

    def failed(self) -> None:
        self._failures += 1
        self._trial = None
        if self._opened_at is not None:
            self._opened_at = time.monotonic()
        elif self._failures >= self._threshold:
            self._opened_at = time.monotonic()
            BREAKER_OPEN.labels(self.upstream).set(1)
            log.warning("circuit_opened", upstream=self.upstream, failures=self._failures)
