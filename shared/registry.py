"""Every service of the platform, once: name, port, database, queue, the events it consumes,
the gateway prefixes it owns and the routes the gateway treats specially.

The launcher, the gateway's defaults, the services' settings, the tests and the deploy
checks read this module; nothing else spells a service's port or prefix. Adding a service
is adding an entry to `SERVICES` (then the deploy files, which the registry test compares
with it)."""

import hashlib
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

    from shared.events.bus import Subscription
    from shared.settings import ServiceSettings

API_PREFIX = "/api/v1"
DEFAULT_DATABASE_PREFIX = "lyceum"
DEFAULT_QUEUE_PREFIX = "lyceum"


@dataclass(frozen=True)
class Component:
    """A process of the platform: what runs it and where it listens by default."""

    name: str
    port: int
    settings_path: str  # "module:SettingsClass"
    app_path: str  # "module:create_app"

    @property
    def package(self) -> str:
        """The package `python -m <package>` runs: `services.users`, `gateway`."""
        return self.app_path.split(":")[0].rsplit(".", 1)[0]

    @property
    def command(self) -> tuple[str, ...]:
        return ("python", "-m", self.package)

    @property
    def port_offset(self) -> int:
        """Its distance from the gateway's port, so that a whole stack can move together."""
        return self.port - GATEWAY.port

    def settings_class(self) -> "type[ServiceSettings]":
        module_name, class_name = self.settings_path.split(":")
        settings_class: type[ServiceSettings] = getattr(
            importlib.import_module(module_name), class_name
        )
        return settings_class

    def settings(self, **overrides: Any) -> "ServiceSettings":
        return self.settings_class()(**overrides)

    def create_app(self, settings: "ServiceSettings") -> "FastAPI":
        module_name, factory_name = self.app_path.split(":")
        app: FastAPI = getattr(importlib.import_module(module_name), factory_name)(settings)
        return app


@dataclass(frozen=True)
class Service(Component):
    """A service behind the gateway, with its own database and (if it consumes events) its
    own queue. Route entries are `"METHOD /path/pattern"` (`*` any method, shell-style
    wildcards in the path), as the gateway's settings take them (`shared/routes.py`)."""

    # Path prefixes the gateway sends to this service.
    prefixes: tuple[str, ...] = ()
    # Routes that need no token.
    public_routes: tuple[str, ...] = ()
    # Routes limited per client IP by RATE_LIMIT_AUTH (credentials change hands there).
    auth_rate_limited_routes: tuple[str, ...] = ()
    # Routes only admins use, limited per admin by RATE_LIMIT_ADMIN.
    admin_routes: tuple[str, ...] = ()
    # WebSocket paths the gateway relays to this service.
    websocket_routes: tuple[str, ...] = ()
    # Routes whose bodies the gateway limits by MAX_UPLOAD_BYTES instead of MAX_BODY_BYTES.
    upload_routes: tuple[str, ...] = ()
    # How long the gateway waits for the first byte of its answers, when the gateway's
    # UPSTREAM_TIMEOUT_SECONDS is too short (a reply generated whole before it is sent).
    upstream_timeout_seconds: float | None = None

    @property
    def database(self) -> str:
        """Its PostgreSQL database under the default prefix: `lyceum_users`."""
        return self.database_name(DEFAULT_DATABASE_PREFIX)

    def database_name(self, prefix: str) -> str:
        return f"{prefix}_{self.name}"

    @property
    def secret_key(self) -> str:
        """The key of its database URL in the deployment's secret: `USERS_DATABASE_URL`."""
        return f"{self.name.upper()}_DATABASE_URL"

    @property
    def queue(self) -> str | None:
        """Its durable queue under the default prefix, if it consumes events."""
        return self.queue_name(DEFAULT_QUEUE_PREFIX) if self.routing_keys else None

    def queue_name(self, prefix: str) -> str:
        return f"{prefix}.{self.name}"

    @property
    def routing_keys(self) -> tuple[str, ...]:
        """The binding keys of the events it consumes, read from its events module's
        `handlers`, so that they are written once, next to the code that handles them."""
        events = importlib.import_module(f"{self.package}.events")
        return tuple(getattr(events, "handlers", {}))

    def subscription(self, queue_prefix: str) -> "Subscription | None":
        """Its queue and bindings, so that they can be declared before anybody publishes."""
        from shared.events.bus import Subscription

        keys = self.routing_keys
        return Subscription(self.queue_name(queue_prefix), keys) if keys else None

    @property
    def migrations_dir(self) -> Path:
        module = importlib.import_module(self.package)
        assert module.__file__ is not None
        return Path(module.__file__).parent / "migrations"

    @property
    def migration_lock_key(self) -> int:
        """The PostgreSQL advisory lock that serialises this service's migrations."""
        return migration_lock_key(self.name)

    @property
    def migrate_command(self) -> tuple[str, ...]:
        return (*self.command, "migrate")


