"""Accounts as a new user meets them, through the gateway, with mail delivered to a real SMTP
server on this machine: signed in at sign-up, the address verified from the mail, a
forgotten password reset from the mail (every session logged out), the password and the
address changed, accounts made by admins, the first admin at a special-use domain, and the
lockout of an address after failed logins."""

import asyncio
import json
from typing import Any

import httpx
import jwt
from aio_pika.abc import AbstractChannel, AbstractQueue
from jsonschema import Draft202012Validator

from services.webhooks.settings import REPOSITORY_SCHEMAS_DIR
from shared.testing import Stack, eventually
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.e2e.bus_helpers import other_team_queue
from tests.e2e.helpers import (
    PASSWORD,
    admin_tokens,
    assert_envelope,
    bearer,
    login,
    sign_up,
    signed_up,
    unique_email,
)
from tests.mail_server import MailServer, text_of, token_in

NEW_PASSWORD = "a brand new passphrase"


async def me(client: httpx.AsyncClient, tokens: dict[str, Any] | str) -> httpx.Response:
    return await client.get("/api/v1/auth/me", headers=bearer(tokens))


async def login_status(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post("/api/v1/auth/login", json={"email": email, "password": password})


async def test_sign_up_answers_with_a_session_and_the_mail_verifies_the_address(
    stack: Stack, mailbox: MailServer
) -> None:
    email = unique_email("verify")
    async with stack.client() as client:
        response = await client.post(
            "/api/v1/auth/register", json={"email": email, "password": PASSWORD, "name": "Ada"}
        )
        assert response.status_code == 201, response.text
        body = response.json()
        assert set(body) == {"user", "access_token", "refresh_token", "token_type", "expires_in"}
        assert body["token_type"] == "Bearer"
        assert body["expires_in"] == 900
        user = body["user"]
        assert {"id", "email", "name", "role", "email_verified", "is_active", "created_at"} <= set(
            user
        )
        assert (user["email"], user["role"], user["email_verified"]) == (email, "student", False)
        assert response.headers["location"] == f"/api/v1/users/{user['id']}"
        claims = jwt.decode(body["access_token"], options={"verify_signature": False})
        assert claims["sub"] == user["id"]
        assert claims["email_verified"] is False
        signed_in = await me(client, body)
        assert signed_in.status_code == 200, signed_in.text
        assert signed_in.json()["email_verified"] is False
        refreshed = await client.post(
            "/api/v1/auth/refresh", json={"refresh_token": body["refresh_token"]}
        )
        assert refreshed.status_code == 200, refreshed.text

        [mail] = await mailbox.wait_for(email)
        assert mail["Subject"] == "Confirm your email address"
        assert "/verify-email?token=" in text_of(mail)
        token = token_in(mail)
        verified = await client.post("/api/v1/auth/verify-email", json={"token": token})
        assert verified.status_code == 204, verified.text
        assert (await me(client, body)).json()["email_verified"] is True
        again = await client.post("/api/v1/auth/verify-email", json={"token": token})
        assert assert_envelope(again, 400, "INVALID_VERIFICATION_TOKEN")["error"]["details"] == {
            "reason": "used"
        }
        made_up = await client.post("/api/v1/auth/verify-email", json={"token": "x" * 43})
        assert_envelope(made_up, 400, "INVALID_VERIFICATION_TOKEN")
        # New tokens carry the verified address.
        fresh = await login(client, email)
        claims = jwt.decode(fresh["access_token"], options={"verify_signature": False})
        assert claims["email_verified"] is True
        resend = await client.post("/api/v1/auth/verify-email/resend", headers=bearer(fresh))
        assert_envelope(resend, 409, "EMAIL_ALREADY_VERIFIED")


async def test_the_verification_mail_can_be_sent_again(stack: Stack, mailbox: MailServer) -> None:
    async with stack.client() as client:
        session = await sign_up(client)
        email = session["user"]["email"]
        await mailbox.wait_for(email)
        anonymous = await client.post("/api/v1/auth/verify-email/resend")
        assert_envelope(anonymous, 401, "AUTHENTICATION_REQUIRED")
        resent = await client.post("/api/v1/auth/verify-email/resend", headers=bearer(session))
        assert resent.status_code == 202, resent.text
        assert resent.json()["message"]
        first, second = await mailbox.wait_for(email, 2)
        assert token_in(first) != token_in(second)
        verified = await client.post("/api/v1/auth/verify-email", json={"token": token_in(second)})
        assert verified.status_code == 204, verified.text
        # The other link of the same address is spent with it.
        earlier = await client.post("/api/v1/auth/verify-email", json={"token": token_in(first)})
        assert_envelope(earlier, 400, "INVALID_VERIFICATION_TOKEN")


async def test_forgotten_password_mails_only_an_existing_account_and_reset_logs_out_everywhere(
    stack: Stack, mailbox: MailServer
) -> None:
    async with stack.client() as client:
        account, first = await signed_up(client)
        email = account["email"]
        await mailbox.wait_for(email)  # the verification mail
        second = await login(client, email)
        api_token = await client.post(
            "/api/v1/auth/tokens", json={"name": "ci"}, headers=bearer(first)
        )
        assert api_token.status_code == 201, api_token.text

        nobody = unique_email("nobody")
        for address in (nobody, email):
            answer = await client.post("/api/v1/auth/password/forgot", json={"email": address})
            assert answer.status_code == 202, answer.text
            assert answer.json() == {
                "message": "If the address has an account, a reset link is on its way"
            }
        _, reset_mail = await mailbox.wait_for(email, 2)
        assert reset_mail["Subject"] == "Reset your password"
        # The address without an account was queued first, and got nothing.
        assert mailbox.messages_to(nobody) == []

        token = token_in(reset_mail)
        short = await client.post(
            "/api/v1/auth/password/reset", json={"token": token, "new_password": "short"}
        )
        assert_envelope(short, 400, "VALIDATION_ERROR")
        reset = await client.post(
            "/api/v1/auth/password/reset", json={"token": token, "new_password": NEW_PASSWORD}
        )
        assert reset.status_code == 204, reset.text
        for old in (first, second, api_token.json()["token"]):
            assert_envelope(await me(client, old), 401, "INVALID_TOKEN")
        for old in (first, second):
            refused = await client.post(
                "/api/v1/auth/refresh", json={"refresh_token": old["refresh_token"]}
            )
            assert_envelope(refused, 401, "INVALID_TOKEN")
        assert_envelope(await login_status(client, email, PASSWORD), 401, "AUTHENTICATION_REQUIRED")
        fresh = await login(client, email, NEW_PASSWORD)
        assert (await me(client, fresh)).status_code == 200
        again = await client.post(
            "/api/v1/auth/password/reset", json={"token": token, "new_password": "yet another one"}
        )
        assert_envelope(again, 400, "INVALID_RESET_TOKEN")


async def test_the_first_admin_at_a_special_use_domain_logs_in(stack: Stack) -> None:
    assert ADMIN_EMAIL.endswith(".test")
    async with stack.client() as client:
        tokens = await admin_tokens(client)
        account = (await me(client, tokens)).json()
        capitals = await login(client, ADMIN_EMAIL.upper(), ADMIN_PASSWORD)
    assert account["email"] == ADMIN_EMAIL
    assert account["role"] == "admin"
    assert account["email_verified"] is True
    assert capitals["access_token"]


async def test_an_admin_makes_an_account_whose_user_sets_the_password_from_the_mail(
    stack: Stack, mailbox: MailServer
) -> None:
    email = unique_email("invited")
    async with stack.client() as client:
        admin = await admin_tokens(client)
        _, student = await signed_up(client)
        body = {"email": email.upper(), "name": "Grace", "role": "instructor"}
        forbidden = await client.post("/api/v1/auth/accounts", json=body, headers=bearer(student))
        assert_envelope(forbidden, 403, "PERMISSION_DENIED")
        created = await client.post("/api/v1/auth/accounts", json=body, headers=bearer(admin))
        assert created.status_code == 201, created.text
        account = created.json()
        assert created.headers["location"] == f"/api/v1/users/{account['id']}"
        assert (account["email"], account["name"], account["role"]) == (
            email,
            "Grace",
            "instructor",
        )
        assert (account["email_verified"], account["is_active"]) == (False, True)
        taken = await client.post("/api/v1/auth/accounts", json=body, headers=bearer(admin))
        assert_envelope(taken, 409, "CONFLICT")

        [mail] = await mailbox.wait_for(email)
        assert mail["Subject"] == "Your Lyceum account"
        assert "/reset-password?token=" in text_of(mail)
        # No password yet: nothing logs in.
        assert_envelope(await login_status(client, email, PASSWORD), 401, "AUTHENTICATION_REQUIRED")
        chosen = await client.post(
            "/api/v1/auth/password/reset",
            json={"token": token_in(mail), "new_password": NEW_PASSWORD},
        )
        assert chosen.status_code == 204, chosen.text
        tokens = await login(client, email, NEW_PASSWORD)
        mine = (await me(client, tokens)).json()
        assert (mine["id"], mine["role"], mine["email_verified"]) == (
            account["id"],
            "instructor",
            True,
        )

        with_password = unique_email("invited")
        made = await client.post(
            "/api/v1/auth/accounts",
            json={"email": with_password, "name": "Ada", "role": "admin", "password": PASSWORD},
            headers=bearer(admin),
        )
        assert made.status_code == 201, made.text
        [verification] = await mailbox.wait_for(with_password)
        assert verification["Subject"] == "Confirm your email address"
        other_admin = await login(client, with_password)
        claims = jwt.decode(other_admin["access_token"], options={"verify_signature": False})
        assert claims["roles"] == ["admin"]


async def test_changing_the_password_logs_out_the_other_sessions(stack: Stack) -> None:
    async with stack.client() as client:
        account, mine = await signed_up(client)
        other = await login(client, account["email"])
        wrong = await client.post(
            "/api/v1/auth/password",
            json={"current_password": "not my password", "new_password": NEW_PASSWORD},
            headers=bearer(mine),
        )
        body = assert_envelope(wrong, 400, "INVALID_CURRENT_PASSWORD")
        assert body["error"]["details"]["field"] == "current_password"
        changed = await client.post(
            "/api/v1/auth/password",
            json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
            headers=bearer(mine),
        )
        assert changed.status_code == 204, changed.text
        assert (await me(client, mine)).status_code == 200
        kept = await client.post(
            "/api/v1/auth/refresh", json={"refresh_token": mine["refresh_token"]}
        )
        assert kept.status_code == 200, kept.text
        assert_envelope(await me(client, other), 401, "INVALID_TOKEN")
        gone = await client.post(
            "/api/v1/auth/refresh", json={"refresh_token": other["refresh_token"]}
        )
        assert_envelope(gone, 401, "INVALID_TOKEN")
        assert_envelope(
            await login_status(client, account["email"], PASSWORD), 401, "AUTHENTICATION_REQUIRED"
        )
        await login(client, account["email"], NEW_PASSWORD)


async def test_changing_the_address_takes_the_confirmation_of_the_new_one(
    stack: Stack, mailbox: MailServer
) -> None:
    async with stack.client() as client:
        account, tokens = await signed_up(client)
        taken, _ = await signed_up(client)
        old, new = account["email"], unique_email("moved")
        wrong = await client.post(
            "/api/v1/auth/email",
            json={"new_email": new, "current_password": "not my password"},
            headers=bearer(tokens),
        )
        assert_envelope(wrong, 400, "INVALID_CURRENT_PASSWORD")
        conflict = await client.post(
            "/api/v1/auth/email",
            json={"new_email": taken["email"], "current_password": PASSWORD},
            headers=bearer(tokens),
        )
        assert assert_envelope(conflict, 409, "CONFLICT")["error"]["details"]["field"] == (
            "new_email"
        )
        pending = await client.post(
            "/api/v1/auth/email",
            json={"new_email": new.upper(), "current_password": PASSWORD},
            headers=bearer(tokens),
        )
        assert pending.status_code == 202, pending.text
        assert pending.json()["pending_email"] == new
        assert pending.json()["message"]
        # Nothing changes until the new address confirms.
        assert (await me(client, tokens)).json()["email"] == old
        [confirmation] = await mailbox.wait_for(new)
        assert confirmation["Subject"] == "Confirm your new email address"
        token = token_in(confirmation)
        confirmed = await client.post("/api/v1/auth/email/confirm", json={"token": token})
        assert confirmed.status_code == 204, confirmed.text
        mine = (await me(client, tokens)).json()
        assert (mine["email"], mine["email_verified"]) == (new, True)
        notices = [m for m in await mailbox.wait_for(old, 2) if "changed" in str(m["Subject"])]
        assert new in text_of(notices[0])
        again = await client.post("/api/v1/auth/email/confirm", json={"token": token})
        assert_envelope(again, 400, "INVALID_EMAIL_CHANGE_TOKEN")
        await login(client, new)
        assert_envelope(await login_status(client, old, PASSWORD), 401, "AUTHENTICATION_REQUIRED")


async def wrong_passwords(
    client: httpx.AsyncClient, email: str, count: int
) -> list[httpx.Response]:
    return [await login_status(client, email, "wrong guess") for _ in range(count)]


def assert_locked(answer: httpx.Response) -> int:
    body = assert_envelope(answer, 429, "RATE_LIMIT_EXCEEDED")
    retry_after = int(answer.headers["retry-after"])
    assert body["error"]["details"] == {"policy": "login_failures", "retry_after": retry_after}
    return retry_after


async def test_failed_logins_lock_the_address_whoever_sends_them(stack: Stack) -> None:
    """Per-address limits are raised out of the way in the test stacks (RATE_LIMIT_AUTH):
    what refuses here is auth's count for the address (LOGIN_MAX_FAILURES=5,
    LOGIN_LOCKOUT_SECONDS=2)."""
    async with stack.client() as client:
        account, _ = await signed_up(client)
        email = account["email"]
        answers = await wrong_passwords(client, email, 20)
        statuses = [answer.status_code for answer in answers]
        assert statuses == [401] * 5 + [429] * 15, statuses
        assert 1 <= assert_locked(answers[-1]) <= 2
        # The real password waits for the interval too, then works.
        assert_locked(await login_status(client, email, PASSWORD))

        async def let_in() -> bool:
            return (await login_status(client, email, PASSWORD)).status_code == 200

        await eventually(let_in, within_seconds=10, interval=0.25)

        # An address with no account is answered the same way.
        answers = await wrong_passwords(client, unique_email("nobody"), 20)
        assert [answer.status_code for answer in answers] == [401] * 5 + [429] * 15
        assert 1 <= assert_locked(answers[-1]) <= 2


async def test_a_password_reset_lifts_the_lockout(stack: Stack, mailbox: MailServer) -> None:
    """A reset forgets the address's failures and lockouts: the next lockout is as short as
    a first one (a lockout that merely ran out would make the next one twice as long)."""
    async with stack.client() as client:
        account, _ = await signed_up(client)
        email = account["email"]
        await mailbox.wait_for(email)
        assert assert_locked((await wrong_passwords(client, email, 6))[-1]) == 2
        assert_locked(await login_status(client, email, PASSWORD))
        forgot = await client.post("/api/v1/auth/password/forgot", json={"email": email})
        assert forgot.status_code == 202
        _, mail = await mailbox.wait_for(email, 2)
        reset = await client.post(
            "/api/v1/auth/password/reset",
            json={"token": token_in(mail), "new_password": NEW_PASSWORD},
        )
        assert reset.status_code == 204, reset.text
        assert (await login_status(client, email, NEW_PASSWORD)).status_code == 200
        assert assert_locked((await wrong_passwords(client, email, 6))[-1]) == 2


async def test_a_wrong_current_password_counts_towards_the_lockout(stack: Stack) -> None:
    """A stolen access token does not buy unlimited guesses at the password."""
    async with stack.client() as client:
        _, tokens = await signed_up(client)
        statuses = [
            (
                await client.post(
                    "/api/v1/auth/password",
                    json={"current_password": "wrong guess", "new_password": NEW_PASSWORD},
                    headers=bearer(tokens),
                )
            ).status_code
            for _ in range(7)
        ]
    assert statuses == [400] * 5 + [429] * 2


async def test_the_account_events_match_the_catalogue(
    full_stack: Stack, amqp_channel: AbstractChannel, mailbox: MailServer
) -> None:
    queue = await other_team_queue(amqp_channel, full_stack, "user.*")
    async with full_stack.client() as client:
        account, tokens = await signed_up(client)
        [verification] = await mailbox.wait_for(account["email"])
        await client.post("/api/v1/auth/verify-email", json={"token": token_in(verification)})
        await client.post(
            "/api/v1/auth/password",
            json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
            headers=bearer(tokens),
        )
        new = unique_email("moved")
        await client.post(
            "/api/v1/auth/email",
            json={"new_email": new, "current_password": NEW_PASSWORD},
            headers=bearer(tokens),
        )
        [confirmation] = await mailbox.wait_for(new)
        await client.post("/api/v1/auth/email/confirm", json={"token": token_in(confirmation)})
        await client.post("/api/v1/auth/password/forgot", json={"email": new})
        reset_mail = (await mailbox.wait_for(new, 2))[1]
        await client.post(
            "/api/v1/auth/password/reset",
            json={"token": token_in(reset_mail), "new_password": "third passphrase"},
        )
    events = await auth_events_until_reset(queue, account["id"])
    emitted = [(event["type"], event["data"]) for event in events]
    assert emitted == [
        ("user.created", {**emitted[0][1], "email_verified": False}),
        ("user.email_verified", {"id": account["id"], "email": account["email"]}),
        ("user.password_changed", {"id": account["id"], "reason": "change"}),
        (
            "user.email_changed",
            {"id": account["id"], "email": new, "previous_email": account["email"]},
        ),
        ("user.email_verified", {"id": account["id"], "email": new}),
        ("user.password_changed", {"id": account["id"], "reason": "reset"}),
    ]
    for event_type, data in emitted:
        schema = json.loads((REPOSITORY_SCHEMAS_DIR / f"{event_type}.json").read_text())
        validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
        assert not list(validator.iter_errors(data)), (event_type, data)


async def auth_events_until_reset(queue: AbstractQueue, account_id: str) -> list[dict[str, Any]]:
    """What auth published about the account, up to its password reset."""
    received: list[dict[str, Any]] = []

    async def collect() -> None:
        async with queue.iterator() as messages:
            async for message in messages:
                await message.ack()
                event = json.loads(message.body)
                if event["source"] != "lyceum/auth" or event["data"].get("id") != account_id:
                    continue
                received.append(event)
                if event["data"].get("reason") == "reset":
                    return

    await asyncio.wait_for(collect(), 30)
    return received
