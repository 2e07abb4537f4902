import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import AliasChoices, BeforeValidator, Field

from shared.emails import Email
from shared.mail import MailSettings
from shared.registry import AUTH
from shared.settings import ServiceSettings

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_SHORT_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)


def parse_duration(value: Any) -> Any:
    """Seconds (`1800`), a number with a unit (`30m`, `2h`, `7d`, `45s`); anything else goes
    on to pydantic's own `timedelta` formats (ISO 8601 `PT30M`, `HH:MM:SS`)."""
    if isinstance(value, str) and (match := _SHORT_DURATION.match(value)):
        number, unit = match.groups()
        return timedelta(seconds=float(number) * _UNITS[unit.lower() or "s"])
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class AuthSettings(ServiceSettings, MailSettings):
    service_name: str = AUTH.name
    port: int = AUTH.port
    access_token_ttl_seconds: int = 900
    refresh_token_ttl_seconds: int = 30 * 24 * 3600
    # How often auth checks that the shared revocation store still holds every revocation
    # (its marker key), re-publishing them from the database when it does not.
    revocation_check_seconds: float = Field(default=5.0, gt=0)
    admin_email: Email | None = Field(
        None, validation_alias=AliasChoices("admin_email", "LYCEUM_ADMIN_EMAIL")
    )
    admin_password: str | None = Field(
        None, validation_alias=AliasChoices("admin_password", "LYCEUM_ADMIN_PASSWORD")
    )

    # Logins (and refreshes) of accounts whose address is not verified are refused (403
    # EMAIL_NOT_VERIFIED).
    require_verified_email: bool = False
    # How long the links sent by mail stay valid.
    email_verification_ttl: Duration = timedelta(days=1)
    password_reset_ttl: Duration = timedelta(minutes=30)
    account_setup_ttl: Duration = timedelta(days=7)
    email_change_ttl: Duration = timedelta(days=1)

    # After LOGIN_MAX_FAILURES failed attempts on one address (within
    # LOGIN_FAILURE_WINDOW_SECONDS) its logins are refused for LOGIN_LOCKOUT_SECONDS, twice
    # as long at each further lockout, up to LOGIN_LOCKOUT_MAX_SECONDS.
    login_max_failures: int = Field(default=5, ge=1)
    login_failure_window_seconds: int = Field(default=900, ge=1)
    login_lockout_seconds: int = Field(default=60, ge=1)
    login_lockout_max_seconds: int = Field(default=3600, ge=1)
