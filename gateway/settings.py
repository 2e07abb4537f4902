from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings

DEFAULT_UPSTREAMS = {
    "auth": "http://127.0.0.1:8001",
    "users": "http://127.0.0.1:8002",
}

DEFAULT_ROUTES = {
    "/api/v1/auth": "auth",
    "/api/v1/users": "users",
}

DEFAULT_PUBLIC_ROUTES = [
    "POST /api/v1/auth/register",
    "POST /api/v1/auth/login",
    "POST /api/v1/auth/refresh",
    "GET /api/v1/auth/.well-known/jwks.json",
]


class GatewaySettings(ServiceSettings):
    """Upstreams and routes come from the environment as JSON, e.g.
    `UPSTREAMS='{"users": "http://users:8002"}'` or `UPSTREAMS__USERS=http://users:8002`."""

    model_config = SettingsConfigDict(env_nested_delimiter="__", extra="ignore")

    service_name: str = "gateway"
    port: int = 8000
    workers: int = 1
    upstreams: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_UPSTREAMS))
    routes: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_ROUTES))
    public_routes: list[str] = Field(default_factory=lambda: list(DEFAULT_PUBLIC_ROUTES))
    upstream_connect_timeout_seconds: float = 2.0
    upstream_timeout_seconds: float = 30.0
    max_body_bytes: int = 10 * 1024 * 1024
