"""Register, log in, refresh, log out, and what happens to forged or spent tokens."""

import asyncio
import base64
import hashlib
import hmac
import json
import time

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from shared.testing import Stack, eventually
from tests.e2e.helpers import (
    PASSWORD,
    admin_tokens,
    assert_envelope,
    bearer,
    login,
    mint_token,
    register,
    signed_up,
    unique_email,
)


async def test_profile_is_built_from_user_created(stack: Stack) -> None:
    async with stack.client() as client:
        account, tokens = await signed_up(client)
        profile = (await client.get("/api/v1/users/me", headers=bearer(tokens))).json()
        assert profile["id"] == account["id"]
        assert profile["email"] == account["email"]
        assert profile["name"] == account["name"]
        assert profile["role"] == "student"
        me = (await client.get("/api/v1/auth/me", headers=bearer(tokens))).json()
        assert me["id"] == account["id"]


async def test_register_normalises_email_and_refuses_duplicates(stack: Stack) -> None:
    email = unique_email("Mixed").replace("mixed", "MiXeD")
    async with stack.client() as client:
        created = await register(client, email=email)
        assert created["email"] == email.lower()
        duplicate = await client.post(
            "/api/v1/auth/register",
            json={"email": email.lower(), "password": PASSWORD, "name": "Twin"},
        )
        body = assert_envelope(duplicate, 409, "CONFLICT")
        assert body["error"]["details"]["field"] == "email"


async def test_nobody_registers_as_admin(stack: Stack) -> None:
    async with stack.client() as client:
        response = await client.post(
            "/api/v1/auth/register",
            json={"email": unique_email(), "password": PASSWORD, "name": "Eve", "role": "admin"},
        )
        body = assert_envelope(response, 400, "VALIDATION_ERROR")
        assert body["error"]["details"]["field"] == "role"


async def test_refresh_rotates_and_reuse_revokes_the_family(stack: Stack) -> None:
    async with stack.client() as client:
        account = await register(client)
        first = await login(client, account["email"])
        rotated = await client.post(
            "/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}
        )
        assert rotated.status_code == 200
        second = rotated.json()
        assert second["refresh_token"] != first["refresh_token"]
        assert second["access_token"] != first["access_token"]

        reuse = await client.post(
            "/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}
        )
        assert_envelope(reuse, 401, "INVALID_TOKEN")
        after_reuse = await client.post(
            "/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]}
        )
        assert_envelope(after_reuse, 401, "INVALID_TOKEN")
        # The access token issued with the revoked family is denied as well.
        denied = await client.get("/api/v1/auth/me", headers=bearer(second))
        assert_envelope(denied, 401, "INVALID_TOKEN")


async def test_concurrent_refreshes_with_one_token_let_exactly_one_through(
    stack: Stack,
) -> None:
    """The token is spent once, whatever the interleaving: one refresh wins, the others are
    reuse of a spent token, which revokes the family, the winner's new tokens included."""
    async with stack.client() as client:
        account = await register(client)
        tokens = await login(client, account["email"])
        attempts = await asyncio.gather(
            *(
                client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
                for _ in range(6)
            )
        )
        winners = [response for response in attempts if response.status_code == 200]
        assert len(winners) == 1, [response.text for response in attempts]
        for response in attempts:
            if response is not winners[0]:
                assert_envelope(response, 401, "INVALID_TOKEN")
        won = winners[0].json()
        assert_envelope(
            await client.post("/api/v1/auth/refresh", json={"refresh_token": won["refresh_token"]}),
            401,
            "INVALID_TOKEN",
        )
        assert_envelope(
            await client.get("/api/v1/auth/me", headers=bearer(won)), 401, "INVALID_TOKEN"
        )
        # A new login is a new family, untouched.
        again = await login(client, account["email"])
        assert (await client.get("/api/v1/auth/me", headers=bearer(again))).status_code == 200


async def test_text_with_nul_characters_is_refused(stack: Stack) -> None:
    """PostgreSQL cannot store NUL: it is refused up front, never a 500."""
    async with stack.client() as client:
        for body, field in (
            ({"email": unique_email(), "password": PASSWORD, "name": "Ada\x00"}, "name"),
            ({"email": unique_email(), "password": "correct\x00horse", "name": "Ada"}, "password"),
        ):
            response = await client.post("/api/v1/auth/register", json=body)
            details = assert_envelope(response, 400, "VALIDATION_ERROR")["error"]["details"]
            assert details["field"] == field
        account, tokens = await signed_up(client)
        for path, payload in (
            ("/api/v1/auth/login", {"email": account["email"], "password": "x\x00"}),
            ("/api/v1/auth/refresh", {"refresh_token": "\x00"}),
        ):
            assert_envelope(await client.post(path, json=payload), 400, "VALIDATION_ERROR")
        created = await client.post(
            "/api/v1/auth/tokens", json={"name": "ci\x00"}, headers=bearer(tokens)
        )
        refused = assert_envelope(created, 400, "VALIDATION_ERROR")
        assert refused["error"]["details"]["field"] == "name"


