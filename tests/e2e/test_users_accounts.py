"""Accounts through users, end to end: an admin creates a user (auth makes the account, users
the profile, at once), a user asks for a new email (auth is asked, with the current password,
and the profile shows it pending), and what users does when auth says the change happened."""

from email.message import EmailMessage
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel

from shared.events.cloudevents import CONTENT_TYPE, CloudEvent
from shared.testing import Stack, eventually
from tests.e2e.bus_helpers import events_naming, other_team_queue
from tests.e2e.helpers import (
    PASSWORD,
    admin_tokens,
    assert_envelope,
    bearer,
    login,
    signed_up,
    unique_email,
)
from tests.mail_server import MailServer, text_of, token_in


async def mail_for(mailbox: MailServer, address: str, api_path: str) -> EmailMessage:
    """The mail to `address` whose link is used with `api_path`, once it has arrived."""

    async def arrived() -> EmailMessage | None:
        for message in mailbox.messages_to(address):
            if api_path in text_of(message):
                return message
        return None

    found: EmailMessage = await eventually(arrived, within_seconds=20)
    return found


async def test_an_admin_creates_a_user_who_then_logs_in(stack: Stack) -> None:
    async with stack.client() as client:
        admin = await admin_tokens(client)
        email = unique_email("made").replace("@example.com", "@school.test")
        response = await client.post(
            "/api/v1/users",
            json={
                "email": email.upper(),
                "name": "Grace",
                "role": "instructor",
                "password": PASSWORD,
            },
            headers=bearer(admin),
        )
        assert response.status_code == 201, response.text
        profile = response.json()
        assert response.headers["location"] == f"/api/v1/users/{profile['id']}"
        assert (profile["email"], profile["name"], profile["role"]) == (
            email,
            "Grace",
            "instructor",
        )
        assert (profile["email_verified"], profile["pending_email"]) == (False, None)
        # The profile exists at once, before any event.
        stored = await client.get(f"/api/v1/users/{profile['id']}", headers=bearer(admin))
        assert stored.status_code == 200
        assert stored.json()["id"] == profile["id"]

        tokens = await login(client, email)
        me = await client.get("/api/v1/users/me", headers=bearer(tokens))
        assert me.status_code == 200, me.text
        assert me.json()["id"] == profile["id"]

        # auth's user.created, consumed by now or later, makes no second profile.
        async def created_consumed() -> bool:
            found = await client.get(
                "/api/v1/users", params={"search": email}, headers=bearer(admin)
            )
            return bool(found.json()["pagination"]["total"] == 1)

        await eventually(created_consumed)

        twin = await client.post(
            "/api/v1/users",
            json={"email": email, "name": "Twin", "role": "student"},
            headers=bearer(admin),
        )
        assert_envelope(twin, 409, "CONFLICT")
        _, student = await signed_up(client)
        by_student = await client.post(
            "/api/v1/users",
            json={"email": unique_email(), "name": "Eve", "role": "admin"},
            headers=bearer(student),
        )
        assert_envelope(by_student, 403, "PERMISSION_DENIED")


async def test_an_admin_creates_a_user_without_a_password_who_sets_one_from_the_mail(
    stack: Stack, mailbox: MailServer
) -> None:
    async with stack.client() as client:
        admin = await admin_tokens(client)
        email = unique_email("nopassword")
        response = await client.post(
            "/api/v1/users", json={"email": email, "name": "Hedy"}, headers=bearer(admin)
        )
        assert response.status_code == 201, response.text
        assert (response.json()["email"], response.json()["role"]) == (email, "student")
        refused = await client.post(
            "/api/v1/auth/login", json={"email": email, "password": PASSWORD}
        )
        assert refused.status_code == 401, refused.text

        mail = await mail_for(mailbox, email, "/password/reset")
        chosen = await client.post(
            "/api/v1/auth/password/reset",
            json={"token": token_in(mail), "new_password": PASSWORD},
        )
        assert chosen.status_code == 204, chosen.text
        tokens = await login(client, email)
        me = await client.get("/api/v1/users/me", headers=bearer(tokens))
        assert me.status_code == 200, me.text
        assert me.json()["id"] == response.json()["id"]


