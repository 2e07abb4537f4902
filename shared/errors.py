"""The one error envelope, and the handlers that put every failure into it."""

from datetime import UTC, datetime
from email.message import Message as MimeHeader
from typing import Any

from fastapi import FastAPI, Request, params
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.logging import get_logger
from shared.request_id import current_request_id

log = get_logger(__name__)

CODE_BY_STATUS = {
    400: "VALIDATION_ERROR",
    401: "AUTHENTICATION_REQUIRED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RATE_LIMIT_EXCEEDED",
    500: "INTERNAL_ERROR",
    502: "SERVICE_UNAVAILABLE",
    503: "SERVICE_UNAVAILABLE",
    504: "UPSTREAM_TIMEOUT",
}

DEFAULT_MESSAGES = {
    "VALIDATION_ERROR": "Invalid input data",
    "AUTHENTICATION_REQUIRED": "Authentication required",
    "INVALID_TOKEN": "Invalid token",
    "TOKEN_EXPIRED": "Token has expired",
    "PERMISSION_DENIED": "Permission denied",
    "RESOURCE_NOT_FOUND": "Resource not found",
    "METHOD_NOT_ALLOWED": "Method not allowed",
    "CONFLICT": "Conflict",
    "PAYLOAD_TOO_LARGE": "Payload too large",
    "UNSUPPORTED_MEDIA_TYPE": "Unsupported media type",
    "RATE_LIMIT_EXCEEDED": "Rate limit exceeded",
    "SERVICE_UNAVAILABLE": "Service unavailable",
    "UPSTREAM_TIMEOUT": "Upstream timed out",
    "INTERNAL_ERROR": "Internal server error",
    # Chat's: the AI provider failed, or the caller's usage quota is spent.
    "PROVIDER_ERROR": "The AI provider failed",
    "QUOTA_EXCEEDED": "Quota exceeded",
}


class ApiError(Exception):
    """An error that reaches the client in the envelope."""

    status_code = 500
    code = "INTERNAL_ERROR"

    def __init__(
        self,
        message: str | None = None,
        *,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or DEFAULT_MESSAGES[self.code]
        self.details = details
        self.headers = headers
        super().__init__(self.message)


class ValidationFailed(ApiError):
    status_code, code = 400, "VALIDATION_ERROR"


class AuthenticationRequired(ApiError):
    status_code, code = 401, "AUTHENTICATION_REQUIRED"


class InvalidToken(ApiError):
    status_code, code = 401, "INVALID_TOKEN"


class TokenExpired(ApiError):
    status_code, code = 401, "TOKEN_EXPIRED"


class PermissionDenied(ApiError):
    status_code, code = 403, "PERMISSION_DENIED"


class NotFound(ApiError):
    status_code, code = 404, "RESOURCE_NOT_FOUND"


class MethodNotAllowed(ApiError):
    status_code, code = 405, "METHOD_NOT_ALLOWED"


class Conflict(ApiError):
    status_code, code = 409, "CONFLICT"


class PayloadTooLarge(ApiError):
    status_code, code = 413, "PAYLOAD_TOO_LARGE"


class UnsupportedMediaType(ApiError):
    status_code, code = 415, "UNSUPPORTED_MEDIA_TYPE"


class RateLimitExceeded(ApiError):
    status_code, code = 429, "RATE_LIMIT_EXCEEDED"


class QuotaExceeded(ApiError):
    status_code, code = 429, "QUOTA_EXCEEDED"


class ProviderError(ApiError):
    status_code, code = 502, "PROVIDER_ERROR"


class ServiceUnavailable(ApiError):
    status_code, code = 503, "SERVICE_UNAVAILABLE"


class UpstreamTimeout(ApiError):
    status_code, code = 504, "UPSTREAM_TIMEOUT"


def utc_timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def error_body(code: str, message: str | None = None, details: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message or DEFAULT_MESSAGES[code]}
    if details is not None:
        error["details"] = details
    return {
        "status": "error",
        "error": error,
        "request_id": current_request_id(),
        "timestamp": utc_timestamp(),
    }


def error_response(
    status_code: int,
    code: str,
    message: str | None = None,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(code, message, details), status_code, headers=headers)


def _validation_details(exc: RequestValidationError) -> dict[str, Any]:
    errors = exc.errors()
    first = errors[0] if errors else {}
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
    issue = str(first.get("msg", "Invalid value"))
    if first.get("type") == "json_invalid":
        return {"field": "body", "issue": "Malformed JSON"}
    details: dict[str, Any] = {"field": ".".join(location) or "body", "issue": issue}
    if len(errors) > 1:
        details["errors"] = [
            {
                "field": ".".join(
                    str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path")
                ),
                "issue": str(e.get("msg")),
            }
            for e in errors
        ]
    return details


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status_code, exc.code, exc.message, exc.details, exc.headers)


