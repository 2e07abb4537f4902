"""One OpenAPI document for the whole platform: every upstream's paths (already under the
gateway's `/api/v1/...` prefixes), one bearer security scheme, and an OAuth2 password flow
so that "Authorize" in Swagger UI logs in against the real auth service."""

import asyncio
import json
import time
from typing import Any

import httpx

from gateway.routing import RouteTable
from shared.logging import get_logger

log = get_logger(__name__)

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
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

    async def document(self) -> dict[str, Any]:
        async with self._lock:
            if self._document is None or time.monotonic() >= self._expires_at:
                self._document, complete = await self._build()
                ttl = self._cache_seconds if complete else self._retry_seconds
                self._expires_at = time.monotonic() + ttl
            return self._document

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
            "paths": {},
            "components": {"schemas": {}, "securitySchemes": SECURITY_SCHEMES},
        }
        schemas: dict[str, Any] = merged["components"]["schemas"]
        for name in names:
            spec = self._last_good.get(name)
            if spec is None:
                continue
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
                operation = dict(operation)
                if self._routes.is_public(method.upper(), path):
                    operation.pop("security", None)
                else:
                    operation["security"] = SECURITY
            result[method] = operation
        return result


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
