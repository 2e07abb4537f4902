"""A service's OpenAPI document, made to say what the service really answers.

FastAPI documents a 422 on every operation that takes input; Lyceum never sends one
(validation errors are 400) and sends errors FastAPI knows nothing about, all in the one
error envelope. `install_openapi(app)` replaces the 422s with the error answers each
operation can give, every one described by the `ErrorEnvelope` schema:

- 400 VALIDATION_ERROR: operations that take parameters or a body;
- 401 and 403: operations that take a token (a missing, invalid, expired or revoked token;
  a role or an owner that does not allow the request);
- 404 RESOURCE_NOT_FOUND: operations with path parameters, and operations that take a token
  (they act on the caller's own records, which may not exist or not exist yet);
- 409 CONFLICT: operations that change something (POST, PUT, PATCH, DELETE);
- 413 and 415: operations that take a body;
- 500 INTERNAL_ERROR: every operation.

The schemas are corrected where Pydantic's JSON schema says less than its validation does:
a constraint on a type with its own validator (`Field(ge=1)` on `shared.fields.Integer`) keeps
Pydantic's name (`ge`), which JSON Schema does not know, so it becomes `minimum`; a field
that cannot be null (`shared.fields.Omittable`) loses the `default: null` that stands for
"left out"; an email (`format: email`) gets the pattern of the addresses `shared.emails`
accepts.

A route that answers more than that says so with FastAPI's `responses=`, for example
`@router.post("/login", responses=error_responses(401, 403))`: the answer gets the envelope
schema here. The gateway adds what it answers itself (429, 502, 503, 504, ...) when it merges
the documents (`gateway/openapi.py`)."""

import copy
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import FastAPI

from shared import emails

ENVELOPE_REF = "#/components/schemas/ErrorEnvelope"
WRITE_METHODS = {"post", "put", "patch", "delete"}
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
# FastAPI's 422 and its schemas: Lyceum answers validation errors with 400.
FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")

# Pydantic's names of the numeric constraints it leaves untranslated, and JSON Schema's.
CONSTRAINT_KEYWORDS = {
    "ge": "minimum",
    "le": "maximum",
    "gt": "exclusiveMinimum",
    "lt": "exclusiveMaximum",
    "multiple_of": "multipleOf",
}


# An email (`format: email`, `shared.emails.Email`) is described by the one rule's pattern.
EMAIL_PATTERN = emails.PATTERN
EMAIL_MAX_LENGTH = emails.MAX_LENGTH
EMAIL_DESCRIPTION = emails.DESCRIPTION

ERROR_DESCRIPTIONS = {
    400: "VALIDATION_ERROR: a parameter or the body is not valid (`details` names the field)",
    401: "AUTHENTICATION_REQUIRED, INVALID_TOKEN or TOKEN_EXPIRED: no valid credentials",
    403: "PERMISSION_DENIED: the caller's role or ownership does not allow this",
    404: "RESOURCE_NOT_FOUND: no such resource",
    405: "METHOD_NOT_ALLOWED: the `Allow` header lists the methods this path takes",
    409: "CONFLICT: the request conflicts with the current state of the resource",
    413: "PAYLOAD_TOO_LARGE: the body is over the size limit",
    415: "UNSUPPORTED_MEDIA_TYPE: the body is not in a media type this operation takes",
    429: "RATE_LIMIT_EXCEEDED (or a more specific code such as QUOTA_EXCEEDED): "
    "try again after `Retry-After` seconds",
    500: "INTERNAL_ERROR: an unexpected error; the request id lets an operator find it",
    502: "SERVICE_UNAVAILABLE or PROVIDER_ERROR: an upstream answered with an error",
    503: "SERVICE_UNAVAILABLE: the service is not available at the moment",
    504: "UPSTREAM_TIMEOUT: the service did not answer in time",
}

ERROR_SCHEMAS: dict[str, Any] = {
    "ErrorEnvelope": {
        "title": "ErrorEnvelope",
        "description": "Every error, from any service or from the gateway, has this shape.",
        "type": "object",
        "required": ["status", "error", "request_id", "timestamp"],
        "properties": {
            "status": {"type": "string", "const": "error"},
            "error": {"$ref": "#/components/schemas/ErrorBody"},
            "request_id": {
                "type": "string",
                "description": "Also in the X-Request-ID header; lets an operator find the "
                "request in the logs",
            },
            "timestamp": {"type": "string", "format": "date-time"},
        },
    },
    "ErrorBody": {
        "title": "ErrorBody",
        "type": "object",
        "required": ["code", "message"],
        "properties": {
            "code": {
                "type": "string",
                "description": "What a client acts on: VALIDATION_ERROR, "
                "AUTHENTICATION_REQUIRED, INVALID_TOKEN, TOKEN_EXPIRED, PERMISSION_DENIED, "
                "RESOURCE_NOT_FOUND, METHOD_NOT_ALLOWED, CONFLICT, PAYLOAD_TOO_LARGE, "
                "UNSUPPORTED_MEDIA_TYPE, RATE_LIMIT_EXCEEDED, SERVICE_UNAVAILABLE, "
                "UPSTREAM_TIMEOUT, INTERNAL_ERROR, or a service's more specific code",
                "examples": ["VALIDATION_ERROR"],
            },
            "message": {"type": "string", "description": "For people, not for programs"},
            "details": {
                "description": "More about the error, e.g. the field and the issue of a "
                "VALIDATION_ERROR"
            },
        },
    },
}


