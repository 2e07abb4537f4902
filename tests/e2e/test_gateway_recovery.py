"""The gateway riding out a service of the full stack that dies and comes back."""

from shared.testing import Stack, eventually
from tests.e2e.helpers import assert_envelope, bearer, signed_up


async def test_killing_the_users_service_gives_503_and_the_gateway_recovers_by_itself(
    full_stack: Stack,
) -> None:
    """The launcher restarts a killed service; the gateway is left alone throughout."""
    async with full_stack.client() as client:
        _, tokens = await signed_up(client)
        gateway_pid = full_stack.service_pid("gateway")
        old_pid = full_stack.kill_service("users")
        down = await client.get("/api/v1/users/me", headers=bearer(tokens))
        body = assert_envelope(down, 503, "SERVICE_UNAVAILABLE")
        assert "users" in body["error"]["message"]
        await full_stack.wait_service_restarted("users", old_pid, full_stack.service_url("users"))

        async def recovered() -> bool:
            response = await client.get("/api/v1/users/me", headers=bearer(tokens))
            return response.status_code == 200

        await eventually(recovered, within_seconds=30, interval=0.25)
        assert full_stack.service_pid("gateway") == gateway_pid, "the gateway was not restarted"
