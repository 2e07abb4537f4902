from pydantic import Field

from shared.registry import AUTH, USERS, local_url
from shared.settings import ServiceSettings


class UsersSettings(ServiceSettings):
    service_name: str = USERS.name
    port: int = USERS.port

    # The auth service, asked on the caller's behalf (with the caller's own token) to
    # create an account for an admin and to start a user's email change.
    auth_url: str = local_url(AUTH)
    # The longest a call to auth may take; past it the request is 504 UPSTREAM_TIMEOUT.
    users_auth_timeout_seconds: float = Field(default=10.0, gt=0)