def error_response(status: int, description: str | None = None) -> dict[str, Any]:
    """The OpenAPI response object of one error answer."""
    return {
        "description": description or ERROR_DESCRIPTIONS.get(status, "An error"),
        "content": {"application/json": {"schema": {"$ref": ENVELOPE_REF}}},
    }


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """For a route's `responses=`: the error answers it gives beyond the defaults above."""
    return {
        status: {"description": ERROR_DESCRIPTIONS.get(status, "An error")} for status in statuses
    }


def default_error_statuses(method: str, operation: dict[str, Any]) -> set[int]:
    """The error answers any Lyceum service gives for an operation of this shape."""
    parameters = operation.get("parameters") or []
    has_body = "requestBody" in operation
    statuses = {500}
    if parameters or has_body:
        statuses.add(400)
    if operation.get("security"):
        statuses |= {401, 403, 404}
    if any(parameter.get("in") == "path" for parameter in parameters):
        statuses.add(404)
    if method in WRITE_METHODS:
        statuses.add(409)
    if has_body:
        statuses |= {413, 415}
    return statuses


def add_error_responses(operation: dict[str, Any], statuses: Iterable[int]) -> None:
    """Documents each status as an envelope answer, keeping a description the route gave."""
    responses: dict[str, Any] = operation.setdefault("responses", {})
    for status in statuses:
        key = str(status)
        given = responses.get(key) or {}
        responses[key] = error_response(status, given.get("description"))


def _admits_null(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    if kind == "null" or (isinstance(kind, list) and "null" in kind):
        return True
    choices = schema.get("anyOf", []) + schema.get("oneOf", [])
    return not kind and (not choices or any(_admits_null(choice) for choice in choices))


def _correct_schema(node: Any) -> None:
    """Fixes, in place and at any depth, what Pydantic's JSON schema gets wrong (above)."""
    if isinstance(node, list):
        for item in node:
            _correct_schema(item)
        return
    if not isinstance(node, dict):
        return
    for pydantic_name, keyword in CONSTRAINT_KEYWORDS.items():
        if pydantic_name in node and ("type" in node or "anyOf" in node):
            node.setdefault(keyword, node.pop(pydantic_name))
    if node.get("format") == "email" and "pattern" not in node:
        node["pattern"] = EMAIL_PATTERN
        node.setdefault("maxLength", EMAIL_MAX_LENGTH)
        node.setdefault("description", EMAIL_DESCRIPTION)
    properties = node.get("properties")
    if isinstance(properties, dict):
        for field in properties.values():
            if (
                isinstance(field, dict)
                and field.get("default", 0) is None
                and "$ref" not in field
                and not _admits_null(field)
            ):
                field.pop("default")
    for key, value in node.items():
        if key not in ("example", "examples", "default", "const", "enum"):
            _correct_schema(value)


def truthful_document(document: dict[str, Any]) -> dict[str, Any]:
    """A copy of a FastAPI document without 422s and with the error answers documented."""
    document = copy.deepcopy(document)
    for operations in document.get("paths", {}).values():
        for method, operation in operations.items():
            if method not in HTTP_METHODS:
                continue
            for parameter in operation.get("parameters", []):
                _correct_schema(parameter.get("schema"))
            responses: dict[str, Any] = operation.setdefault("responses", {})
            responses.pop("422", None)
            declared = {int(key) for key in responses if key.isdigit() and int(key) >= 400}
            add_error_responses(
                operation, sorted(declared | default_error_statuses(method, operation))
            )
            operation["responses"] = dict(sorted(responses.items()))
    schemas: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})
    for name in FASTAPI_VALIDATION_SCHEMAS:
        schemas.pop(name, None)
    _correct_schema(schemas)
    schemas.update(copy.deepcopy(ERROR_SCHEMAS))
    return document


def install_openapi(app: FastAPI) -> None:
    """Makes `app.openapi()` (and so `/openapi.json`) serve the truthful document."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = truthful_document(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
