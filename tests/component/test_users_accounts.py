"""Users asks auth on its callers' behalf: an admin's `POST /users` has auth create the
account (with the admin's own token and request id) and answers with the profile made from
auth's answer; a user's new `email` goes to auth with their current password and waits in
`pending_email`. Auth's refusals reach the client as auth gave them; auth failing is a
clear 502 or 504, and nothing is written. The users service runs for real, against a local
server that speaks auth's contract."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm
from sqlalchemy import func, select

from services.users import events
from services.users.app import create_app
from services.users.events import ensure_profile
from services.users.models import ProcessedEvent, Profile
from services.users.settings import UsersSettings
from shared.db import Database
from shared.events.cloudevents import CloudEvent
from shared.events.consumer import EventConsumer
from shared.migrations import upgrade_to_head_async
from shared.registry import USERS
from shared.testing import free_port_block, token_claims
from tests.component.auth_stub import ACCOUNTS_PATH, EMAIL_PATH, AuthStub

ADMIN_ID = uuid.uuid4()


class QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@dataclass
class Users:
    url: str
    stub: AuthStub
    key: Ed25519PrivateKey
    database: Database

    def token(self, user_id: uuid.UUID, role: str = "student") -> str:
        claims = token_claims(sub=str(user_id), roles=[role])
        return jwt.encode(claims, self.key, algorithm="EdDSA", headers={"kid": "test-key"})

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=30)

    async def profile_count(self) -> int:
        async with self.database.unit_of_work() as session:
            return int(await session.scalar(select(func.count()).select_from(Profile)) or 0)

    async def a_student(self, email: str | None = None) -> tuple[uuid.UUID, dict[str, str]]:
        user_id = uuid.uuid4()
        async with self.database.unit_of_work() as session:
            await ensure_profile(
                session,
                user_id,
                email=email or f"{user_id}@example.com",
                name="Ada",
                role="student",
                email_verified=True,
            )
        return user_id, bearer(self.token(user_id))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def stub() -> AsyncIterator[AuthStub]:
    async with AuthStub() as running:
        yield running


@pytest.fixture
async def users(stub: AuthStub, tmp_path: Path) -> AsyncIterator[Users]:
    key = Ed25519PrivateKey.generate()
    jwk = OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
    stub.jwks = {"keys": [{**jwk, "kid": "test-key", "alg": "EdDSA", "use": "sig"}]}
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'users.db'}"
    await upgrade_to_head_async(USERS.migrations_dir, database_url)
    port = free_port_block(1)
    settings = UsersSettings(
        port=port,
        database_url=database_url,
        redis_url=None,
        amqp_url=None,
        queue_prefix=f"test-{uuid.uuid4().hex[:8]}",
        jwks_url=f"{stub.url}/jwks.json",
        auth_url=stub.url,
        users_auth_timeout_seconds=1,
    )
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_config=None, lifespan="on"
    )
    server = QuietServer(config)
    serving = asyncio.create_task(server.serve())
    database = Database(database_url)
    try:
        while not server.started:
            assert not serving.done(), "the users service did not start"
            await asyncio.sleep(0.02)
        yield Users(f"http://127.0.0.1:{port}", stub, key, database)
    finally:
        server.should_exit = True
        await serving
        await database.dispose()


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == "error"
    assert body["error"]["code"] == code
    error: dict[str, Any] = body["error"]
    return error


# --- an admin creates a user ---


async def test_an_admin_creates_a_user_auth_makes_the_account_and_users_the_profile(
    users: Users,
) -> None:
    admin = users.token(ADMIN_ID, "admin")
    async with users.client() as client:
        response = await client.post(
            "/api/v1/users",
            json={"email": "Grace@School.TEST", "name": " Grace ", "role": "instructor"},
            headers={**bearer(admin), "X-Request-ID": "admin-creates-grace"},
        )
        assert response.status_code == 201, response.text
        profile = response.json()
        assert response.headers["location"] == f"/api/v1/users/{profile['id']}"
        assert profile["email"] == "grace@school.test"
        assert (profile["name"], profile["role"]) == ("Grace", "instructor")
        assert (profile["email_verified"], profile["pending_email"]) == (False, None)
        assert profile["is_active"] is True

        (call,) = users.stub.calls
        assert call.path == ACCOUNTS_PATH
        assert call.headers["authorization"] == f"Bearer {admin}"
        assert call.headers["x-request-id"] == "admin-creates-grace"
        assert call.body == {"email": "grace@school.test", "name": "Grace", "role": "instructor"}

        stored = await client.get(f"/api/v1/users/{profile['id']}", headers=bearer(admin))
        assert stored.json() == profile

        with_password = await client.post(
            "/api/v1/users",
            json={"email": "alan@example.com", "name": "Alan", "password": "long enough"},
            headers=bearer(admin),
        )
        assert with_password.status_code == 201, with_password.text
        assert with_password.json()["role"] == "student"
        assert users.stub.calls[-1].body["password"] == "long enough"

    # Auth's user.created, consumed afterwards (and again), finds the profile made.
    event = CloudEvent(
        source="lyceum/auth",
        type="user.created",
        data={"id": profile["id"], "email": profile["email"], "name": "Grace", "role": "student"},
    )
    consumer: EventConsumer[Any] = EventConsumer(
        users.database, ProcessedEvent, "test", events.handlers, None
    )
    await consumer.handle(event, {})
    await consumer.handle(event, {})
    async with users.database.unit_of_work() as session:
        made = await session.get(Profile, uuid.UUID(profile["id"]))
        assert made is not None
        assert made.role == "instructor"
    assert await users.profile_count() == 2


async def test_auth_refusals_reach_the_client_as_auth_gave_them(users: Users) -> None:
    admin = bearer(users.token(ADMIN_ID, "admin"))
    users.stub.taken.add("taken@example.com")
    body = {"email": "taken@example.com", "name": "Twin", "role": "student"}
    async with users.client() as client:
        conflict = await client.post("/api/v1/users", json=body, headers=admin)
        error = assert_error(conflict, 409, "CONFLICT")
        assert error["message"] == "Email already registered"
        assert error["details"]["field"] == "email"

        users.stub.status = 429
        users.stub.error = {"code": "RATE_LIMIT_EXCEEDED", "message": "Slow down"}
        users.stub.headers = {"Retry-After": "7"}
        limited = await client.post("/api/v1/users", json=body, headers=admin)
        assert_error(limited, 429, "RATE_LIMIT_EXCEEDED")
        assert limited.headers["retry-after"] == "7"

        users.stub.status, users.stub.headers = 400, {}
        users.stub.error = {
            "code": "VALIDATION_ERROR",
            "message": "Invalid input data",
            "details": {"field": "password", "issue": "too weak"},
        }
        invalid = await client.post("/api/v1/users", json=body, headers=admin)
        error = assert_error(invalid, 400, "VALIDATION_ERROR")
        assert error["details"] == {"field": "password", "issue": "too weak"}
    assert await users.profile_count() == 0


@pytest.mark.parametrize(
    ("knobs", "status", "code", "words"),
    [
        ({"status": 500}, 502, "SERVICE_UNAVAILABLE", "answered 500"),
        ({"status": 503}, 502, "SERVICE_UNAVAILABLE", "answered 503"),
        ({"status": 404}, 502, "SERVICE_UNAVAILABLE", "answered 404"),
        ({"body": b'{"id": "not a uuid"}'}, 502, "SERVICE_UNAVAILABLE", "could not be read"),
        ({"delay": 3.0}, 504, "UPSTREAM_TIMEOUT", "may have been created"),
    ],
)
async def test_auth_failing_is_a_clear_502_or_504_and_nothing_is_written(
    users: Users, knobs: dict[str, Any], status: int, code: str, words: str
) -> None:
    for name, value in knobs.items():
        setattr(users.stub, name, value)
    async with users.client() as client:
        response = await client.post(
            "/api/v1/users",
            json={"email": "new@example.com", "name": "New"},
            headers=bearer(users.token(ADMIN_ID, "admin")),
        )
    error = assert_error(response, status, code)
    assert words in error["message"]
    assert await users.profile_count() == 0


async def test_auth_out_of_reach_is_502_and_nothing_is_written(users: Users) -> None:
    admin = bearer(users.token(ADMIN_ID, "admin"))
    async with users.client() as client:
        # The service has the signing keys before auth goes away.
        assert (await client.get("/api/v1/users", headers=admin)).status_code == 200
        await users.stub.stop()
        response = await client.post(
            "/api/v1/users", json={"email": "new@example.com", "name": "New"}, headers=admin
        )
    error = assert_error(response, 502, "SERVICE_UNAVAILABLE")
    assert "could not be reached" in error["message"]
    assert await users.profile_count() == 0


async def test_only_admins_create_users_and_bad_input_never_reaches_auth(users: Users) -> None:
    async with users.client() as client:
        student = await client.post(
            "/api/v1/users",
            json={"email": "new@example.com", "name": "New"},
            headers=bearer(users.token(uuid.uuid4())),
        )
        assert_error(student, 403, "PERMISSION_DENIED")
        admin = bearer(users.token(ADMIN_ID, "admin"))
        for body, field in (
            ({"email": "not-an-email", "name": "New"}, "email"),
            ({"email": "new@example.com", "name": "   "}, "name"),
            ({"email": "new@example.com", "name": "New", "role": "owner"}, "role"),
            ({"email": "new@example.com", "name": "New", "password": "short"}, "password"),
            ({"email": "new@example.com", "name": "New", "password": None}, "password"),
            ({"email": "new@example.com", "name": "New", "is_active": False}, "is_active"),
        ):
            response = await client.post("/api/v1/users", json=body, headers=admin)
            assert assert_error(response, 400, "VALIDATION_ERROR")["details"]["field"] == field
    assert users.stub.calls == []


# --- a user changes their email ---


async def test_a_new_email_goes_to_auth_and_waits_confirmed_in_pending_email(
    users: Users,
) -> None:
    user_id, headers = await users.a_student("ada@example.com")
    async with users.client() as client:
        response = await client.patch(
            "/api/v1/users/me",
            json={
                "email": "Ada@New.Example",
                "current_password": users.stub.password,
                "bio": "Counts things",
            },
            headers={**headers, "X-Request-ID": "ada-moves"},
        )
        assert response.status_code == 200, response.text
        profile = response.json()
        assert profile["email"] == "ada@example.com"
        assert profile["pending_email"] == "ada@new.example"
        assert profile["email_verified"] is True
        assert profile["bio"] == "Counts things"

        (call,) = users.stub.calls
        assert call.path == EMAIL_PATH
        assert call.headers["authorization"] == headers["Authorization"]
        assert call.headers["x-request-id"] == "ada-moves"
        assert call.body == {
            "new_email": "ada@new.example",
            "current_password": users.stub.password,
        }

        # PUT keeps the email (and the name) when left out, or the same, and asks auth
        # nothing; it clears what may be empty.
        for body in ({"name": "Ada L."}, {"name": "Ada L.", "email": "ada@example.com"}, {}):
            kept = await client.put("/api/v1/users/me", json=body, headers=headers)
            assert kept.status_code == 200, kept.text
            assert (kept.json()["email"], kept.json()["pending_email"]) == (
                "ada@example.com",
                "ada@new.example",
            )
            assert (kept.json()["name"], kept.json()["bio"]) == ("Ada L.", None)
        assert len(users.stub.calls) == 1
    async with users.database.unit_of_work() as session:
        stored = await session.get(Profile, user_id)
        assert stored is not None
        assert (stored.email, stored.pending_email) == ("ada@example.com", "ada@new.example")


async def test_a_refused_email_change_changes_nothing(users: Users) -> None:
    _, headers = await users.a_student("ada@example.com")
    users.stub.taken.add("grace@example.com")
    async with users.client() as client:
        missing = await client.patch(
            "/api/v1/users/me", json={"email": "ada@new.example", "bio": "x"}, headers=headers
        )
        error = assert_error(missing, 400, "VALIDATION_ERROR")
        assert error["details"]["field"] == "current_password"
        assert users.stub.calls == []

        wrong = await client.put(
            "/api/v1/users/me",
            json={"name": "Eve", "email": "ada@new.example", "current_password": "guess"},
            headers=headers,
        )
        assert_error(wrong, 400, "INVALID_CURRENT_PASSWORD")

        taken = await client.patch(
            "/api/v1/users/me",
            json={"email": "grace@example.com", "current_password": users.stub.password},
            headers=headers,
        )
        error = assert_error(taken, 409, "CONFLICT")
        assert error["details"]["field"] == "email"

        users.stub.status = 500
        failing = await client.patch(
            "/api/v1/users/me",
            json={"email": "ada@new.example", "current_password": "x", "bio": "y"},
            headers=headers,
        )
        assert_error(failing, 502, "SERVICE_UNAVAILABLE")

        profile = (await client.get("/api/v1/users/me", headers=headers)).json()
        assert (profile["name"], profile["bio"], profile["pending_email"]) == ("Ada", None, None)
        assert profile["email"] == "ada@example.com"


async def test_an_admin_cannot_change_an_accounts_email(users: Users) -> None:
    user_id, _ = await users.a_student()
    admin = bearer(users.token(ADMIN_ID, "admin"))
    async with users.client() as client:
        for method, body in (
            ("PATCH", {"email": "new@example.com"}),
            ("PUT", {"name": "Ada", "role": "student", "email": "new@example.com"}),
        ):
            response = await client.request(
                method, f"/api/v1/users/{user_id}", json=body, headers=admin
            )
            error = assert_error(response, 400, "VALIDATION_ERROR")
            assert error["details"]["field"] == "email"
            assert "its owner" in error["details"]["issue"]
    assert users.stub.calls == []


async def test_preferences_bodies_are_capped(users: Users) -> None:
    _, headers = await users.a_student()
    async with users.client() as client:
        huge = await client.put(
            "/api/v1/users/me/preferences",
            content=b'{"language": "' + b"a" * 5000 + b'"}',
            headers={**headers, "Content-Type": "application/json"},
        )
        assert_error(huge, 413, "PAYLOAD_TOO_LARGE")