async def test_a_new_email_is_asked_of_auth_and_shown_pending(stack: Stack) -> None:
    async with stack.client() as client:
        account, tokens = await signed_up(client)
        other, _ = await signed_up(client)
        headers = bearer(tokens)
        new_email = unique_email("moved")

        missing = await client.patch("/api/v1/users/me", json={"email": new_email}, headers=headers)
        body = assert_envelope(missing, 400, "VALIDATION_ERROR")
        assert body["error"]["details"]["field"] == "current_password"
        wrong = await client.patch(
            "/api/v1/users/me",
            json={"email": new_email, "current_password": "not the password", "bio": "x"},
            headers=headers,
        )
        assert_envelope(wrong, 400, "INVALID_CURRENT_PASSWORD")
        taken = await client.patch(
            "/api/v1/users/me",
            json={"email": other["email"], "current_password": PASSWORD},
            headers=headers,
        )
        assert_envelope(taken, 409, "CONFLICT")
        unchanged = (await client.get("/api/v1/users/me", headers=headers)).json()
        assert (unchanged["bio"], unchanged["pending_email"]) == (None, None)

        accepted = await client.put(
            "/api/v1/users/me",
            json={"email": new_email, "current_password": PASSWORD},
            headers=headers,
        )
        assert accepted.status_code == 200, accepted.text
        profile = accepted.json()
        assert (profile["email"], profile["pending_email"]) == (account["email"], new_email)
        assert profile["name"] == "Ada"
        assert (await client.get("/api/v1/users/me", headers=headers)).json() == profile
        # Until confirmed, the account's address is the old one.
        assert (await login(client, account["email"]))["access_token"]


async def test_a_confirmed_new_email_becomes_the_profiles(
    stack: Stack, mailbox: MailServer
) -> None:
    async with stack.client() as client:
        account, tokens = await signed_up(client)
        headers = bearer(tokens)
        new_email = unique_email("confirmed")
        asked = await client.patch(
            "/api/v1/users/me",
            json={"email": new_email, "current_password": PASSWORD},
            headers=headers,
        )
        assert asked.status_code == 200, asked.text
        assert asked.json()["pending_email"] == new_email

        mail = await mail_for(mailbox, new_email, "/email/confirm")
        confirmed = await client.post("/api/v1/auth/email/confirm", json={"token": token_in(mail)})
        assert confirmed.status_code == 204, confirmed.text

        async def moved() -> Any:
            profile = (await client.get("/api/v1/users/me", headers=headers)).json()
            return profile if profile["email"] == new_email else None

        profile = await eventually(moved)
        assert (profile["pending_email"], profile["email_verified"]) == (None, True)
        assert (await login(client, new_email))["access_token"]
        assert account["email"] != new_email


async def test_a_verified_address_shows_on_the_profile(stack: Stack, mailbox: MailServer) -> None:
    async with stack.client() as client:
        account, tokens = await signed_up(client)
        headers = bearer(tokens)
        assert (await client.get("/api/v1/users/me", headers=headers)).json()[
            "email_verified"
        ] is False
        mail = await mail_for(mailbox, account["email"], "/verify-email")
        verified = await client.post("/api/v1/auth/verify-email", json={"token": token_in(mail)})
        assert verified.status_code == 204, verified.text

        async def shown() -> bool:
            response = await client.get("/api/v1/users/me", headers=headers)
            return bool(response.json()["email_verified"])

        await eventually(shown)


async def publish_as_auth(
    channel: AbstractChannel, stack: Stack, event_type: str, data: dict[str, Any]
) -> None:
    event = CloudEvent(
        source="lyceum/auth", type=event_type, subject=f"users/{data['id']}", data=data
    )
    exchange = await channel.get_exchange(stack.exchange, ensure=False)
    message = aio_pika.Message(
        event.to_json(),
        content_type=CONTENT_TYPE,
        message_id=event.id,
        type=event.type,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )
    await exchange.publish(message, routing_key=event.type)


async def test_a_confirmed_email_change_reaches_the_profile_and_other_teams(
    full_stack: Stack, amqp_channel: AbstractChannel
) -> None:
    """What auth announces once the new address is confirmed: users moves the profile to it,
    marks it verified and publishes `user.updated` naming `email`."""
    queue = await other_team_queue(amqp_channel, full_stack, "user.updated")
    async with full_stack.client() as client:
        account, tokens = await signed_up(client)
        new_email = unique_email("confirmed")
        await publish_as_auth(
            amqp_channel,
            full_stack,
            "user.email_changed",
            {"id": account["id"], "email": new_email, "previous_email": account["email"]},
        )

        async def moved() -> Any:
            profile = (await client.get("/api/v1/users/me", headers=bearer(tokens))).json()
            return profile if profile["email"] == new_email else None

        profile = await eventually(moved)
        assert (profile["email_verified"], profile["pending_email"]) == (True, None)
    (updated,) = await events_naming(queue, account["id"], "user.updated", ("id",))
    assert updated["source"] == "lyceum/users"
    assert updated["data"]["email"] == new_email
    assert updated["data"]["changed"] == ["email"]
