from pydantic import AliasChoices, Field

from shared.registry import AUTH
from shared.settings import ServiceSettings


class AuthSettings(ServiceSettings):
    service_name: str = AUTH.name
    port: int = AUTH.port
    access_token_ttl_seconds: int = 900
    refresh_token_ttl_seconds: int = 30 * 24 * 3600
    admin_email: str | None = Field(
        None, validation_alias=AliasChoices("admin_email", "LYCEUM_ADMIN_EMAIL")
    )
    admin_password: str | None = Field(
        None, validation_alias=AliasChoices("admin_password", "LYCEUM_ADMIN_PASSWORD")
    )
