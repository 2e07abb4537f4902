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
        assert replaced.status_code == 200, replaced.text
        assert replaced.json()["name"] == "Ada L."
        assert replaced.json()["bio"] is None  # PUT replaces: what is left out is cleared
        assert replaced.json()["updated_at"] >= patched.json()["updated_at"]
        stored = await client.get("/api/v1/users/me", headers=bearer(tokens))
        assert stored.json() == replaced.json()
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


async def test_profile_input_that_cannot_be_stored_is_refused(stack: Stack) -> None:
    """Null where a value is required, a blank name (refused on register too) and NUL
    characters (PostgreSQL cannot store them): 400, never 500, and nothing changes."""
    async with stack.client() as client:
        admin = await admin_tokens(client)
        account, tokens = await signed_up(client)
        own = [
            ("PATCH", {"name": None}, "name"),
            ("PATCH", {"name": "   "}, "name"),
            ("PATCH", {"name": "Ada\x00"}, "name"),
            ("PATCH", {"bio": "nul\x00here"}, "bio"),
            ("PUT", {"name": " \t "}, "name"),
            ("PUT", {"name": None}, "name"),
            ("PUT", {"name": "Ada", "bio": "\x00"}, "bio"),
        ]
        for method, body, field in own:
            response = await client.request(
                method, "/api/v1/users/me", json=body, headers=bearer(tokens)
            )
            details = assert_envelope(response, 400, "VALIDATION_ERROR")["error"]["details"]
            assert details["field"] == field, (method, body, details)
        by_admin = [
            ("PATCH", {"role": None}, "role"),
            ("PATCH", {"is_active": None}, "is_active"),
            ("PATCH", {"name": None}, "name"),
            ("PATCH", {"name": "  "}, "name"),
            ("PUT", {"name": "   ", "role": "student"}, "name"),
            ("PUT", {"name": "Ada", "role": None}, "role"),
            ("PUT", {"name": "Ada", "role": "student", "is_active": None}, "is_active"),
        ]
        for method, body, field in by_admin:
            response = await client.request(
                method, f"/api/v1/users/{account['id']}", json=body, headers=bearer(admin)
            )
            details = assert_envelope(response, 400, "VALIDATION_ERROR")["error"]["details"]
            assert details["field"] == field, (method, body, details)
        assert_envelope(
            await client.get("/api/v1/users", params={"search": "a\x00"}, headers=bearer(admin)),
            400,
            "VALIDATION_ERROR",
        )
        profile = (await client.get("/api/v1/users/me", headers=bearer(tokens))).json()
        assert (profile["name"], profile["role"], profile["is_active"]) == ("Ada", "student", True)
        # A name is stored stripped, as on register.
        renamed = await client.patch(
            "/api/v1/users/me", json={"name": "  Ada B.  "}, headers=bearer(tokens)
        )
        assert renamed.status_code == 200, renamed.text
        assert renamed.json()["name"] == "Ada B."


async def test_nul_characters_are_refused_by_courses_and_webhooks(stack: Stack) -> None:
    """Every service's request text is `shared.text.Text` (PostgreSQL cannot store NUL)."""
    async with stack.client() as client:
        admin = await admin_tokens(client)
        _, instructor = await signed_up(client, role="instructor")
        course = await client.post(
            "/api/v1/courses",
            json={"title": "Maths\x00", "level": "beginner"},
            headers=bearer(instructor),
        )
        body = assert_envelope(course, 400, "VALIDATION_ERROR")
        assert body["error"]["details"]["field"] == "title"
        endpoint = await client.post(
            "/api/v1/webhooks/endpoints",
            json={"url": "https://example.com/hook", "description": "a\x00b"},
            headers=bearer(admin),
        )
        body = assert_envelope(endpoint, 400, "VALIDATION_ERROR")
        assert body["error"]["details"]["field"] == "description"


async def test_deactivating_a_user_disables_the_account_until_reactivated(stack: Stack) -> None:
    """`is_active: false` disables the account in auth as a deletion does (no login, no
    refresh, tokens denied); `is_active: true` lets it log in again."""
    async with stack.client() as client:
        admin = await admin_tokens(client)
        account, tokens = await signed_up(client)
        created = await client.post(
            "/api/v1/auth/tokens", json={"name": "ci"}, headers=bearer(tokens)
        )
        assert created.status_code == 201, created.text
        api_token = created.json()["token"]
        deactivated = await client.patch(
            f"/api/v1/users/{account['id']}", json={"is_active": False}, headers=bearer(admin)
        )
        assert deactivated.status_code == 200, deactivated.text
        assert deactivated.json()["is_active"] is False

        async def tokens_denied() -> bool:
            statuses = [
                (await client.get("/api/v1/auth/me", headers=bearer(token))).status_code
                for token in (tokens["access_token"], api_token)
            ]
            return statuses == [401, 401]

        await eventually(tokens_denied)
        assert_envelope(
            await client.get("/api/v1/users/me", headers=bearer(tokens)), 401, "INVALID_TOKEN"
        )
        login = await client.post(
            "/api/v1/auth/login", json={"email": account["email"], "password": PASSWORD}
        )
        assert_envelope(login, 403, "PERMISSION_DENIED")
        refresh = await client.post(
            "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
        assert_envelope(refresh, 401, "INVALID_TOKEN")

        reactivated = await client.patch(
            f"/api/v1/users/{account['id']}", json={"is_active": True}, headers=bearer(admin)
        )
        assert reactivated.status_code == 200, reactivated.text

        async def logs_in_again() -> Any:
            response = await client.post(
                "/api/v1/auth/login", json={"email": account["email"], "password": PASSWORD}
            )
            return response.json() if response.status_code == 200 else None

        fresh = await eventually(logs_in_again)
        assert (await client.get("/api/v1/users/me", headers=bearer(fresh))).status_code == 200
        # What was denied stays denied: re-enabling brings back no old token.
        assert_envelope(
            await client.get("/api/v1/auth/me", headers=bearer(tokens)), 401, "INVALID_TOKEN"
        )
        assert_envelope(
            await client.post(
                "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
            ),
            401,
            "INVALID_TOKEN",
        )
