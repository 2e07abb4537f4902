"""Every service the launcher starts, with its port offset from the gateway's port."""

import importlib
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from shared.events.bus import Subscription
from shared.settings import ServiceSettings


@dataclass(frozen=True)
class ServiceEntry:
    name: str
    port_offset: int
    settings_path: str
    app_path: str

    @property
    def package(self) -> str:
        return self.app_path.split(":")[0].rsplit(".", 1)[0]

    def settings(self, **overrides: Any) -> ServiceSettings:
        module_name, class_name = self.settings_path.split(":")
        settings_class = getattr(importlib.import_module(module_name), class_name)
        settings: ServiceSettings = settings_class(**overrides)
        return settings

    def create_app(self, settings: ServiceSettings) -> FastAPI:
        module_name, factory_name = self.app_path.split(":")
        app: FastAPI = getattr(importlib.import_module(module_name), factory_name)(settings)
        return app

    def subscription(self, queue_prefix: str) -> Subscription | None:
        """The service's queue and bindings, so they exist before anybody publishes."""
        events = importlib.import_module(f"{self.package}.events")
        handlers = getattr(events, "handlers", {})
        if not handlers:
            return None
        return Subscription(f"{queue_prefix}.{self.name}", tuple(handlers))


SERVICES = [
    ServiceEntry("auth", 1, "services.auth.settings:AuthSettings", "services.auth.app:create_app"),
    ServiceEntry(
        "users", 2, "services.users.settings:UsersSettings", "services.users.app:create_app"
    ),
    ServiceEntry(
        "courses",
        4,
        "services.courses.settings:CoursesSettings",
        "services.courses.app:create_app",
    ),
    ServiceEntry(
        "webhooks",
        6,
        "services.webhooks.settings:WebhooksSettings",
        "services.webhooks.app:create_app",
    ),
]

GATEWAY = ServiceEntry("gateway", 0, "gateway.settings:GatewaySettings", "gateway.app:create_app")