def _is_json(content_type: str) -> bool:
    header = MimeHeader()
    header["content-type"] = content_type
    subtype = header.get_content_subtype()
    return header.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def _takes_form(request: Request) -> bool:
    body_field = getattr(request.scope.get("route"), "body_field", None)
    return body_field is not None and isinstance(body_field.field_info, params.Form)


def _unsupported_body_type(request: Request, exc: RequestValidationError) -> bool:
    """Whether the body failed validation because FastAPI did not read it as JSON: the
    client declared a content type that is neither JSON nor a form the route takes."""
    content_type = request.headers.get("content-type")
    if not content_type or _is_json(content_type) or _takes_form(request):
        return False
    return any(tuple(error.get("loc", ()))[:1] == ("body",) for error in exc.errors())


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    if _unsupported_body_type(request, exc):
        return error_response(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            details={"field": "content-type", "issue": "Send the body as application/json"},
        )
    return error_response(400, "VALIDATION_ERROR", details=_validation_details(exc))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = CODE_BY_STATUS.get(exc.status_code, "INTERNAL_ERROR")
    message = exc.detail if isinstance(exc.detail, str) and exc.status_code < 500 else None
    if exc.status_code == 404 and message == "Not Found":
        message = None
    headers = getattr(exc, "headers", None)
    if exc.status_code == 405:
        if message == "Method Not Allowed":
            message = None
        headers = {**(headers or {}), "Allow": ", ".join(sorted(_allowed_methods(request)))}
    return error_response(exc.status_code, code, message, headers=headers)


STANDARD_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> set[str]:
    """Every method some route takes at this path: Starlette's own 405 names only the
    methods of the first route whose path matched. Asked of each route by `matches`, which
    included routers answer for their own routes too."""
    routes = request.app.router.routes
    return {
        method
        for method in STANDARD_METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes
        )
    }


class UnhandledErrorMiddleware:
    """Turns any exception nobody handled into a 500 envelope, inside the request-id
    middleware so that the answer and the log line both carry the request id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response_started = False

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unhandled_error", path=scope.get("path"), method=scope.get("method"))
            if response_started:
                raise
            await error_response(500, "INTERNAL_ERROR")(scope, receive, send)


# SQLSTATE class 23 (integrity constraint violation): unique 23505, foreign key 23503.
_CONFLICT_SQLSTATES = {"23505", "23503"}
_CONFLICT_SQLITE_MESSAGES = ("UNIQUE constraint failed", "FOREIGN KEY constraint failed")


def is_conflict(exc: IntegrityError) -> bool:
    """A unique or foreign-key violation: the request collided with other data (a
    duplicate, or a row another request deleted meanwhile), not a defect."""
    original = exc.orig
    sqlstate = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    if sqlstate is None:
        # asyncpg's error travels as the cause of SQLAlchemy's adapted DBAPI error.
        sqlstate = getattr(getattr(original, "__cause__", None), "sqlstate", None)
    if sqlstate is not None:
        return str(sqlstate) in _CONFLICT_SQLSTATES
    return any(message in str(original) for message in _CONFLICT_SQLITE_MESSAGES)


async def _integrity_error(request: Request, exc: Exception) -> JSONResponse:
    """Where a commit or flush breaks a constraint: the one place such a race becomes 409."""
    assert isinstance(exc, IntegrityError)
    if is_conflict(exc):
        log.info("integrity_conflict", error=str(exc.orig))
        return error_response(409, "CONFLICT", "Conflicts with the current state of the resource")
    log.error("integrity_error", error=str(exc.orig))
    return error_response(500, "INTERNAL_ERROR")


def install_error_handlers(app: FastAPI) -> None:
    """The envelope for every error; call before adding RequestIdMiddleware."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(IntegrityError, _integrity_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(UnhandledErrorMiddleware)
