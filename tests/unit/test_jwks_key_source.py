"""The JWKS cache: refetched on an unknown kid, at most once per interval."""

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from shared.security import JwksKeySource


def jwks_app(keys: dict[str, Ed25519PrivateKey], hits: list[int]) -> Starlette:
    async def jwks(request: Request) -> JSONResponse:
        hits.append(1)
        published = []
        for kid, key in keys.items():
            jwk = OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
            jwk.update(kid=kid, alg="EdDSA", use="sig")
            published.append(jwk)
        return JSONResponse({"keys": published})

    return Starlette(routes=[Route("/jwks", jwks)])


async def test_unknown_kid_triggers_one_refetch_per_interval() -> None:
    keys = {"old": Ed25519PrivateKey.generate()}
    hits: list[int] = []
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=jwks_app(keys, hits)), base_url="http://auth"
    )
    source = JwksKeySource("http://auth/jwks", min_refresh_seconds=60, client=client)
    assert await source.get_key("old") is not None
    assert len(hits) == 1
    for _ in range(50):
        assert await source.get_key("forged-kid") is None
    assert len(hits) == 1, "a flood of unknown kids must not hammer the auth service"
    await client.aclose()


async def test_a_rotated_key_is_found_by_refetching() -> None:
    keys = {"old": Ed25519PrivateKey.generate()}
    hits: list[int] = []
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=jwks_app(keys, hits)), base_url="http://auth"
    )
    source = JwksKeySource("http://auth/jwks", min_refresh_seconds=0, client=client)
    await source.get_key("old")
    keys["new"] = Ed25519PrivateKey.generate()
    new_key = await source.get_key("new")
    assert new_key is not None
    token = jwt.encode({"x": 1}, keys["new"], algorithm="EdDSA")
    assert jwt.decode(token, new_key, algorithms=["EdDSA"]) == {"x": 1}
    assert len(hits) == 2
    await client.aclose()


@pytest.mark.parametrize("body", [b"not json", b'{"keys": "nope"}'])
async def test_a_broken_jwks_answer_finds_no_key(body: bytes) -> None:
    async def broken(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body)

    client = httpx.AsyncClient(transport=httpx.MockTransport(broken), base_url="http://auth")
    source = JwksKeySource("http://auth/jwks", client=client)
    assert await source.get_key("any") is None
    await client.aclose()
