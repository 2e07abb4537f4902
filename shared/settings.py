"""Settings common to every service, read from the environment."""

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.logging import LogFormat


class ServiceSettings(BaseSettings):
    """What every service needs to know about its surroundings.

    Unset `REDIS_URL` / `AMQP_URL` select the embedded mode: in-memory stores and
    the in-process event bus.
    """

    model_config = SettingsConfigDict(env_file=None, extra="ignore", populate_by_name=True)

    service_name: str = "service"
    host: str = "127.0.0.1"
    port: int = 8000
    # Worker processes of `python -m services.<name>` (WORKERS); their metrics are summed.
    workers: int = Field(default=1, ge=1)
    # Several processes of one service on one port (SO_REUSEPORT): REUSE_PORT=true.
    reuse_port: bool = False
    # On SIGTERM (shared/shutdown.py): /ready says 503 at once and requests are still
    # served for SHUTDOWN_DELAY_SECONDS, then the process stops within
    # SHUTDOWN_GRACE_SECONDS. Kubernetes' terminationGracePeriodSeconds must be at least
    # their sum (plus a margin): past it the pod is killed.
    shutdown_delay_seconds: float = Field(default=0.0, ge=0)
    shutdown_grace_seconds: float = Field(default=20.0, gt=0)
    database_url: str = ""
    # Where local data lives (`make run`'s SQLite files, documents' files): VAR_DIR.
    var_dir: Path = Path("var")
    redis_url: str | None = None
    amqp_url: str | None = None
    events_exchange: str = "lyceum.events"
    queue_prefix: str = "lyceum"
    log_level: str = "INFO"
    # auto: readable console lines at a terminal, JSON when the output goes elsewhere.
    log_format: LogFormat = "auto"
    # The largest request body the service reads (declared or streamed); beyond it 413.
    # A service that takes uploads raises it in its own settings class. The gateway's
    # GatewaySettings sets its own, larger default for what it lets through.
    max_body_bytes: int = 1024 * 1024

    jwks_url: str = "http://127.0.0.1:8001/api/v1/auth/.well-known/jwks.json"
    jwt_issuer: str = "lyceum"
    jwt_audience: str = "lyceum-api"
    jwt_algorithms: list[str] = Field(default_factory=lambda: ["EdDSA"])
    jwt_leeway_seconds: int = 10
    # The JWKS is fetched again once the cached copy is older than `jwks_cache_seconds`,
    # and on an unknown `kid`; never more often than every `jwks_min_refresh_seconds`.
    jwks_cache_seconds: float = 300.0
    jwks_min_refresh_seconds: float = 10.0

    outbox_poll_seconds: float = 2.0
    # An outbox row the bus refuses (or whose payload does not parse) is tried again after
    # OUTBOX_RETRY_SECONDS, then twice as long each time up to OUTBOX_RETRY_MAX_SECONDS;
    # after OUTBOX_MAX_ATTEMPTS it is marked failed and set aside. A broker outage counts
    # no attempt: it delays events, it never fails them.
    outbox_max_attempts: int = Field(default=5, ge=1)
    outbox_retry_seconds: float = Field(default=1.0, ge=0)
    outbox_retry_max_seconds: float = Field(default=300.0, ge=0)
    event_delivery_limit: int = 5

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.var_dir}/{self.service_name}.db"
