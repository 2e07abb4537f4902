"""The JWKS cache: refetched when older than its max age and on an unknown kid, at most
once per interval, even while the auth service cannot be reached."""

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


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr("shared.security.time.monotonic", fake)
    return fake


async def test_the_keys_are_fetched_again_once_older_than_the_max_age(clock: FakeClock) -> None:
    keys = {"old": Ed25519PrivateKey.generate()}
    hits: list[int] = []
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=jwks_app(keys, hits)), base_url="http://auth"
    )
    source = JwksKeySource(
        "http://auth/jwks", min_refresh_seconds=10, max_age_seconds=300, client=client
    )
    assert await source.get_key("old") is not None
    clock.now += 299
    assert await source.get_key("old") is not None
    assert len(hits) == 1, "a fresh copy is used as it is"
    # The key is withdrawn from the JWKS (retired past its window): once the copy is stale
    # it is fetched again, and the withdrawn key stops verifying.
    keys["new"] = Ed25519PrivateKey.generate()
    del keys["old"]
    clock.now += 2
    assert await source.get_key("old") is None
    assert len(hits) == 2
    assert await source.get_key("new") is not None
    assert len(hits) == 2
    await client.aclose()


async def test_a_stale_copy_is_kept_while_auth_cannot_be_reached(clock: FakeClock) -> None:
    keys = {"current": Ed25519PrivateKey.generate()}
    hits: list[int] = []
    app = jwks_app(keys, hits)
    auth_up = True

    async def flaky(request: httpx.Request) -> httpx.Response:
        if not auth_up:
            raise httpx.ConnectError("refused")
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://auth"
        ) as inner:
            return await inner.get("/jwks")

    client = httpx.AsyncClient(transport=httpx.MockTransport(flaky), base_url="http://auth")
    source = JwksKeySource(
        "http://auth/jwks", min_refresh_seconds=10, max_age_seconds=300, client=client
    )
    assert await source.get_key("current") is not None
    auth_up = False
    clock.now += 301
    assert await source.get_key("current") is not None, "known keys outlive a failed fetch"
    await client.aclose()


async def test_a_failed_first_fetch_still_throttles_unknown_kids(clock: FakeClock) -> None:
    attempts: list[int] = []

    async def down(request: httpx.Request) -> httpx.Response:
        attempts.append(1)
        raise httpx.ConnectError("refused")

    client = httpx.AsyncClient(transport=httpx.MockTransport(down), base_url="http://auth")
    source = JwksKeySource("http://auth/jwks", min_refresh_seconds=10, client=client)
    for number in range(50):
        assert await source.get_key(f"made-up-{number}") is None
    assert len(attempts) == 1, "a flood of kids while auth is down costs one fetch"
    clock.now += 10
    assert await source.get_key("made-up-again") is None
    assert len(attempts) == 2, "one more attempt once the interval has passed"
    await client.aclose()
