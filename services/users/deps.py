"""What users builds beyond the shared collaborators: the client of the auth service."""

from typing import Annotated

from fastapi import Depends

from services.users.accounts import AuthClient
from services.users.settings import UsersSettings
from shared.deps import collaborators_of
from shared.errors import AuthenticationRequired
from shared.security import BearerCredentials, KeySource
from shared.service import Collaborators


class UsersCollaborators(Collaborators[UsersSettings]):
    def __init__(self, settings: UsersSettings, *, key_source: KeySource | None = None) -> None:
        super().__init__(settings, key_source=key_source)
        self.auth = AuthClient(
            settings.auth_url, timeout_seconds=settings.users_auth_timeout_seconds
        )

    async def stop(self) -> None:
        try:
            await self.auth.close()
        finally:
            await super().stop()


UsersDep = Annotated[UsersCollaborators, Depends(collaborators_of(UsersCollaborators))]


async def access_token(credentials: BearerCredentials) -> str:
    """The bearer token the request came with (`CurrentIdentity` verifies it), to ask auth
    on the caller's behalf."""
    if credentials is None:
        raise AuthenticationRequired()
    return credentials.credentials


AccessToken = Annotated[str, Depends(access_token)]
