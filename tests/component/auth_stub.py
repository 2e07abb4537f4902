"""The auth service as users sees it, for users' tests: an aiohttp server on 127.0.0.1 that
speaks the contract of the two calls users makes on its callers' behalf, and records them.

    POST /api/v1/auth/accounts   {"email", "name", "role", "password"?} → 201 the account
                                 `{"id", "email", "name", "role", "email_verified",
                                 "is_active", "created_at"}`; 409 CONFLICT for a taken email
    POST /api/v1/auth/email      {"new_email", "current_password"} → 202 `{"message",
                                 "pending_email"}`; 400 INVALID_CURRENT_PASSWORD unless the
                                 password is `password`; 409 CONFLICT for a taken email
    GET  /jwks.json              `jwks` (a JWKS for the users service under test)

Knobs, read on every request: `taken` (emails that belong to accounts), `password`,
`status` and `error` (answer with this status and error body instead), `body` (answer 201 or
202 with these bytes instead), `delay` (seconds before answering)."""

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from tests.component.stub_server import StubServer

ACCOUNTS_PATH = "/api/v1/auth/accounts"
EMAIL_PATH = "/api/v1/auth/email"


@dataclass
class Call:
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class AuthStub(StubServer):
    taken: set[str] = field(default_factory=set)
    password: str = "the-current-password"
    status: int | None = None
    error: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    delay: float = 0.0
    calls: list[Call] = field(default_factory=list)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(ACCOUNTS_PATH, self._create_account)
        app.router.add_post(EMAIL_PATH, self._change_email)

    async def _record(self, request: web.Request) -> dict[str, Any]:
        body = json.loads(await request.read())
        headers = {name.lower(): value for name, value in request.headers.items()}
        self.calls.append(Call(request.path, headers, body))
        if self.delay:
            await asyncio.sleep(self.delay)
        assert isinstance(body, dict)
        return body

    def _instead(self, success: int) -> web.Response | None:
        if self.status is not None:
            error = self.error or {"code": "INTERNAL_ERROR", "message": "stub"}
            envelope = {"status": "error", "error": error, "request_id": "stub"}
            return web.json_response(envelope, status=self.status, headers=self.headers)
        if self.body is not None:
            return web.Response(body=self.body, status=success, content_type="application/json")
        return None

    async def _create_account(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        instead = self._instead(201)
        if instead is not None:
            return instead
        email = str(body["email"]).lower()
        if email in self.taken:
            return _error(409, "CONFLICT", "Email already registered", field="email")
        self.taken.add(email)
        account = {
            "id": str(uuid.uuid4()),
            "email": email,
            "name": body["name"],
            "role": body["role"],
            "email_verified": False,
            "is_active": True,
            "created_at": datetime.now(UTC).isoformat(),
        }
        return web.json_response(account, status=201)

    async def _change_email(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        instead = self._instead(202)
        if instead is not None:
            return instead
        if body.get("current_password") != self.password:
            return _error(400, "INVALID_CURRENT_PASSWORD", "The current password is wrong")
        new_email = str(body["new_email"]).lower()
        if new_email in self.taken:
            return _error(409, "CONFLICT", "Email already registered", field="new_email")
        answer = {"message": "Confirm from the mail", "pending_email": new_email}
        return web.json_response(answer, status=202)


def _error(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        error["details"] = {"field": field, "issue": message}
    envelope = {"status": "error", "error": error, "request_id": "stub"}
    return web.json_response(envelope, status=status)
