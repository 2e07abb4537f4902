"""Users reaches the auth service of its own stack: the launcher gives it AUTH_URL in both
modes (the port moves with the stack), and the deployments name auth's Service."""

from pathlib import Path

import yaml

from launcher.embedded import _own_settings
from launcher.full import service_environment
from launcher.options import LaunchOptions
from services.users.settings import UsersSettings
from shared.registry import AUTH, CHAT, USERS, local_url

ROOT = Path(__file__).resolve().parents[2]


def test_the_launcher_gives_users_the_auth_service_of_its_stack() -> None:
    options = LaunchOptions(gateway_port=9100, host="127.0.0.1")
    expected = f"http://127.0.0.1:{9100 + AUTH.port_offset}"
    assert options.auth_url() == expected
    assert service_environment(options, USERS)["AUTH_URL"] == expected
    assert _own_settings(options, USERS) == {"auth_url": expected}
    assert "auth_url" not in _own_settings(options, CHAT)


def test_users_defaults_to_auth_on_this_machine_and_reads_auth_url() -> None:
    assert UsersSettings().auth_url == local_url(AUTH)
    assert UsersSettings(auth_url="http://auth:8001").auth_url == "http://auth:8001"


def test_compose_and_kubernetes_point_users_at_auth() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["users"]["environment"]["AUTH_URL"] == "http://auth:8001"
    environment = (ROOT / "deploy/k8s/base/lyceum.env").read_text().splitlines()
    assert "AUTH_URL=http://auth:8001" in environment
