"""One OpenAPI document for the whole platform: every upstream's paths (already under the
gateway's `/api/v1/...` prefixes), one bearer security scheme, and an OAuth2 password flow
so that "Authorize" in Swagger UI logs in against the real auth service.

Each operation documents every answer a client can get through the gateway: the service's
own (see `shared.openapi`) and the gateway's, all errors in the one `ErrorEnvelope` schema.
The document also tells the gateway which methods each path takes, so that a method no
operation has is answered 405 (with `Allow`) before any token is asked for."""

import asyncio
import copy
import json
import re
import time
from typing import Any

import httpx

from gateway.routing import RouteTable
from shared.logging import get_logger
from shared.openapi import ERROR_SCHEMAS, add_error_responses, truthful_document

log = get_logger(__name__)

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
# Answers of the gateway itself, on any proxied operation: a malformed request (dot
# segments, a repeated Authorization header, a bad Content-Length), the rate limit, and an
# upstream that failed, is unavailable or did not answer in time.
GATEWAY_ERRORS = (400, 429, 500, 503, 504)
SECURITY: list[dict[str, list[str]]] = [{"bearerAuth": []}, {"oauth2": []}]
SECURITY_SCHEMES = {
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "An access token from POST /api/v1/auth/login, or an API token "
        "from POST /api/v1/auth/tokens",
    },
    "oauth2": {
        "type": "oauth2",
        "flows": {"password": {"tokenUrl": "/api/v1/auth/oauth2/token", "scopes": {}}},
        "description": "Log in with email (as username) and password",
    },
}


# The gateway's own operations that clients use (liveness, readiness and metrics are for
# operators and stay out of the document).
STATUS_SCHEMAS: dict[str, Any] = {
    "ServiceStatus": {
        "title": "ServiceStatus",
        "type": "object",
        "required": ["status", "version"],
        "properties": {
            "status": {
                "type": "string",
                "enum": ["ok", "unavailable"],
                "description": "Whether the service answered its liveness check",
            },
            "version": {
                "type": ["string", "null"],
                "description": "The version the service runs; null when it did not answer",
            },
        },
    },
    "PlatformStatus": {
        "title": "PlatformStatus",
        "type": "object",
        "required": ["status", "version", "uptime", "services"],
        "properties": {
            "status": {
                "type": "string",
                "enum": ["ok", "degraded"],
                "description": "ok when every service answers, else degraded",
            },
            "version": {"type": "string", "description": "The version the gateway runs"},
            "uptime": {
                "type": "number",
                "minimum": 0,
                "description": "Seconds since the gateway's process started",
            },
            "services": {
                "type": "object",
                "description": "Each service by name (auth, users, ...)",
                "additionalProperties": {"$ref": "#/components/schemas/ServiceStatus"},
            },
        },
    },
}
STATUS_OPERATION: dict[str, Any] = {
    "tags": ["status"],
    "summary": "The platform's version and uptime, and each service's state and version",
    "description": "Public. The services' states are at most a few seconds old "
    "(STATUS_CACHE_SECONDS). Counted in the default rate limit of the client's address.",
    "operationId": "platform_status",
    "responses": {
        "200": {
            "description": "The platform's status",
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/PlatformStatus"}}
            },
        }
    },
}


def gateway_paths() -> dict[str, Any]:
    operation = copy.deepcopy(STATUS_OPERATION)
    add_error_responses(operation, (429, 500, 503))
    return {"/status": {"get": operation}}


