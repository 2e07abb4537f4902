import math
from pathlib import Path

from pydantic import field_validator, model_validator

from shared.registry import WEBHOOKS
from shared.settings import ServiceSettings

# Like the leading webhook services: at once, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h
# (8 attempts over about 27 hours).
DEFAULT_RETRY_SCHEDULE = "5,300,1800,7200,18000,36000,36000"
REPOSITORY_SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "docs" / "events" / "schemas"


class WebhooksSettings(ServiceSettings):
    service_name: str = WEBHOOKS.name
    port: int = WEBHOOKS.port

    # Seconds to wait before each retry, comma-separated; one attempt more than delays.
    webhook_retry_schedule: str = DEFAULT_RETRY_SCHEDULE
    # CIDRs of internal networks that endpoints may target anyway (local development).
    webhook_allowed_networks: str = ""
    webhook_attempt_timeout_seconds: float = 15.0
    webhook_response_body_limit: int = 4096
    # An endpoint whose every attempt failed for this long is disabled.
    webhook_disable_after_seconds: float = 5 * 24 * 3600
    # How long a rotated-out secret keeps signing next to the new one.
    webhook_secret_overlap_seconds: float = 24 * 3600
    # Attempts in flight: per process; per endpoint; per endpoint that is failing (every
    # attempt failed since its last success), and half the process's for all failing
    # endpoints together, so that endpoints that time out cannot take every slot.
    webhook_concurrency: int = 100
    webhook_endpoint_concurrency: int = 5
    webhook_failing_endpoint_concurrency: int = 2
    # Name lookups run on threads of their own: this many, at most `per_host` for one host
    # name at a time, each given up after the timeout.
    webhook_dns_threads: int = 16
    webhook_dns_per_host: int = 2
    webhook_dns_timeout_seconds: float = 5.0
    webhook_poll_seconds: float = 1.0
    webhook_event_schemas_dir: Path = REPOSITORY_SCHEMAS_DIR

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _schedule_is_seconds(cls, value: str) -> str:
        retry_delays(value)
        return value

    @model_validator(mode="after")
    def _positive_limits(self) -> "WebhooksSettings":
        for name in (
            "webhook_concurrency",
            "webhook_endpoint_concurrency",
            "webhook_failing_endpoint_concurrency",
            "webhook_dns_threads",
            "webhook_dns_per_host",
            "webhook_response_body_limit",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        return self

    def retry_delays(self) -> list[float]:
        return retry_delays(self.webhook_retry_schedule)

    def failing_concurrency(self) -> int:
        """Attempts in flight to failing endpoints, all together."""
        return max(1, self.webhook_concurrency // 2)


def retry_delays(schedule: str) -> list[float]:
    """`"5, 300,1800"` -> `[5.0, 300.0, 1800.0]`: seconds before each retry."""
    try:
        delays = [float(part) for part in schedule.split(",") if part.strip()]
    except ValueError as exc:
        raise ValueError(f"retry delays are seconds, comma-separated: {exc}") from exc
    if any(not math.isfinite(delay) or delay < 0 for delay in delays):
        raise ValueError("retry delays must be finite and not negative")
    return delays
