"""What a client of the gateway does again and again."""

import json
import re
import uuid
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from shared.testing import Stack, eventually, token_claims
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD

PASSWORD = "correct horse battery"


def unique_email(tag: str = "user") -> str:
    return f"{tag}-{uuid.uuid4().hex[:12]}@example.com"


async def sign_up(
    client: httpx.AsyncClient, email: str | None = None, role: str = "student", name: str = "Ada"
) -> dict[str, Any]:
    """The answer of a registration: `user` (the account) and the new session's tokens."""
    body = {"email": email or unique_email(), "password": PASSWORD, "name": name, "role": role}
    response = await client.post("/api/v1/auth/register", json=body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def register(
    client: httpx.AsyncClient, email: str | None = None, role: str = "student", name: str = "Ada"
) -> dict[str, Any]:
    """Registers; the account."""
    account: dict[str, Any] = (await sign_up(client, email, role, name))["user"]
    return account


async def login(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> dict[str, Any]:
    response = await client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def bearer(tokens: dict[str, Any] | str) -> dict[str, str]:
    token = tokens if isinstance(tokens, str) else tokens["access_token"]
    return {"Authorization": f"Bearer {token}"}


async def signed_up(
    client: httpx.AsyncClient, role: str = "student"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Registers, logs in and waits until users has built the profile."""
    account = await register(client, role=role)
    tokens = await login(client, account["email"])

    async def profile_ready() -> bool:
        return (await client.get("/api/v1/users/me", headers=bearer(tokens))).status_code == 200

    await eventually(profile_ready)
    return account, tokens


async def admin_tokens(client: httpx.AsyncClient) -> dict[str, Any]:
    return await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == "error"
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert body["request_id"] == response.headers["x-request-id"]
    assert body["timestamp"].endswith("Z")
    return body


def auth_database_url(stack: Stack) -> str:
    return stack.database_url("auth")


async def mint_token(stack: Stack, **claims: Any) -> str:
    """Signs with the platform's real current key (read from the auth database), so that
    only the claims make a token bad."""
    engine = create_async_engine(auth_database_url(stack))
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text(
                    "SELECT kid, private_key_pem FROM signing_keys "
                    "WHERE retired_at IS NULL ORDER BY created_at DESC LIMIT 1"
                )
            )
        ).one()
    await engine.dispose()
    key = serialization.load_pem_private_key(row.private_key_pem.encode(), None)
    payload = token_claims(**{"roles": ["admin"], **claims})
    return jwt.encode(payload, key, algorithm="EdDSA", headers={"kid": row.kid})  # type: ignore[arg-type]


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    for line in text.splitlines():
        found = re.match(r"^([a-z_]+)(?:\{(.*)\})? ([0-9.e+-]+)$", line)
        if not found or found.group(1) != name:
            continue
        present = dict(re.findall(r'(\w+)="([^"]*)"', found.group(2) or ""))
        if all(present.get(key) == value for key, value in labels.items()):
            return float(found.group(3))
    return 0.0


async def logged(stack: Stack, event: str, service: str, event_id: str) -> bool:
    """Whether the stack's log has the JSON line `event` written by `service` about `event_id`."""
    for line in stack.log_path.read_text(errors="replace").splitlines():
        if event_id not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if (entry.get("event"), entry.get("service"), entry.get("event_id")) == (
            event,
            service,
            event_id,
        ):
            return True
    return False