class MergedOpenApi:
    """Built on demand and kept for `cache_seconds`. A service whose document cannot be
    fetched is logged; its last good document (if any) stands in, and the merged document is
    rebuilt after `retry_seconds` instead, so that a service that was restarting shows up as
    soon as it is back."""

    def __init__(
        self,
        routes: RouteTable,
        client: httpx.AsyncClient,
        cache_seconds: float,
        *,
        retry_seconds: float = 2.0,
    ) -> None:
        self._routes = routes
        self._client = client
        self._cache_seconds = cache_seconds
        self._retry_seconds = min(retry_seconds, cache_seconds)
        self._document: dict[str, Any] | None = None
        self._expires_at = float("-inf")
        self._last_good: dict[str, dict[str, Any]] = {}
        self._lock = asyncio.Lock()
        self._methods: PathMethods | None = None
        self._refresh: asyncio.Task[dict[str, Any]] | None = None

    async def document(self) -> dict[str, Any]:
        async with self._lock:
            if self._document is None or time.monotonic() >= self._expires_at:
                self._document, complete = await self._build()
                self._methods = PathMethods(self._document)
                ttl = self._cache_seconds if complete else self._retry_seconds
                self._expires_at = time.monotonic() + ttl
            return self._document

    async def allowed_methods(self, path: str, *, wait: bool) -> frozenset[str] | None:
        """The methods the document has for a concrete path (upper case), or None when no
        documented path matches it, or when there is no document yet and `wait` is false:
        then nothing is fetched. Once there is one, a stale document is rebuilt in the
        background while this one answers, so that a slow upstream never holds up requests."""
        if self._methods is None:
            if not wait:
                return None
            await self.document()
        elif time.monotonic() >= self._expires_at and (
            self._refresh is None or self._refresh.done()
        ):
            self._refresh = asyncio.create_task(self.document())
        return self._methods.allowed(path) if self._methods is not None else None

    async def _build(self) -> tuple[dict[str, Any], bool]:
        """The merged document, and whether every service's own document was fetched."""
        names = list(self._routes.upstreams)
        fetched = await asyncio.gather(
            *(self._fetch(name, upstream.url) for name, upstream in self._routes.upstreams.items())
        )
        complete = all(spec is not None for spec in fetched)
        for name, spec in zip(names, fetched, strict=True):
            if spec is not None:
                self._last_good[name] = spec
        merged: dict[str, Any] = {
            "openapi": "3.1.0",
            "info": {
                "title": "Lyceum API",
                "version": "1.0.0",
                "description": "Every service behind the Lyceum gateway, in one document.",
            },
            "paths": gateway_paths(),
            "components": {
                "schemas": {**ERROR_SCHEMAS, **copy.deepcopy(STATUS_SCHEMAS)},
                "securitySchemes": SECURITY_SCHEMES,
            },
        }
        schemas: dict[str, Any] = merged["components"]["schemas"]
        for name in names:
            spec = self._last_good.get(name)
            if spec is None:
                continue
            # Already done by a service that installed shared.openapi; done here for any
            # other, and the error schemas are the gateway's: one copy, never renamed.
            spec = truthful_document(spec)
            for shared_name in ERROR_SCHEMAS:
                spec["components"]["schemas"].pop(shared_name, None)
            spec = _rename_conflicting_schemas(name, spec, schemas)
            schemas.update(spec.get("components", {}).get("schemas", {}))
            for path, operations in spec.get("paths", {}).items():
                if self._routes.resolve(path) is None or path in ("/health", "/ready"):
                    continue
                merged["paths"][path] = self._secure(path, operations)
        return merged, complete

    async def _fetch(self, name: str, url: str) -> dict[str, Any] | None:
        try:
            response = await self._client.get(f"{url}/openapi.json", timeout=5.0)
            response.raise_for_status()
            spec = response.json()
            if not isinstance(spec, dict):
                raise ValueError("not a JSON object")
            return spec
        except (httpx.HTTPError, ValueError) as exc:
            log.warning(
                "openapi_fetch_failed",
                service=name,
                url=url,
                error=repr(exc),
                using_last_good=name in self._last_good,
                retry_in_seconds=self._retry_seconds,
            )
            return None

    def _secure(self, path: str, operations: dict[str, Any]) -> dict[str, Any]:
        result = {}
        for method, operation in operations.items():
            if method in HTTP_METHODS:
                operation = dict(operation, responses=dict(operation.get("responses", {})))
                gateway_errors = set(GATEWAY_ERRORS)
                if self._routes.is_public(method.upper(), path):
                    operation.pop("security", None)
                else:
                    operation["security"] = SECURITY
                    gateway_errors.add(401)
                if "requestBody" in operation:
                    gateway_errors.add(413)
                gateway_errors -= {int(key) for key in operation["responses"] if key.isdigit()}
                add_error_responses(operation, gateway_errors)
                operation["responses"] = dict(sorted(operation["responses"].items()))
            result[method] = operation
        return result


class PathMethods:
    """Which methods the document has for a concrete path. A literal path segment takes
    precedence over a template (`/users/me` over `/users/{user_id}`), as OpenAPI says."""

    def __init__(self, document: dict[str, Any]) -> None:
        self._templates: list[tuple[re.Pattern[str], tuple[bool, ...], frozenset[str]]] = []
        for template, operations in document.get("paths", {}).items():
            segments = template.strip("/").split("/")
            pattern = "/".join(
                "[^/]+" if _is_parameter(segment) else re.escape(segment) for segment in segments
            )
            literal = tuple(not _is_parameter(segment) for segment in segments)
            methods = frozenset(method.upper() for method in operations if method in HTTP_METHODS)
            self._templates.append((re.compile(f"/{pattern}"), literal, methods))

    def allowed(self, path: str) -> frozenset[str] | None:
        matches = [
            (literal, methods)
            for pattern, literal, methods in self._templates
            if pattern.fullmatch(path)
        ]
        if not matches:
            return None
        best = max(literal for literal, _ in matches)
        return frozenset().union(*(methods for literal, methods in matches if literal == best))


def _is_parameter(segment: str) -> bool:
    return segment.startswith("{") and segment.endswith("}")


def _rename_conflicting_schemas(
    service: str, spec: dict[str, Any], merged: dict[str, Any]
) -> dict[str, Any]:
    """A schema name another service already uses for something else gets the service's
    prefix, and every `$ref` to it in this service's document follows."""
    own = spec.get("components", {}).get("schemas", {})
    clashes = [name for name, schema in own.items() if name in merged and merged[name] != schema]
    if not clashes:
        return spec
    text = json.dumps(spec)
    for name in clashes:
        text = text.replace(
            f'"#/components/schemas/{name}"', f'"#/components/schemas/{service}_{name}"'
        )
    renamed: dict[str, Any] = json.loads(text)
    schemas = renamed["components"]["schemas"]
    for name in clashes:
        schemas[f"{service}_{name}"] = schemas.pop(name)
    return renamed