def migration_lock_key(name: str) -> int:
    """A stable signed 64-bit key (pg_advisory_lock's bigint) for one service's migrations."""
    digest = hashlib.sha256(f"lyceum.migrations.{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _api(*paths: str) -> tuple[str, ...]:
    return tuple(f"{API_PREFIX}{path}" for path in paths)


def _routes(*entries: str) -> tuple[str, ...]:
    """`"POST /auth/login"` -> `"POST /api/v1/auth/login"`."""
    return tuple(f"{method} {API_PREFIX}{path}" for method, path in (e.split(" ") for e in entries))


GATEWAY = Component("gateway", 8000, "gateway.settings:GatewaySettings", "gateway.app:create_app")

AUTH = Service(
    "auth",
    8001,
    "services.auth.settings:AuthSettings",
    "services.auth.app:create_app",
    prefixes=_api("/auth"),
    public_routes=_routes(
        "POST /auth/register",
        "POST /auth/login",
        "POST /auth/refresh",
        "GET /auth/.well-known/jwks.json",
        "POST /auth/oauth2/token",
        "POST /auth/verify-email",
        "POST /auth/password/forgot",
        "POST /auth/password/reset",
        "POST /auth/email/confirm",
    ),
    auth_rate_limited_routes=_routes(
        "POST /auth/register",
        "POST /auth/login",
        "POST /auth/refresh",
        "POST /auth/oauth2/token",
        "POST /auth/verify-email",
        "POST /auth/password/forgot",
        "POST /auth/password/reset",
        "POST /auth/email/confirm",
    ),
    admin_routes=_routes("POST /auth/accounts"),
)

USERS = Service(
    "users",
    8002,
    "services.users.settings:UsersSettings",
    "services.users.app:create_app",
    prefixes=_api("/users"),
    admin_routes=_routes("* /users", "* /users/*-*-*-*-*"),
)

CHAT = Service(
    "chat",
    8003,
    "services.chat.settings:ChatSettings",
    "services.chat.app:create_app",
    prefixes=_api("/conversations", "/messages", "/chat", "/models", "/prompts"),
    websocket_routes=("/ws",),
    upstream_timeout_seconds=300.0,
)

COURSES = Service(
    "courses",
    8004,
    "services.courses.settings:CoursesSettings",
    "services.courses.app:create_app",
    prefixes=_api("/courses", "/enrollments", "/progress"),
    public_routes=_routes("GET /courses", "GET /courses/*"),
)

DOCUMENTS = Service(
    "documents",
    8005,
    "services.documents.settings:DocumentsSettings",
    "services.documents.app:create_app",
    prefixes=_api("/documents", "/files"),
    upload_routes=_routes("POST /documents", "POST /files/upload"),
)

WEBHOOKS = Service(
    "webhooks",
    8006,
    "services.webhooks.settings:WebhooksSettings",
    "services.webhooks.app:create_app",
    prefixes=_api("/webhooks"),
)

SERVICES: tuple[Service, ...] = (AUTH, USERS, CHAT, COURSES, DOCUMENTS, WEBHOOKS)
# The JWKS every verifier reads is auth's.
JWKS_PATH = f"{API_PREFIX}/auth/.well-known/jwks.json"


def component(name: str) -> Component:
    """A service or the gateway, by name."""
    return GATEWAY if name == GATEWAY.name else service(name)


def service(name: str) -> Service:
    for entry in SERVICES:
        if entry.name == name:
            return entry
    raise KeyError(f"no service named {name!r} in the registry")


def local_url(component: Component, host: str = "127.0.0.1") -> str:
    return f"http://{host}:{component.port}"


def gateway_upstreams(host: str = "127.0.0.1") -> dict[str, str]:
    """Each service's URL by name, as the gateway's UPSTREAMS takes them."""
    return {entry.name: local_url(entry, host) for entry in SERVICES}


def gateway_routes() -> dict[str, str]:
    """Each prefix and the service that owns it, as the gateway's ROUTES takes them."""
    return {prefix: entry.name for entry in SERVICES for prefix in entry.prefixes}


def gateway_websocket_routes() -> dict[str, str]:
    return {path: entry.name for entry in SERVICES for path in entry.websocket_routes}


def gateway_upstream_timeouts() -> dict[str, float]:
    """The services that need longer than the gateway's default to start answering."""
    return {
        entry.name: entry.upstream_timeout_seconds
        for entry in SERVICES
        if entry.upstream_timeout_seconds is not None
    }


def public_routes() -> list[str]:
    return [route for entry in SERVICES for route in entry.public_routes]


def auth_rate_limited_routes() -> list[str]:
    return [route for entry in SERVICES for route in entry.auth_rate_limited_routes]


def admin_routes() -> list[str]:
    return [route for entry in SERVICES for route in entry.admin_routes]


def gateway_upload_routes() -> list[str]:
    """The routes the gateway's UPLOAD_ROUTES takes: limited by MAX_UPLOAD_BYTES."""
    return [route for entry in SERVICES for route in entry.upload_routes]
