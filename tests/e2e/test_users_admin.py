"""Admin user management, and what auth learns from `user.updated` / `user.deleted`."""

from typing import Any

import jwt

from shared.testing import Stack, eventually
from tests.e2e.helpers import PASSWORD, admin_tokens, assert_envelope, bearer, signed_up


async def test_students_cannot_manage_users(stack: Stack) -> None:
    async with stack.client() as client:
        account, tokens = await signed_up(client)
        for method, path in (
            ("GET", "/api/v1/users"),
            ("GET", f"/api/v1/users/{account['id']}"),
            ("PATCH", f"/api/v1/users/{account['id']}"),
            ("DELETE", f"/api/v1/users/{account['id']}"),
        ):
            response = await client.request(method, path, headers=bearer(tokens), json={})
            assert_envelope(response, 403, "PERMISSION_DENIED")


async def test_own_profile_put_and_patch(stack: Stack) -> None:
    async with stack.client() as client:
        _, tokens = await signed_up(client)
        patched = await client.patch(
            "/api/v1/users/me", headers=bearer(tokens), json={"bio": "Likes maths"}
        )
        assert patched.status_code == 200
        assert patched.json()["bio"] == "Likes maths"
        assert patched.json()["name"] == "Ada"
        replaced = await client.put(
            "/api/v1/users/me", headers=bearer(tokens), json={"name": "Ada L."}
        )
        assert replaced.json() | {} == replaced.json()
        assert replaced.json()["name"] == "Ada L."
        assert replaced.json()["bio"] is None
        escalation = await client.patch(
            "/api/v1/users/me", headers=bearer(tokens), json={"role": "admin"}
        )
        assert_envelope(escalation, 400, "VALIDATION_ERROR")


async def test_admin_lists_filters_searches_and_sorts(stack: Stack) -> None:
    async with stack.client() as client:
        admin = await admin_tokens(client)
        account, _ = await signed_up(client, role="instructor")
        listing = await client.get(
            "/api/v1/users",
            headers=bearer(admin),
            params={"role": "instructor", "search": account["email"][:14], "per_page": 5},
        )
        assert listing.status_code == 200, listing.text
        body = listing.json()
        assert [user["id"] for user in body["data"]] == [account["id"]]
        assert body["pagination"] == {"page": 1, "per_page": 5, "total": 1, "pages": 1}

        by_name = await client.get(
            "/api/v1/users", headers=bearer(admin), params={"sort": "email", "order": "asc"}
        )
        emails = [user["email"] for user in by_name.json()["data"]]
        assert emails == sorted(emails)
        assert_envelope(
            await client.get("/api/v1/users", headers=bearer(admin), params={"per_page": 1000}),
            400,
            "VALIDATION_ERROR",
        )
        assert_envelope(
            await client.get("/api/v1/users", headers=bearer(admin), params={"sort": "password"}),
            400,
            "VALIDATION_ERROR",
        )
        assert_envelope(
            await client.get("/api/v1/users/not-a-uuid", headers=bearer(admin)),
            400,
            "VALIDATION_ERROR",
        )


async def test_role_change_reaches_auth(stack: Stack) -> None:
    async with stack.client() as client:
        admin = await admin_tokens(client)
        account, _ = await signed_up(client)
        changed = await client.patch(
            f"/api/v1/users/{account['id']}", headers=bearer(admin), json={"role": "instructor"}
        )
        assert changed.status_code == 200
        assert changed.json()["role"] == "instructor"

        async def new_tokens_carry_the_role() -> Any:
            response = await client.post(
                "/api/v1/auth/login", json={"email": account["email"], "password": PASSWORD}
            )
            claims = jwt.decode(
                response.json()["access_token"], options={"verify_signature": False}
            )
            return claims["roles"] == ["instructor"]

        await eventually(new_tokens_carry_the_role)


async def test_deleting_a_user_disables_the_account_and_its_tokens(stack: Stack) -> None:
    async with stack.client() as client:
        admin = await admin_tokens(client)
        account, tokens = await signed_up(client)
        deleted = await client.delete(f"/api/v1/users/{account['id']}", headers=bearer(admin))
        assert deleted.status_code == 204
        assert_envelope(
            await client.get(f"/api/v1/users/{account['id']}", headers=bearer(admin)),
            404,
            "RESOURCE_NOT_FOUND",
        )

        async def token_denied() -> bool:
            response = await client.get("/api/v1/auth/me", headers=bearer(tokens))
            return response.status_code == 401

        await eventually(token_denied)
        login = await client.post(
            "/api/v1/auth/login", json={"email": account["email"], "password": PASSWORD}
        )
        assert_envelope(login, 403, "PERMISSION_DENIED")
        refresh = await client.post(
            "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
        assert_envelope(refresh, 401, "INVALID_TOKEN")
