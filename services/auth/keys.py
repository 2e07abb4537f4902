"""The signing key ring: Ed25519 keys in the auth database, published as a JWKS.

Rotation adds a key and retires the previous one; a retired key stays in the JWKS
until every token it signed has expired, so rotation never logs anybody out.
"""

import secrets
import time
from datetime import timedelta
from typing import Any, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from jwt.algorithms import OKPAlgorithm
from sqlalchemy import or_, select, update

from services.auth.models import SigningKey
from shared.db import Database, utcnow

ALGORITHM = "EdDSA"
_CACHE_SECONDS = 30.0


class SigningKeys(Protocol):
    """What signs tokens: the key ring, or a fixed key in a test."""

    async def signing_key(self) -> tuple[str, Ed25519PrivateKey]: ...


class KeyRing:
    def __init__(self, database: Database, verify_window_seconds: int) -> None:
        self._database = database
        self._verify_window = timedelta(seconds=verify_window_seconds)
        self._signing: tuple[str, Ed25519PrivateKey] | None = None
        self._public: dict[str, Ed25519PublicKey] = {}
        self._loaded_at = float("-inf")

    async def ensure_signing_key(self) -> None:
        async with self._database.sessions() as session:
            current = await session.scalar(
                select(SigningKey.kid).where(SigningKey.retired_at.is_(None)).limit(1)
            )
        if current is None:
            await self.rotate()

    async def rotate(self) -> str:
        private_key = Ed25519PrivateKey.generate()
        pem = private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        kid = secrets.token_urlsafe(12)
        async with self._database.unit_of_work() as session:
            await session.execute(
                update(SigningKey)
                .where(SigningKey.retired_at.is_(None))
                .values(retired_at=utcnow())
            )
            session.add(SigningKey(kid=kid, algorithm=ALGORITHM, private_key_pem=pem))
        self._loaded_at = float("-inf")
        return kid

    async def signing_key(self) -> tuple[str, Ed25519PrivateKey]:
        await self._load_if_stale()
        if self._signing is None:
            await self.ensure_signing_key()
            await self._load_if_stale(force=True)
        assert self._signing is not None
        return self._signing

    async def public_key(self, kid: str) -> Ed25519PublicKey | None:
        await self._load_if_stale()
        if kid not in self._public:
            await self._load_if_stale(force=True, min_age=1.0)
        return self._public.get(kid)

    async def jwks(self) -> dict[str, Any]:
        await self._load_if_stale()
        keys = []
        for kid, public_key in self._public.items():
            jwk = OKPAlgorithm.to_jwk(public_key, as_dict=True)
            jwk.update(kid=kid, alg=ALGORITHM, use="sig")
            keys.append(jwk)
        return {"keys": keys}

    async def _load_if_stale(self, *, force: bool = False, min_age: float = 0.0) -> None:
        age = time.monotonic() - self._loaded_at
        if (not force and age < _CACHE_SECONDS) or age < min_age:
            return
        cutoff = utcnow() - self._verify_window
        async with self._database.sessions() as session:
            rows = (
                await session.scalars(
                    select(SigningKey)
                    .where(or_(SigningKey.retired_at.is_(None), SigningKey.retired_at > cutoff))
                    .order_by(SigningKey.created_at.desc())
                )
            ).all()
        public: dict[str, Ed25519PublicKey] = {}
        signing: tuple[str, Ed25519PrivateKey] | None = None
        for row in rows:
            private_key = serialization.load_pem_private_key(row.private_key_pem.encode(), None)
            assert isinstance(private_key, Ed25519PrivateKey)
            public[row.kid] = private_key.public_key()
            if row.retired_at is None and signing is None:
                signing = (row.kid, private_key)
        self._public, self._signing = public, signing
        self._loaded_at = time.monotonic()
