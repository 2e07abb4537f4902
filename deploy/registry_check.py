"""Do the deployment files agree with the registry of services (shared/registry.py)?

    python -m deploy.registry_check [--compose COMPOSE_JSON] [--k8s RENDERED_YAML]

Names, ports, commands, databases and upstreams in docker-compose.yml and in the Kustomize
base must be the registry's; every service runs its `migrate` step before it starts, and
every Deployment runs two replicas or more. Without arguments the files are read as they
are in the repository (as tests/unit/test_registry.py does); deploy/validate.sh passes the
output of `docker-compose config --format json` and of `kubectl kustomize` instead, for the
base and for each overlay (`--min-replicas 1` for overlays/dev, which runs one pod of
each). Prints one line per disagreement and exits 1 if there is any.

A service's DATABASE_URL is either the base's key of the Secret lyceum-secrets or, in the
overlays on operators, a URL made of other variables (`postgresql+asyncpg://$(USER):...`)
that ends in the service's database; deploy/k8s_check.py checks where those come from.
"""

import argparse
import json
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from shared.registry import AUTH, GATEWAY, JWKS_PATH, SERVICES, Component, Service

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
K8S_BASE = ROOT / "deploy" / "k8s" / "base"
POSTGRES_INIT = ROOT / "deploy" / "compose" / "postgres-init.sh"
MIN_REPLICAS = 2

Document = dict[str, Any]


def in_network_upstreams() -> dict[str, str]:
    """UPSTREAMS where every service is reached by its name (compose and Kubernetes)."""
    return {entry.name: f"http://{entry.name}:{entry.port}" for entry in SERVICES}


def in_network_jwks_url() -> str:
    return f"http://{AUTH.name}:{AUTH.port}{JWKS_PATH}"


# --- reading the files -------------------------------------------------------------------


def load_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The services of a compose file, or of `docker-compose config --format json`."""
    text = path.read_text()
    document = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    services: dict[str, Any] = document.get("services") or {}
    return services


def load_documents(path: Path) -> list[Document]:
    return [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]


def load_kustomize_base(base: Path = K8S_BASE) -> list[Document]:
    """The base's resources as written, with the generated ConfigMap (without its hash)."""
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text())
    documents: list[Document] = []
    for resource in kustomization.get("resources", []):
        documents += load_documents(base / resource)
    for generator in kustomization.get("configMapGenerator", []):
        data: dict[str, str] = {}
        for env_file in generator.get("envs", []):
            for line in (base / env_file).read_text().splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    key, _, value = line.partition("=")
                    data[key.strip()] = value
        documents.append(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]}}
            | {"data": data}
        )
    return documents


# --- docker-compose ----------------------------------------------------------------------


def _environment(spec: Mapping[str, Any]) -> dict[str, str]:
    env = spec.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): str(v) for k, v in env.items()}


