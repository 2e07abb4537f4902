from pathlib import Path

from pydantic import field_validator

from shared.settings import ServiceSettings

# Like the leading webhook services: at once, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
DEFAULT_RETRY_SCHEDULE = "5,300,1800,7200,18000,36000,36000"
REPOSITORY_SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "docs" / "events" / "schemas"


class WebhooksSettings(ServiceSettings):
    service_name: str = "webhooks"
    port: int = 8006

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
    webhook_concurrency: int = 100
    webhook_endpoint_concurrency: int = 10
    webhook_poll_seconds: float = 1.0
    webhook_event_schemas_dir: Path = REPOSITORY_SCHEMAS_DIR

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _schedule_is_seconds(cls, value: str) -> str:
        retry_delays(value)
        return value

    def retry_delays(self) -> list[float]:
        return retry_delays(self.webhook_retry_schedule)


def retry_delays(schedule: str) -> list[float]:
    delays = [float(part) for part in schedule.split(",") if part.strip()]
    if any(delay < 0 for delay in delays):
        raise ValueError("retry delays must not be negative")
    return delays
