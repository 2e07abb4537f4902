"""Where things run, from the environment, with defaults for this machine."""

from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.logging import LogFormat
from shared.registry import AUTH, DOCUMENTS, GATEWAY, JWKS_PATH
from shared.settings import ServiceSettings

_SERVICE_DEFAULTS = ServiceSettings.model_fields


class LaunchOptions(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    gateway_port: int = GATEWAY.port
    host: str = "127.0.0.1"
    var_dir: str = "var"
    postgres_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432"
    database_prefix: str = "lyceum"
    redis_url: str = "redis://127.0.0.1:6379/0"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    events_exchange: str = "lyceum.events"
    queue_prefix: str = "lyceum"
    # Must be the services' EVENT_DELIVERY_LIMIT: a queue declared again with another
    # x-delivery-limit is refused by the broker (PRECONDITION_FAILED).
    event_delivery_limit: int = 5
    gateway_workers: int = 2
    log_level: str = "INFO"
    log_format: LogFormat = "auto"
    restart_seconds: float = 1.0
    # The services' own (SHUTDOWN_DELAY_SECONDS, SHUTDOWN_GRACE_SECONDS): how long the
    # launcher waits for them to stop before it kills them.
    shutdown_delay_seconds: float = _SERVICE_DEFAULTS["shutdown_delay_seconds"].default
    shutdown_grace_seconds: float = _SERVICE_DEFAULTS["shutdown_grace_seconds"].default
    # The base of the links in mails; by default the gateway of this launch.
    public_url: str | None = None

    def port(self, offset: int) -> int:
        return self.gateway_port + offset

    def url(self, offset: int) -> str:
        return f"http://{self.host}:{self.port(offset)}"

    def upstreams(self, names_and_offsets: list[tuple[str, int]]) -> dict[str, str]:
        return {name: self.url(offset) for name, offset in names_and_offsets}

    def public_link_base(self) -> str:
        return self.public_url or self.url(0)

    def jwks_url(self) -> str:
        return f"{self.url(AUTH.port_offset)}{JWKS_PATH}"

    def auth_url(self) -> str:
        """Where users finds the auth service of the same stack."""
        return self.url(AUTH.port_offset)

    def documents_url(self) -> str:
        """Where chat finds the documents service of the same stack."""
        return self.url(DOCUMENTS.port_offset)
