"""Access-token verification, shared by the gateway and every service."""

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol

import httpx
import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.errors import AuthenticationRequired, InvalidToken, PermissionDenied, TokenExpired
from shared.logging import get_logger
from shared.revocation import RevocationStore

log = get_logger(__name__)

REQUIRED_CLAIMS = ["iss", "aud", "sub", "exp", "iat", "nbf", "jti"]


@dataclass(frozen=True)
class Identity:
    user_id: uuid.UUID
    roles: tuple[str, ...]
    jti: str
    expires_at: int
    session_id: str | None = None
    claims: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    def has_role(self, *roles: str) -> bool:
        return any(role in self.roles for role in roles)

    @property
    def issued_at(self) -> float:
        """`iat`, fractional: see shared.revocation."""
        return float(self.claims["iat"])

    @property
    def long_lived(self) -> bool:
        """An API token (valid up to a year), which never passes unchecked."""
        return self.claims.get("token_use") == "api"


class KeySource(Protocol):
    async def get_key(self, kid: str) -> Any | None: ...


class JwksKeySource:
    """Public keys from a JWKS URL, cached.

    The set is fetched again once it is older than `max_age_seconds` (so that keys removed
    from the JWKS stop verifying), and when a token names an unknown `kid`. Fetches, failed
    ones included, happen at most every `min_refresh_seconds`, so that a flood of made-up
    `kid`s cannot hammer the auth service, even while it is down. A failed fetch keeps the
    keys already known; a request that finds a refresh under way uses them meanwhile."""

    def __init__(
        self,
        url: str,
        *,
        min_refresh_seconds: float = 10.0,
        max_age_seconds: float = 300.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._url = url
        self._min_refresh = min_refresh_seconds
        self._max_age = max_age_seconds
        self._client = client
        self._keys: dict[str, Any] = {}
        self._fetched_at = float("-inf")  # last successful fetch
        self._attempted_at = float("-inf")  # last fetch, successful or not
        self._lock = asyncio.Lock()

    def _fresh(self) -> bool:
        return time.monotonic() - self._fetched_at < self._max_age

    async def get_key(self, kid: str) -> Any | None:
        key = self._keys.get(kid)
        if key is not None and (self._fresh() or self._lock.locked()):
            return key
        async with self._lock:
            key = self._keys.get(kid)
            if key is not None and self._fresh():
                return key
            if time.monotonic() - self._attempted_at >= self._min_refresh:
                await self._refresh()
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        self._attempted_at = time.monotonic()
        try:
            if self._client is None:
                async with httpx.AsyncClient(timeout=5.0) as client:
                    response = await client.get(self._url)
            else:
                response = await self._client.get(self._url, timeout=5.0)
            response.raise_for_status()
            jwk_set = jwt.PyJWKSet.from_dict(response.json())
        except (httpx.HTTPError, jwt.PyJWKSetError, ValueError) as exc:
            log.warning("jwks_fetch_failed", url=self._url, error=str(exc))
            return
        self._keys = {jwk.key_id: jwk.key for jwk in jwk_set.keys if jwk.key_id}
        self._fetched_at = time.monotonic()


class CallableKeySource:
    """Keys looked up in-process (the auth service verifies against its own key ring)."""

    def __init__(self, lookup: Callable[[str], Awaitable[Any | None]]) -> None:
        self._lookup = lookup

    async def get_key(self, kid: str) -> Any | None:
        return await self._lookup(kid)


class TokenVerifier:
    def __init__(
        self,
        keys: KeySource,
        revocations: RevocationStore,
        *,
        issuer: str,
        audience: str,
        algorithms: list[str],
        leeway_seconds: int = 10,
        cache_size: int = 10_000,
        cache_seconds: int = 60,
    ) -> None:
        self._keys = keys
        self._revocations = revocations
        self._issuer = issuer
        self._audience = audience
        self._algorithms = algorithms
        self._leeway = leeway_seconds
        # Signature and claims of a token already seen are not checked again for a minute
        # (never past its expiry); the revocation check still runs on every request.
        self._verified: dict[str, tuple[Identity, float]] = {}
        self._cache_size = cache_size
        self._cache_seconds = cache_seconds

    async def verify(self, token: str) -> Identity:
        """The token's identity: signature, claims, and that it is not revoked."""
        identity = await self.verify_claims(token)
        await self.check_revocation(identity)
        return identity

    async def verify_claims(self, token: str) -> Identity:
        """Signature and claims only: the caller must then check revocation (the gateway
        does it in the round trip of its rate limit)."""
        cached = self._verified.get(token)
        if cached is not None and cached[1] > time.time():
            return cached[0]
        identity = await self._verify_signature_and_claims(token)
        if len(self._verified) >= self._cache_size:
            self._verified.clear()
        self._verified[token] = (
            identity,
            min(identity.expires_at, time.time() + self._cache_seconds),
        )
        return identity

    async def check_revocation(self, identity: Identity) -> None:
        if await self._revocations.is_revoked(
            identity.jti,
            str(identity.user_id),
            identity.issued_at,
            identity.session_id,
            long_lived=identity.long_lived,
        ):
            raise InvalidToken("Token has been revoked")

    @property
    def revocations(self) -> RevocationStore:
        return self._revocations

    async def _verify_signature_and_claims(self, token: str) -> Identity:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken("Malformed token") from exc
        if header.get("alg") not in self._algorithms:
            raise InvalidToken("Token algorithm not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise InvalidToken("Token has no key id")
        key = await self._keys.get_key(kid)
        if key is None:
            raise InvalidToken("Unknown signing key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenExpired() from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken() from exc
        return identity_from_claims(claims)


def identity_from_claims(claims: dict[str, Any]) -> Identity:
    try:
        user_id = uuid.UUID(str(claims["sub"]))
    except ValueError as exc:
        raise InvalidToken("Invalid subject") from exc
    roles = claims.get("roles") or []
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise InvalidToken("Invalid roles claim")
    return Identity(
        user_id=user_id,
        roles=tuple(roles),
        jti=str(claims["jti"]),
        expires_at=int(claims["exp"]),
        session_id=claims.get("sid"),
        claims=claims,
    )


bearer_scheme = HTTPBearer(auto_error=False, description="Access token from /api/v1/auth/login")


BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]


async def current_identity(request: Request, credentials: BearerCredentials) -> Identity:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise AuthenticationRequired()
    verifier: TokenVerifier = request.app.state.collaborators.token_verifier
    return await verifier.verify(credentials.credentials)


async def optional_identity(request: Request, credentials: BearerCredentials) -> Identity | None:
    """For public routes: no Authorization header is anonymous; a header is verified."""
    if "authorization" not in request.headers:
        return None
    return await current_identity(request, credentials)


def require_roles(*roles: str) -> Callable[..., Awaitable[Identity]]:
    async def dependency(identity: Annotated[Identity, Depends(current_identity)]) -> Identity:
        if not identity.has_role(*roles):
            raise PermissionDenied()
        return identity

    return dependency


require_admin = require_roles("admin")
