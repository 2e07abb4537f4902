"""A logout takes effect on the very next request, whatever each hop has cached: the
gateway's workers and the services keep a token's verified signature and claims for a
minute, and none of them keeps an answer of the revocation store."""

import httpx

from shared.testing import Stack
from tests.e2e.helpers import assert_envelope, bearer, signed_up

# Enough requests, each on a connection of its own, to reach every gateway worker.
WARM_UP_REQUESTS = 8


async def test_a_logged_out_token_is_refused_by_the_next_request_everywhere(
    stack: Stack,
) -> None:
    users = stack.service_url("users")
    courses = stack.service_url("courses")
    async with stack.client() as client:
        _, tokens = await signed_up(client)
        headers = bearer(tokens)
    # Every cache warm: each gateway worker, the users service and the courses service
    # (a public route that verifies a token when one comes) have verified this token.
    for _ in range(WARM_UP_REQUESTS):
        async with stack.client() as client:
            assert (await client.get("/api/v1/users/me", headers=headers)).status_code == 200
            assert (await client.get("/api/v1/courses", headers=headers)).status_code == 200
    async with httpx.AsyncClient(timeout=15) as direct:
        assert (await direct.get(f"{users}/api/v1/users/me", headers=headers)).status_code == 200
        assert (await direct.get(f"{courses}/api/v1/courses", headers=headers)).status_code == 200

    async with stack.client() as client:
        logged_out = await client.post("/api/v1/auth/logout", headers=headers)
        assert logged_out.status_code == 204, logged_out.text
        assert_envelope(await client.get("/api/v1/users/me", headers=headers), 401, "INVALID_TOKEN")
    async with httpx.AsyncClient(timeout=15) as direct:
        assert_envelope(
            await direct.get(f"{users}/api/v1/users/me", headers=headers), 401, "INVALID_TOKEN"
        )
        assert_envelope(
            await direct.get(f"{courses}/api/v1/courses", headers=headers), 401, "INVALID_TOKEN"
        )
    for _ in range(WARM_UP_REQUESTS):
        async with stack.client() as client:
            assert_envelope(
                await client.get("/api/v1/users/me", headers=headers), 401, "INVALID_TOKEN"
            )
            assert_envelope(
                await client.get("/api/v1/courses", headers=headers), 401, "INVALID_TOKEN"
            )
