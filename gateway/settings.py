from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from shared import registry
from shared.settings import ServiceSettings

# Every default below comes from the registry of services (shared/registry.py).
DEFAULT_UPSTREAMS = registry.gateway_upstreams()
DEFAULT_ROUTES = registry.gateway_routes()
DEFAULT_PUBLIC_ROUTES = registry.public_routes()
# Register, login and refresh: limited per client IP by RATE_LIMIT_AUTH.
DEFAULT_RATE_LIMIT_AUTH_ROUTES = registry.auth_rate_limited_routes()
# Routes only admins may use: limited per admin by RATE_LIMIT_ADMIN.
DEFAULT_RATE_LIMIT_ADMIN_ROUTES = registry.admin_routes()
# WebSocket paths and the service behind each (chat's `/ws`).
DEFAULT_WEBSOCKET_ROUTES = registry.gateway_websocket_routes()
# Services that need longer than UPSTREAM_TIMEOUT_SECONDS to start answering (chat).
DEFAULT_UPSTREAM_TIMEOUTS = registry.gateway_upstream_timeouts()
# Routes that take uploads (documents): limited by MAX_UPLOAD_BYTES, not MAX_BODY_BYTES.
DEFAULT_UPLOAD_ROUTES = registry.gateway_upload_routes()

MiB = 1024 * 1024


class GatewaySettings(ServiceSettings):
    """Upstreams and routes come from the environment as JSON, e.g.
    `UPSTREAMS='{"users": "http://users:8002"}'` or `UPSTREAMS__USERS=http://users:8002`."""

    model_config = SettingsConfigDict(env_nested_delimiter="__", extra="ignore")

    service_name: str = registry.GATEWAY.name
    port: int = registry.GATEWAY.port
    workers: int = 1
    upstreams: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_UPSTREAMS))
    routes: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_ROUTES))
    public_routes: list[str] = Field(default_factory=lambda: list(DEFAULT_PUBLIC_ROUTES))
    upstream_connect_timeout_seconds: float = 2.0
    # How long the upstream may take to start answering once the request (body included)
    # has been sent; sending a big upload is not limited by it.
    upstream_timeout_seconds: float = 30.0
    # Per upstream, overriding upstream_timeout_seconds: `UPSTREAM_TIMEOUTS='{"chat": 120}'`,
    # on top of the registry's (an upstream the variable does not name keeps its own).
    upstream_timeouts: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_UPSTREAM_TIMEOUTS)
    )
    # A streamed response (downloads, SSE) may pause this long between two chunks.
    upstream_stream_idle_seconds: float = 300.0
    upstream_retries: int = 1
    breaker_failure_threshold: int = 5
    breaker_reset_seconds: float = 5.0
    max_body_bytes: int = 10 * MiB
    upload_routes: list[str] = Field(default_factory=lambda: list(DEFAULT_UPLOAD_ROUTES))
    # A 100 MiB file and room for the multipart form around it.
    max_upload_bytes: int = 101 * MiB
    # `WEBSOCKET_ROUTES='{"/ws": "chat"}'`: WebSocket paths and their upstreams.
    websocket_routes: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_WEBSOCKET_ROUTES))

    rate_limit_auth: str = "5/minute"
    rate_limit_default: str = "100/minute"
    rate_limit_admin: str = "50/minute"
    rate_limit_strategy: Literal["moving-window", "sliding-window-counter"] = (
        "sliding-window-counter"
    )
    rate_limit_fail_open: bool = True
    revocation_fail_open: bool = True
    rate_limit_auth_routes: list[str] = Field(
        default_factory=lambda: list(DEFAULT_RATE_LIMIT_AUTH_ROUTES)
    )
    rate_limit_admin_routes: list[str] = Field(
        default_factory=lambda: list(DEFAULT_RATE_LIMIT_ADMIN_ROUTES)
    )
    trusted_proxies: list[str] = Field(default_factory=list)

    cors_origins: list[str] = Field(default_factory=list)
    hsts_seconds: int = 31536000
    security_headers: bool = True
    openapi_cache_seconds: float = 30.0
    # While a service's document cannot be fetched, the merged one is rebuilt this soon.
    openapi_retry_seconds: float = 2.0
    # GET /status asks every service's /health at most this often, whatever the traffic.
    status_cache_seconds: float = Field(default=2.0, ge=0)

    @field_validator("upstream_timeouts")
    @classmethod
    def _keep_registry_timeouts(cls, value: dict[str, float]) -> dict[str, float]:
        return {**DEFAULT_UPSTREAM_TIMEOUTS, **value}