async def test_logout_denies_the_access_token_and_the_refresh_family(stack: Stack) -> None:
    async with stack.client() as client:
        _, tokens = await signed_up(client)
        assert (await client.post("/api/v1/auth/logout", headers=bearer(tokens))).status_code == 204
        assert_envelope(
            await client.get("/api/v1/users/me", headers=bearer(tokens)), 401, "INVALID_TOKEN"
        )
        assert_envelope(
            await client.post(
                "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
            ),
            401,
            "INVALID_TOKEN",
        )


async def test_access_token_verifies_with_a_standard_library_against_the_jwks(
    stack: Stack,
) -> None:
    async with stack.client() as client:
        account = await register(client)
        tokens = await login(client, account["email"])
        jwks = (await client.get("/api/v1/auth/.well-known/jwks.json")).json()
    header = jwt.get_unverified_header(tokens["access_token"])
    assert header["alg"] == "EdDSA"
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    assert "d" not in key  # only public material is published
    claims = jwt.decode(
        tokens["access_token"],
        jwt.PyJWK.from_dict(key).key,
        algorithms=["EdDSA"],
        audience="lyceum-api",
        issuer="lyceum",
    )
    assert claims["sub"] == account["id"]
    assert claims["roles"] == ["student"]
    assert {"iss", "aud", "sub", "exp", "iat", "nbf", "jti"} <= set(claims)
    # `iat` has sub-second precision (see shared.revocation); `nbf` and `exp` are whole.
    assert claims["nbf"] == int(claims["iat"]) <= claims["iat"]
    assert claims["exp"] - claims["nbf"] == 900


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_forged_tokens_are_refused(stack: Stack) -> None:
    async with stack.client() as client:
        account = await register(client)
        tokens = await login(client, account["email"])
        jwks = (await client.get("/api/v1/auth/.well-known/jwks.json")).json()
        real = tokens["access_token"]
        header_b64, payload_b64, signature = real.split(".")
        payload = jwt.decode(real, options={"verify_signature": False})

        tampered = ".".join([header_b64, _b64({**payload, "roles": ["admin"]}), signature])
        unsigned = ".".join([_b64({"alg": "none", "typ": "JWT"}), _b64(payload), ""])
        public_pem = jwt.PyJWK.from_dict(jwks["keys"][0]).key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        hs_header = _b64({"alg": "HS256", "typ": "JWT", "kid": jwks["keys"][0]["kid"]})
        hs_signature = hmac.new(
            public_pem, f"{hs_header}.{payload_b64}".encode(), hashlib.sha256
        ).digest()
        hs_signature_b64 = base64.urlsafe_b64encode(hs_signature).rstrip(b"=").decode()
        hs256 = f"{hs_header}.{payload_b64}.{hs_signature_b64}"
        expired = await mint_token(
            stack, sub=account["id"], exp=payload["iat"] - 120, roles=["student"]
        )
        wrong_audience = await mint_token(stack, sub=account["id"], aud="someone-else")
        not_yet = await mint_token(stack, sub=account["id"], nbf=payload["iat"] + 3600)

        for forged in (tampered, unsigned, hs256, wrong_audience, not_yet, "garbage"):
            for path in ("/api/v1/users/me", "/api/v1/auth/me"):
                response = await client.get(path, headers=bearer(forged))
                assert_envelope(response, 401, "INVALID_TOKEN")
        assert_envelope(
            await client.get("/api/v1/users/me", headers=bearer(expired)), 401, "TOKEN_EXPIRED"
        )


async def test_identity_headers_without_a_token_are_refused(stack: Stack) -> None:
    spoofed = {"X-User-Id": "00000000-0000-0000-0000-000000000001", "X-User-Roles": "admin"}
    async with stack.client() as client:
        assert_envelope(
            await client.get("/api/v1/users/me", headers=spoofed), 401, "AUTHENTICATION_REQUIRED"
        )
        assert_envelope(
            await client.get("/api/v1/users", headers=spoofed), 401, "AUTHENTICATION_REQUIRED"
        )


async def test_spoofed_identity_headers_do_not_change_who_the_caller_is(stack: Stack) -> None:
    async with stack.client() as client:
        _, tokens = await signed_up(client)
        headers = {**bearer(tokens), "X-User-Roles": "admin", "X-User-Id": "someone-else"}
        assert_envelope(
            await client.get("/api/v1/users", headers=headers), 403, "PERMISSION_DENIED"
        )


