"""One registry of services (shared/registry.py): the gateway's defaults, the services'
settings and apps, docker-compose.yml and the Kustomize base all agree with it."""

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from deploy import registry_check
from gateway.settings import GatewaySettings
from shared import registry
from shared.registry import GATEWAY, SERVICES, Service

REPOSITORY = Path(__file__).resolve().parents[2]
# What every service serves besides its API.
OWN_PATHS = {"/health", "/ready"}


def test_the_registry_names_exactly_the_service_packages() -> None:
    packages = sorted(p.parent.name for p in (REPOSITORY / "services").glob("*/__main__.py"))
    assert sorted(entry.name for entry in SERVICES) == packages
    for entry in SERVICES:
        assert entry.package == f"services.{entry.name}"
        assert (entry.migrations_dir / "env.py").is_file()
    names = [entry.name for entry in [GATEWAY, *SERVICES]]
    ports = [entry.port for entry in [GATEWAY, *SERVICES]]
    assert len(set(names)) == len(names)
    assert len(set(ports)) == len(ports)
    assert len({entry.migration_lock_key for entry in SERVICES}) == len(SERVICES)


def test_queues_and_routing_keys_come_from_the_event_handlers() -> None:
    assert registry.USERS.routing_keys == (
        "user.created",
        "user.email_changed",
        "user.email_verified",
    )
    assert registry.USERS.queue == "lyceum.users"
    subscription = registry.WEBHOOKS.subscription("test-run")
    assert subscription is not None
    assert subscription.queue == "test-run.webhooks"
    assert subscription.binding_keys == ("#",)


def test_each_service_settings_default_to_its_registry_entry() -> None:
    for entry in [GATEWAY, *SERVICES]:
        fields = entry.settings_class().model_fields
        assert fields["service_name"].default == entry.name
        assert fields["port"].default == entry.port


def test_the_gateway_defaults_are_the_registry() -> None:
    defaults = GatewaySettings.model_construct()
    fields = GatewaySettings.model_fields

    def default(name: str) -> Any:
        factory = fields[name].default_factory
        assert factory is not None
        return factory()  # type: ignore[call-arg]

    assert defaults.port == GATEWAY.port
    assert default("upstreams") == {e.name: f"http://127.0.0.1:{e.port}" for e in SERVICES}
    assert default("routes") == {p: e.name for e in SERVICES for p in e.prefixes}
    assert sorted(default("public_routes")) == sorted(r for e in SERVICES for r in e.public_routes)
    assert sorted(default("rate_limit_auth_routes")) == sorted(
        r for e in SERVICES for r in e.auth_rate_limited_routes
    )
    assert sorted(default("rate_limit_admin_routes")) == sorted(
        r for e in SERVICES for r in e.admin_routes
    )
    assert sorted(default("upload_routes")) == sorted(r for e in SERVICES for r in e.upload_routes)
    # WebSocket routes only to services that exist (none declares one yet: no `/ws` to chat).
    websockets = default("websocket_routes")
    assert websockets == registry.gateway_websocket_routes()
    assert set(websockets.values()) <= {entry.name for entry in SERVICES}


def _under(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in prefixes)


def test_prefixes_belong_to_one_service_and_nest_in_no_other() -> None:
    prefixes = [(prefix, entry.name) for entry in SERVICES for prefix in entry.prefixes]
    for prefix, owner in prefixes:
        assert prefix.startswith(registry.API_PREFIX + "/")
        for other, other_owner in prefixes:
            if other_owner != owner:
                assert not _under(other, (prefix,)), f"{other} ({other_owner}) is under {prefix}"


@pytest.mark.parametrize("entry", SERVICES, ids=lambda entry: entry.name)
def test_a_service_serves_its_api_under_its_prefixes_only(entry: Service, tmp_path: Path) -> None:
    """What the gateway routes to a service is what the service serves, and the routes the
    registry lists as public or limited are the service's own."""
    settings = entry.settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/{entry.name}.db")
    paths = set(entry.create_app(settings).openapi()["paths"])
    api = paths - OWN_PATHS
    assert api, f"{entry.name} serves no API"
    outside = sorted(path for path in api if not _under(path, entry.prefixes))
    assert outside == [], f"{entry.name} serves paths the gateway does not route to it"
    for prefix in entry.prefixes:
        assert any(_under(path, (prefix,)) for path in api), f"{prefix} routes to nothing"
    routes = [
        *entry.public_routes,
        *entry.auth_rate_limited_routes,
        *entry.admin_routes,
        *entry.upload_routes,
    ]
    for route in routes:
        _, _, pattern = route.partition(" ")
        assert _under(pattern.rstrip("/*") or "/", entry.prefixes), route
    for websocket in entry.websocket_routes:
        assert websocket.startswith("/")


def test_the_deploy_files_agree_with_the_registry() -> None:
    assert registry_check.problems() == []


# --- the check fails when a file disagrees ---------------------------------------------------


@pytest.fixture
def compose() -> dict[str, Any]:
    return registry_check.load_compose()


@pytest.fixture
def k8s() -> list[dict[str, Any]]:
    return registry_check.load_kustomize_base()


def _deployment(documents: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"] == name)


def test_a_compose_port_or_database_that_is_not_the_registry_is_found(
    compose: dict[str, Any],
) -> None:
    assert registry_check.compose_problems(compose) == []
    changed = copy.deepcopy(compose)
    changed["users"]["environment"]["PORT"] = "9002"
    changed["courses"]["environment"]["DATABASE_URL"] = "postgresql://db/lyceum_other"
    found = registry_check.compose_problems(changed)
    assert any("compose users: PORT 9002" in p for p in found)
    assert any("compose courses: DATABASE_URL" in p for p in found)


def test_a_compose_service_without_its_migration_first_is_found(compose: dict[str, Any]) -> None:
    changed = copy.deepcopy(compose)
    del changed["webhooks"]["depends_on"]["webhooks-migrate"]
    del changed["auth-migrate"]
    found = registry_check.compose_problems(changed)
    assert any("compose webhooks: does not wait for webhooks-migrate" in p for p in found)
    assert any("no auth-migrate" in p for p in found)


def test_compose_upstreams_missing_a_service_are_found(compose: dict[str, Any]) -> None:
    changed = copy.deepcopy(compose)
    upstreams = json.loads(changed["gateway"]["environment"]["UPSTREAMS"])
    del upstreams["courses"]
    changed["gateway"]["environment"]["UPSTREAMS"] = json.dumps(upstreams)
    assert any("UPSTREAMS" in p for p in registry_check.compose_problems(changed))


def test_a_deployment_with_one_replica_or_no_migration_is_found(
    k8s: list[dict[str, Any]],
) -> None:
    assert registry_check.kubernetes_problems(k8s) == []
    changed = copy.deepcopy(k8s)
    _deployment(changed, "users")["spec"]["replicas"] = 1
    pod = _deployment(changed, "courses")["spec"]["template"]["spec"]
    pod["initContainers"] = [c for c in pod["initContainers"] if c["name"] != "migrate"]
    found = registry_check.kubernetes_problems(changed)
    assert "k8s users: fewer than 2 replicas" in found
    assert any("k8s courses: no init container runs" in p for p in found)


def test_a_kubernetes_port_that_is_not_the_registry_is_found(k8s: list[dict[str, Any]]) -> None:
    changed = copy.deepcopy(k8s)
    container = _deployment(changed, "webhooks")["spec"]["template"]["spec"]["containers"][0]
    container["ports"][0]["containerPort"] = 9006
    found = registry_check.kubernetes_problems(changed)
    assert "k8s webhooks: containerPort is not 8006" in found
