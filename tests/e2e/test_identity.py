"""Register, log in, refresh, log out, and what happens to forged or spent tokens."""

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
    assert claims["exp"] - claims["iat"] == 900


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

        async def new_login_has_the_new_role() -> bool:
            fresh = await login(client, account["email"])
            claims = jwt.decode(fresh["access_token"], options={"verify_signature": False})
            me = await client.get("/api/v1/users/me", headers=bearer(fresh))
            return me.status_code == 200 and claims["roles"] == ["instructor"]

        # Tokens issued within the second of the change are refused too (iat is in seconds).
        await eventually(new_login_has_the_new_role)
        listed = await client.get(
            "/api/v1/auth/tokens", params={"account_id": account["id"]}, headers=bearer(admin)
        )
        assert listed.json()["data"][0]["revoked_at"] is not None


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
    assert await _refused_handshake(f"{url}?access_token={tokens['access_token']}", {}) == (
        401,
        "INVALID_TOKEN",
    )
    assert await _refused_handshake(url, bearer(expired)) == (401, "TOKEN_EXPIRED")


async def test_spoofed_identity_headers_buy_nothing_on_a_websocket(stack: Stack) -> None:
    spoofed = {"X-User-Id": "00000000-0000-0000-0000-000000000001", "X-User-Roles": "admin"}
    url = _websocket_url(stack)
    assert await _refused_handshake(url, spoofed) == (401, "AUTHENTICATION_REQUIRED")
    assert await _refused_handshake(url, {**spoofed, **bearer("forged")}) == (
        401,
        "INVALID_TOKEN",
    )
