"""The shared verifier, used by the gateway and every service, against forged tokens."""

import time
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key

from shared.errors import InvalidToken, ServiceUnavailable, TokenExpired
from shared.revocation import MemoryRevocationStore, revocation_store
from shared.security import CallableKeySource, TokenVerifier
from shared.testing import free_port_block, token_claims

SIGNING_KEY = Ed25519PrivateKey.generate()
KID = "key-1"


def claims(**overrides: Any) -> dict[str, Any]:
    return token_claims(**{"sid": str(uuid.uuid4()), **overrides})


def sign(
    payload: dict[str, Any], key: Any = SIGNING_KEY, kid: str = KID, alg: str = "EdDSA"
) -> str:
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid})


class CountingKeys:
    def __init__(self) -> None:
        self.lookups: list[str] = []

    async def get_key(self, kid: str) -> Any:
        self.lookups.append(kid)
        return SIGNING_KEY.public_key() if kid == KID else None


@pytest.fixture
def revocations() -> MemoryRevocationStore:
    return MemoryRevocationStore()


@pytest.fixture
def verifier(revocations: MemoryRevocationStore) -> TokenVerifier:
    return TokenVerifier(
        CountingKeys(),
        revocations,
        issuer="lyceum",
        audience="lyceum-api",
        algorithms=["EdDSA"],
        leeway_seconds=5,
    )


async def test_a_good_token_gives_the_identity(verifier: TokenVerifier) -> None:
    payload = claims(roles=["instructor"])
    identity = await verifier.verify(sign(payload))
    assert str(identity.user_id) == payload["sub"]
    assert identity.roles == ("instructor",)
    assert identity.session_id == payload["sid"]


@pytest.mark.parametrize(
    "overrides",
    [
        {"iss": "someone-else"},
        {"aud": "another-api"},
        {"nbf": int(time.time()) + 3600},
        {"sub": "not-a-uuid"},
        {"roles": "admin"},
    ],
)
async def test_bad_claims_are_refused(verifier: TokenVerifier, overrides: dict[str, Any]) -> None:
    with pytest.raises(InvalidToken):
        await verifier.verify(sign(claims(**overrides)))


@pytest.mark.parametrize("missing", ["exp", "iat", "nbf", "jti", "aud", "iss", "sub"])
async def test_every_required_claim_must_be_there(verifier: TokenVerifier, missing: str) -> None:
    payload = claims()
    del payload[missing]
    with pytest.raises(InvalidToken):
        await verifier.verify(sign(payload))


async def test_expiry_honours_the_leeway(verifier: TokenVerifier) -> None:
    now = int(time.time())
    await verifier.verify(sign(claims(exp=now - 2)))
    with pytest.raises(TokenExpired):
        await verifier.verify(sign(claims(exp=now - 30)))


async def test_algorithms_outside_the_allow_list_are_refused(verifier: TokenVerifier) -> None:
    rsa_key = generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(InvalidToken, match="algorithm"):
        await verifier.verify(sign(claims(), key=rsa_key, alg="RS256"))
    with pytest.raises(InvalidToken, match="algorithm"):
        await verifier.verify(sign(claims(), key="shared-secret-0123456789abcdef0123", alg="HS256"))
    unsigned = jwt.encode(claims(), key=None, algorithm="none", headers={"kid": KID})  # type: ignore[arg-type]
    with pytest.raises(InvalidToken, match="algorithm"):
        await verifier.verify(unsigned)


async def test_a_token_signed_by_another_key_with_a_known_kid_is_refused(
    verifier: TokenVerifier,
) -> None:
    with pytest.raises(InvalidToken):
        await verifier.verify(sign(claims(), key=Ed25519PrivateKey.generate()))


async def test_revocation_by_jti_session_and_user(
    verifier: TokenVerifier, revocations: MemoryRevocationStore
) -> None:
    by_jti, by_session, by_user = claims(), claims(), claims()
    await revocations.revoke_token(by_jti["jti"], by_jti["exp"])
    await revocations.revoke_session(by_session["sid"], 600)
    await revocations.revoke_user(by_user["sub"], 600)
    for payload in (by_jti, by_session, by_user):
        with pytest.raises(InvalidToken, match="revoked"):
            await verifier.verify(sign(payload))
    await verifier.verify(sign(claims()))


async def test_unknown_key_ids_are_looked_up_and_refused() -> None:
    keys = CountingKeys()
    verifier = TokenVerifier(
        CallableKeySource(keys.get_key),
        MemoryRevocationStore(),
        issuer="lyceum",
        audience="lyceum-api",
        algorithms=["EdDSA"],
    )
    with pytest.raises(InvalidToken, match="Unknown signing key"):
        await verifier.verify(sign(claims(), kid="made-up"))
    assert keys.lookups == ["made-up"]


async def test_an_unreachable_revocation_store_fails_open_or_answers_503() -> None:
    port = free_port_block(1)  # nothing listens there
    errors: list[int] = []
    for fail_open in (True, False):
        store = revocation_store(
            f"redis://127.0.0.1:{port}/0", fail_open=fail_open, on_error=lambda: errors.append(1)
        )
        verifier = TokenVerifier(
            CountingKeys(),
            store,
            issuer="lyceum",
            audience="lyceum-api",
            algorithms=["EdDSA"],
        )
        try:
            if fail_open:
                await verifier.verify(sign(claims()))
            else:
                with pytest.raises(ServiceUnavailable) as refused:
                    await verifier.verify(sign(claims()))
                assert refused.value.status_code == 503
                assert refused.value.code == "SERVICE_UNAVAILABLE"
        finally:
            await store.close()
    assert len(errors) == 2, "every failed lookup is reported"


async def test_an_api_token_is_refused_while_revocations_cannot_be_checked_even_fail_open() -> None:
    port = free_port_block(1)  # nothing listens there
    store = revocation_store(f"redis://127.0.0.1:{port}/0", fail_open=True)
    verifier = TokenVerifier(
        CountingKeys(), store, issuer="lyceum", audience="lyceum-api", algorithms=["EdDSA"]
    )
    try:
        await verifier.verify(sign(claims()))  # a 15-minute access token passes
        with pytest.raises(ServiceUnavailable):
            await verifier.verify(sign(claims(token_use="api", exp=int(time.time()) + 86400)))
    finally:
        await store.close()