def compose_problems(services: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    known = {entry.name for entry in [GATEWAY, *SERVICES]}
    known |= {f"{entry.name}-migrate" for entry in SERVICES}
    for name, spec in services.items():
        command = list(spec.get("command") or [])
        if command[:2] == ["python", "-m"] and name not in known:
            problems.append(f"compose {name}: not in the registry")

    components: list[Component] = [GATEWAY, *SERVICES]
    for entry in components:
        spec = services.get(entry.name)
        if spec is None:
            problems.append(f"compose: no service {entry.name}")
            continue
        env = _environment(spec)
        if list(spec.get("command") or []) != list(entry.command):
            problems.append(f"compose {entry.name}: command is not {list(entry.command)}")
        if env.get("PORT") != str(entry.port):
            problems.append(f"compose {entry.name}: PORT {env.get('PORT')} is not {entry.port}")
        if env.get("JWKS_URL") != in_network_jwks_url():
            problems.append(f"compose {entry.name}: JWKS_URL is not {in_network_jwks_url()}")
        if isinstance(entry, Service):
            problems += _compose_service_problems(services, entry, spec, env)

    gateway_env = _environment(services.get(GATEWAY.name) or {})
    try:
        upstreams = json.loads(gateway_env.get("UPSTREAMS", "{}"))
    except json.JSONDecodeError:
        upstreams = None
    if upstreams != in_network_upstreams():
        problems.append(f"compose gateway: UPSTREAMS is not {json.dumps(in_network_upstreams())}")
    gateway_depends = (services.get(GATEWAY.name) or {}).get("depends_on") or {}
    for entry in SERVICES:
        if entry.name not in gateway_depends:
            problems.append(f"compose gateway: does not wait for {entry.name}")
    return problems


def _compose_service_problems(
    services: Mapping[str, Any], entry: Service, spec: Mapping[str, Any], env: dict[str, str]
) -> list[str]:
    problems = []
    database_url = env.get("DATABASE_URL", "")
    if not database_url.endswith(f"/{entry.database}"):
        problems.append(f"compose {entry.name}: DATABASE_URL is not its database {entry.database}")
    migrate_name = f"{entry.name}-migrate"
    migrate = services.get(migrate_name)
    if migrate is None:
        problems.append(f"compose: no {migrate_name} (the migration before {entry.name} starts)")
        return problems
    if list(migrate.get("command") or []) != list(entry.migrate_command):
        problems.append(f"compose {migrate_name}: command is not {list(entry.migrate_command)}")
    if _environment(migrate).get("DATABASE_URL") != database_url:
        problems.append(f"compose {migrate_name}: DATABASE_URL differs from {entry.name}'s")
    condition = ((spec.get("depends_on") or {}).get(migrate_name) or {}).get("condition")
    if condition != "service_completed_successfully":
        problems.append(
            f"compose {entry.name}: does not wait for {migrate_name} "
            "(depends_on condition service_completed_successfully)"
        )
    return problems


def postgres_init_problems(script: Path = POSTGRES_INIT) -> list[str]:
    text = script.read_text()
    return [
        f"{script.relative_to(ROOT)}: does not create {entry.database}"
        for entry in SERVICES
        if re.search(rf"\b{re.escape(entry.database)}\b", text) is None
    ]


# --- Kubernetes --------------------------------------------------------------------------


def _by_kind(documents: Iterable[Document]) -> dict[str, dict[str, Document]]:
    found: dict[str, dict[str, Document]] = {}
    for document in documents:
        found.setdefault(document.get("kind", ""), {})[document["metadata"]["name"]] = document
    return found


def _env(container: Mapping[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container.get("env", [])}


def _secret_key(container: Mapping[str, Any], name: str) -> Any:
    return _env(container).get(name, {}).get("valueFrom", {}).get("secretKeyRef", {}).get("key")


def _definition(container: Mapping[str, Any], name: str) -> Any:
    """What a variable is, with the definitions of the $(VAR)s its value is made of, so that
    two containers' can be compared."""
    env = _env(container)
    variable = env.get(name)
    if variable is None:
        return None
    value = variable.get("value")
    if value is None:
        return variable.get("valueFrom")
    parts = re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", value)
    return value, [
        env.get(part, {}).get("valueFrom") or env.get(part, {}).get("value") for part in parts
    ]


def _database_url_problem(entry: Service, container: Mapping[str, Any]) -> str | None:
    env = _env(container)
    value = env.get("DATABASE_URL", {}).get("value")
    if value is not None:
        if "$(" in value and value.split("?")[0].endswith(f"/{entry.database}"):
            return None
        return f"DATABASE_URL is not made of its variables and its database {entry.database}"
    if _secret_key(container, "DATABASE_URL") != entry.secret_key:
        return f"DATABASE_URL is not lyceum-secrets/{entry.secret_key}"
    return None


def kubernetes_problems(
    documents: Iterable[Document], min_replicas: int = MIN_REPLICAS
) -> list[str]:
    problems: list[str] = []
    kinds = _by_kind(documents)
    deployments = kinds.get("Deployment", {})
    services = kinds.get("Service", {})
    autoscalers = {
        hpa["spec"]["scaleTargetRef"]["name"]: hpa
        for hpa in kinds.get("HorizontalPodAutoscaler", {}).values()
    }
    components: list[Component] = [GATEWAY, *SERVICES]
    expected = {entry.name for entry in components}
    for name in sorted(set(deployments) - expected):
        # A Lyceum process (`python -m ...`), not another program an overlay runs (MinIO).
        pod = deployments[name]["spec"]["template"]["spec"]
        if any(list(c.get("command") or [])[:2] == ["python", "-m"] for c in pod["containers"]):
            problems.append(f"k8s Deployment {name}: not in the registry")

    for entry in components:
        deployment = deployments.get(entry.name)
        if deployment is None:
            problems.append(f"k8s: no Deployment {entry.name}")
            continue
        spec = deployment["spec"]
        replicas = spec.get("replicas", 1)
        hpa = autoscalers.get(entry.name)
        least = hpa["spec"].get("minReplicas", 1) if hpa else replicas
        if min(replicas, least) < min_replicas:
            problems.append(f"k8s {entry.name}: fewer than {min_replicas} replicas")
        pod = spec["template"]["spec"]
        containers = {c["name"]: c for c in pod.get("containers", [])}
        container = containers.get(entry.name)
        if container is None:
            problems.append(f"k8s {entry.name}: no container named {entry.name}")
            continue
        if list(container.get("command") or []) != list(entry.command):
            problems.append(f"k8s {entry.name}: command is not {list(entry.command)}")
        port = _env(container).get("PORT", {}).get("value")
        if port != str(entry.port):
            problems.append(f"k8s {entry.name}: PORT {port} is not {entry.port}")
        if [p.get("containerPort") for p in container.get("ports", [])] != [entry.port]:
            problems.append(f"k8s {entry.name}: containerPort is not {entry.port}")
        service = services.get(entry.name)
        if service is None:
            problems.append(f"k8s: no Service {entry.name}")
        elif [p.get("port") for p in service["spec"].get("ports", [])] != [entry.port]:
            problems.append(f"k8s Service {entry.name}: port is not {entry.port}")
        if isinstance(entry, Service):
            problems += _k8s_service_problems(entry, pod, container)

    config = next(
        (c for n, c in kinds.get("ConfigMap", {}).items() if n.startswith("lyceum-config")), None
    )
    if config is None:
        problems.append("k8s: no ConfigMap lyceum-config")
    else:
        data = config.get("data") or {}
        try:
            upstreams = json.loads(data.get("UPSTREAMS", "{}"))
        except json.JSONDecodeError:
            upstreams = None
        if upstreams != in_network_upstreams():
            problems.append(f"k8s ConfigMap: UPSTREAMS is not {json.dumps(in_network_upstreams())}")
        if data.get("JWKS_URL") != in_network_jwks_url():
            problems.append(f"k8s ConfigMap: JWKS_URL is not {in_network_jwks_url()}")
    return problems


def _k8s_service_problems(
    entry: Service, pod: Mapping[str, Any], container: Mapping[str, Any]
) -> list[str]:
    problems = []
    database_url = _database_url_problem(entry, container)
    if database_url:
        problems.append(f"k8s {entry.name}: {database_url}")
    migrations = [
        c
        for c in pod.get("initContainers", [])
        if list(c.get("command") or []) == list(entry.migrate_command)
    ]
    if not migrations:
        problems.append(
            f"k8s {entry.name}: no init container runs {' '.join(entry.migrate_command)}"
        )
    for migration in migrations:
        if _definition(migration, "DATABASE_URL") != _definition(container, "DATABASE_URL"):
            problems.append(f"k8s {entry.name}: the migration's DATABASE_URL is not the service's")
        if migration.get("image") != container.get("image"):
            problems.append(f"k8s {entry.name}: the migration runs another image")
    return problems


# --- all of it ---------------------------------------------------------------------------


def problems(
    compose: Mapping[str, Any] | None = None,
    k8s: Iterable[Document] | None = None,
    min_replicas: int = MIN_REPLICAS,
) -> list[str]:
    return (
        compose_problems(load_compose() if compose is None else compose)
        + postgres_init_problems()
        + kubernetes_problems(load_kustomize_base() if k8s is None else k8s, min_replicas)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.registry_check")
    parser.add_argument("--compose", type=Path, help="docker-compose config --format json")
    parser.add_argument("--k8s", type=Path, help="kubectl kustomize output")
    parser.add_argument(
        "--k8s-only", action="store_true", help="check only the Kubernetes files (an overlay)"
    )
    parser.add_argument("--min-replicas", type=int, default=MIN_REPLICAS)
    arguments = parser.parse_args(argv)
    k8s = load_documents(arguments.k8s) if arguments.k8s else load_kustomize_base()
    if arguments.k8s_only:
        found = kubernetes_problems(k8s, arguments.min_replicas)
    else:
        found = problems(
            load_compose(arguments.compose) if arguments.compose else None,
            k8s,
            arguments.min_replicas,
        )
    for problem in found:
        print(problem)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
