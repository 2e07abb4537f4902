"""The auth service, asked on the caller's behalf (with the caller's own access token and
request id): auth owns credentials, users owns profiles, so creating an account and
changing an email start there.

    POST {AUTH_URL}/api/v1/auth/accounts   an admin creates an account: 201 and the account
    POST {AUTH_URL}/api/v1/auth/email      a user asks to change their email: 202, and the
                                           change happens when the new address confirms it

Auth's own refusals (400, 401, 403, 409, 429, ...) reach the client as auth gave them: the
same status, code, message and details. Anything else is auth failing, not the client: 502
SERVICE_UNAVAILABLE when auth cannot be reached or answers with an error of its own (or
with something unreadable), 504 UPSTREAM_TIMEOUT when it does not answer in time. A call is
never sent twice, except when the connection could not be opened at all."""

import uuid
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from shared.errors import ApiError, UpstreamTimeout
from shared.logging import get_logger
from shared.request_id import current_request_id

log = get_logger(__name__)

ACCOUNTS_PATH = "/api/v1/auth/accounts"
EMAIL_PATH = "/api/v1/auth/email"

AnswerT = TypeVar("AnswerT", bound=BaseModel)


class AuthUnavailable(ApiError):
    """502, which the gateway relays as it is: auth failed, the users service did not."""

    status_code, code = 502, "SERVICE_UNAVAILABLE"


class AuthRefused(ApiError):
    """A 4xx auth answered in the platform's envelope, relayed to the client unchanged."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, details=details, headers=headers)
        self.status_code = status_code
        self.code = code


class Account(BaseModel):
    id: uuid.UUID
    email: str
    name: str
    role: str
    email_verified: bool = False
    is_active: bool = True


class EmailChangeAccepted(BaseModel):
    pending_email: str


class AuthClient:
    def __init__(self, base_url: str, *, timeout_seconds: float) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=timeout_seconds,
            transport=httpx.AsyncHTTPTransport(retries=1),
        )

    async def create_account(
        self, token: str, email: str, name: str, role: str, password: str | None
    ) -> Account:
        body: dict[str, Any] = {"email": email, "name": name, "role": role}
        if password is not None:
            body["password"] = password
        return await self._post(
            ACCOUNTS_PATH,
            token,
            body,
            201,
            Account,
            "create the account",
            timed_out="The auth service did not answer in time; the account may have been "
            "created all the same: look for it (GET /api/v1/users?search=...) before trying "
            "again",
        )

    async def request_email_change(
        self, token: str, new_email: str, current_password: str
    ) -> EmailChangeAccepted:
        body = {"new_email": new_email, "current_password": current_password}
        return await self._post(
            EMAIL_PATH,
            token,
            body,
            202,
            EmailChangeAccepted,
            "change the email",
            timed_out="The auth service did not answer in time; the profile was not changed",
            # The client sent `email`; auth names it `new_email`.
            fields={"new_email": "email"},
        )

    async def _post(
        self,
        path: str,
        token: str,
        body: dict[str, Any],
        expected: int,
        answer: type[AnswerT],
        what: str,
        *,
        timed_out: str,
        fields: dict[str, str] | None = None,
    ) -> AnswerT:
        headers = {"Authorization": f"Bearer {token}"}
        request_id = current_request_id()
        if request_id:
            headers["X-Request-ID"] = request_id
        try:
            response = await self._client.post(path, json=body, headers=headers)
        except httpx.TimeoutException as exc:
            log.warning("auth_call_failed", path=path, error="timeout")
            raise UpstreamTimeout(timed_out) from exc
        except httpx.HTTPError as exc:
            log.warning("auth_call_failed", path=path, error=str(exc) or type(exc).__name__)
            raise AuthUnavailable(
                f"The auth service could not be reached to {what}; nothing was changed"
            ) from exc
        if response.status_code == expected:
            try:
                return answer.model_validate_json(response.content)
            except ValidationError as exc:
                log.warning("auth_call_failed", path=path, error="unreadable answer")
                raise AuthUnavailable(
                    f"The auth service's answer could not be read when asked to {what}"
                ) from exc
        refusal = _refusal(response, fields or {})
        if refusal is not None:
            log.info("auth_refused", path=path, status=response.status_code, code=refusal.code)
            raise refusal
        log.warning("auth_call_failed", path=path, status=response.status_code)
        raise AuthUnavailable(
            f"The auth service failed to {what} (it answered {response.status_code})"
        )

    async def close(self) -> None:
        await self._client.aclose()


# Auth's answers that are about the request, not about auth: relayed to the client. A 404
# or 405 would mean that this auth does not have the endpoint (an older version): a failure.
_RELAYED_STATUSES = {400, 401, 403, 409, 413, 415, 429}
_RELAYED_HEADERS = ("Retry-After", "WWW-Authenticate")


def _refusal(response: httpx.Response, fields: dict[str, str]) -> AuthRefused | None:
    if response.status_code not in _RELAYED_STATUSES:
        return None
    try:
        document = response.json()
    except ValueError:
        return None
    error = document.get("error") if isinstance(document, dict) else None
    if not isinstance(error, dict):
        return None
    code, message = error.get("code"), error.get("message")
    if not isinstance(code, str) or not isinstance(message, str):
        return None
    details = _renamed(error.get("details"), fields)
    headers = {
        name: response.headers[name] for name in _RELAYED_HEADERS if name in response.headers
    }
    return AuthRefused(response.status_code, code, message, details, headers or None)


def _renamed(details: Any, fields: dict[str, str]) -> Any:
    """The details of a validation error, with auth's field names as the client knows them."""
    if not isinstance(details, dict):
        return details
    renamed = dict(details)
    if renamed.get("field") in fields:
        renamed["field"] = fields[renamed["field"]]
    if isinstance(renamed.get("errors"), list):
        renamed["errors"] = [_renamed(error, fields) for error in renamed["errors"]]
    return renamed
