"""Auth's collaborators beyond the shared ones: the signing key ring, the token issuer, and
the publisher that keeps the shared revocation store a complete copy of auth's revocations.

Auth verifies tokens against its own key ring rather than its JWKS over HTTP; everything
is built once, here, and started with the service."""

from typing import Annotated

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import Depends
from sqlalchemy.exc import IntegrityError

from services.auth import api_tokens, mails, service
from services.auth.keys import KeyRing
from services.auth.lockout import login_lockout
from services.auth.revocations import RevocationPublisher
from services.auth.settings import AuthSettings
from services.auth.tokens import TokenIssuer
from shared.deps import CurrentIdentity, collaborators_of
from shared.errors import PermissionDenied
from shared.logging import get_logger
from shared.mail import MailRelay, transport_for
from shared.security import CallableKeySource, Identity
from shared.service import Collaborators

log = get_logger(__name__)


class AuthCollaborators(Collaborators[AuthSettings]):
    def __init__(self, settings: AuthSettings) -> None:
        super().__init__(settings, key_source=CallableKeySource(self._public_key))
        self.key_ring = KeyRing(self.database, api_tokens.verify_window_seconds(settings))
        self.token_issuer = TokenIssuer(settings, self.key_ring, self.revocations)
        self.lockout = login_lockout(settings)
        self.mail_relay = MailRelay(
            self.database,
            mails.queue,
            mails.MailRenderer(settings),
            settings,
            transport_for(settings, settings.var_dir),
        )
        self.revocation_publisher = RevocationPublisher(
            self.database,
            self.revocations,
            settings,
            check_seconds=settings.revocation_check_seconds,
        )

    async def _public_key(self, kid: str) -> Ed25519PublicKey | None:
        return await self.key_ring.public_key(kid)

    async def start(self) -> None:
        await super().start()
        await self.key_ring.ensure_signing_key()
        self.mail_relay.start()
        try:
            async with self.database.unit_of_work() as session:
                await service.create_first_admin(session, self.settings)
        except IntegrityError:
            # Another replica starting at the same time created it.
            log.info("first_admin_created_elsewhere")
        await self.revocation_publisher.start()

    async def stop(self) -> None:
        await self.mail_relay.stop(grace_seconds=self.shutdown.remaining())
        await self.lockout.close()
        await self.revocation_publisher.stop()
        await super().stop()


AuthDep = Annotated[AuthCollaborators, Depends(collaborators_of(AuthCollaborators))]


async def login_identity(identity: CurrentIdentity) -> Identity:
    """Managing API tokens takes a login's access token, not an API token."""
    if identity.claims.get("token_use") == api_tokens.TOKEN_USE:
        raise PermissionDenied("API tokens cannot manage API tokens")
    return identity


LoginIdentity = Annotated[Identity, Depends(login_identity)]