async def test_services_verify_tokens_themselves(stack: Stack) -> None:
    """Straight to the users service, past the gateway: identity headers buy nothing."""
    async with httpx.AsyncClient(base_url=stack.service_url(2)) as client:
        response = await client.get(
            "/api/v1/users/me", headers={"X-User-Id": "x", "X-User-Roles": "admin"}
        )
        assert_envelope(response, 401, "AUTHENTICATION_REQUIRED")


async def test_a_role_change_denies_the_tokens_issued_before_it(stack: Stack) -> None:
    """An access or API token carries the role it was issued with: once an admin changes
    the role, tokens issued before are refused, and a new login carries the new role."""
    async with stack.client() as client:
        account, tokens = await signed_up(client)
        created = await client.post(
            "/api/v1/auth/tokens", json={"name": "ci"}, headers=bearer(tokens)
        )
        assert created.status_code == 201, created.text
        api_token = created.json()["token"]
        admin = await admin_tokens(client)
        changed = await client.patch(
            f"/api/v1/users/{account['id']}", json={"role": "instructor"}, headers=bearer(admin)
        )
        assert changed.status_code == 200, changed.text

        async def old_tokens_refused() -> bool:
            statuses = [
                (await client.get("/api/v1/users/me", headers=bearer(token))).status_code
                for token in (tokens["access_token"], api_token)
            ]
            return statuses == [401, 401]

        await eventually(old_tokens_refused)
        for token in (tokens["access_token"], api_token):
            assert_envelope(
                await client.get("/api/v1/auth/me", headers=bearer(token)), 401, "INVALID_TOKEN"
            )

        # Right away (the same second, most likely), a new login carries the new role and is
        # not caught by the revocation: no retrying.
        fresh = await login(client, account["email"])
        claims = jwt.decode(fresh["access_token"], options={"verify_signature": False})
        assert claims["roles"] == ["instructor"]
        for path in ("/api/v1/users/me", "/api/v1/auth/me"):
            response = await client.get(path, headers=bearer(fresh))
            assert response.status_code == 200, response.text
        created_after = await client.post(
            "/api/v1/auth/tokens", json={"name": "ci again"}, headers=bearer(fresh)
        )
        assert created_after.status_code == 201, created_after.text
        new_api_token = created_after.json()["token"]
        assert (
            await client.get("/api/v1/users/me", headers=bearer(new_api_token))
        ).status_code == 200
        listed = await client.get(
            "/api/v1/auth/tokens", params={"account_id": account["id"]}, headers=bearer(admin)
        )
        revoked = {token["name"]: bool(token["revoked_at"]) for token in listed.json()["data"]}
        assert revoked == {"ci": True, "ci again": False}


def _websocket_url(stack: Stack) -> str:
    return stack.url.replace("http://", "ws://", 1) + "/ws"


async def _refused_handshake(url: str, headers: dict[str, str]) -> tuple[int, str]:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, additional_headers=headers):
            pass
    response = refused.value.response
    body = json.loads(response.body or b"{}")
    assert body["status"] == "error"
    assert body["request_id"] == response.headers["x-request-id"]
    return response.status_code, str(body["error"]["code"])


async def test_revoked_and_expired_tokens_are_refused_at_the_websocket_handshake(
    stack: Stack,
) -> None:
    async with stack.client() as client:
        account, tokens = await signed_up(client)
        assert (await client.post("/api/v1/auth/logout", headers=bearer(tokens))).status_code == 204
    now = int(time.time())
    expired = await mint_token(
        stack, sub=account["id"], iat=now - 1200, nbf=now - 1200, exp=now - 600
    )
    url = _websocket_url(stack)
    assert await _refused_handshake(url, bearer(tokens)) == (401, "INVALID_TOKEN")
    for parameter in ("access_token", "token"):
        assert await _refused_handshake(f"{url}?{parameter}={tokens['access_token']}", {}) == (
            401,
            "INVALID_TOKEN",
        )
    assert await _refused_handshake(
        url, {"Sec-WebSocket-Protocol": f"bearer, {tokens['access_token']}"}
    ) == (401, "INVALID_TOKEN")
    assert await _refused_handshake(url, bearer(expired)) == (401, "TOKEN_EXPIRED")


async def test_spoofed_identity_headers_buy_nothing_on_a_websocket(stack: Stack) -> None:
    spoofed = {"X-User-Id": "00000000-0000-0000-0000-000000000001", "X-User-Roles": "admin"}
    url = _websocket_url(stack)
    assert await _refused_handshake(url, spoofed) == (401, "AUTHENTICATION_REQUIRED")
    assert await _refused_handshake(url, {**spoofed, **bearer("forged")}) == (
        401,
        "INVALID_TOKEN",
    )
