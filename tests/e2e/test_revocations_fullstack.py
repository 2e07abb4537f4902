"""Revocations survive Redis losing its data. On the full stack, the stack's revocation keys
are deleted (what a flush, a restart without persistence or a failover to an empty replica
looks like to the stack; the machine's Redis is shared, so only this stack's prefix goes):
a logged-out access token, a revoked API token and the token of a deleted user are refused
throughout, by the gateway and by the services themselves, 503 while auth re-publishes
the revocations from its database and 401 once it has; a good token works again then."""

import httpx
from redis.asyncio import Redis

from shared.testing import Stack, eventually
from tests.conftest import REDIS
from tests.e2e.helpers import admin_tokens, assert_envelope, bearer, login, signed_up

ME = "/api/v1/users/me"


async def lose_revocations(stack: Stack) -> int:
    """Deletes the stack's revocation keys, the marker among them; returns how many."""
    redis = Redis.from_url(f"redis://{REDIS[0]}:{REDIS[1]}/0")
    try:
        keys = [key async for key in redis.scan_iter(f"{stack.queue_prefix}:revoked:*")]
        if keys:
            await redis.delete(*keys)
        return len(keys)
    finally:
        await redis.aclose()


async def revocations_published(stack: Stack) -> bool:
    redis = Redis.from_url(f"redis://{REDIS[0]}:{REDIS[1]}/0")
    try:
        return bool(await redis.exists(f"{stack.queue_prefix}:revoked:ready"))
    finally:
        await redis.aclose()


async def test_revoked_tokens_stay_refused_after_redis_loses_its_data(full_stack: Stack) -> None:
    async with (
        full_stack.client() as client,
        httpx.AsyncClient(base_url=full_stack.service_url("users"), timeout=15.0) as users,
    ):
        account, session = await signed_up(client)
        created = await client.post(
            "/api/v1/auth/tokens", json={"name": "deploys"}, headers=bearer(session)
        )
        assert created.status_code == 201, created.text
        api_token = created.json()
        revoked = await client.delete(
            f"/api/v1/auth/tokens/{api_token['id']}", headers=bearer(session)
        )
        assert revoked.status_code == 204, revoked.text
        logged_out = await login(client, account["email"])
        out = await client.post("/api/v1/auth/logout", headers=bearer(logged_out))
        assert out.status_code == 204, out.text

        # A user an admin deleted: auth denies every token issued until then.
        deleted_account, deleted_session = await signed_up(client)
        admin = await admin_tokens(client)
        gone = await client.delete(f"/api/v1/users/{deleted_account['id']}", headers=bearer(admin))
        assert gone.status_code == 204, gone.text

        async def deleted_user_refused() -> bool:
            response = await client.get(ME, headers=bearer(deleted_session))
            return response.status_code == 401

        await eventually(deleted_user_refused, within_seconds=30, interval=0.2)

        refused = {
            "logged out": logged_out["access_token"],
            "revoked API token": api_token["token"],
            "deleted user": deleted_session["access_token"],
        }
        for token in refused.values():
            assert_envelope(await client.get(ME, headers=bearer(token)), 401, "INVALID_TOKEN")
        assert (await client.get(ME, headers=bearer(session))).status_code == 200

        assert await lose_revocations(full_stack) > 1

        async def refused_everywhere_and_republished() -> bool:
            """Never 200 meanwhile; done once every answer is 401 again."""
            statuses = set()
            for name, token in refused.items():
                for via in (client, users):
                    response = await via.get(ME, headers=bearer(token))
                    assert response.status_code in (401, 503), (name, response.text)
                    code = "INVALID_TOKEN" if response.status_code == 401 else "SERVICE_UNAVAILABLE"
                    assert response.json()["error"]["code"] == code, (name, response.text)
                    statuses.add(response.status_code)
            return statuses == {401}

        await eventually(refused_everywhere_and_republished, within_seconds=30, interval=0.1)
        assert await revocations_published(full_stack)

        # Good tokens work again: the one from before and a fresh login.
        assert (await client.get(ME, headers=bearer(session))).status_code == 200
        fresh = await login(client, account["email"])
        assert (await client.get(ME, headers=bearer(fresh))).status_code == 200
        assert (await users.get(ME, headers=bearer(fresh))).status_code == 200
