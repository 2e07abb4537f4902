"""The Kubernetes manifests as `kubectl kustomize` renders them: the production overlay runs
every service with its autoscaler, disruption budget and probes behind an Ingress that keeps
streams open and lets uploads through, on PostgreSQL, RabbitMQ and Redis run by their
operators; the dev overlay runs one of everything; the checks that deploy/validate.sh runs
on them (deploy/k8s_check.py, deploy/crd_check.py, deploy/registry_check.py) pass, and find
what they are there to find.

kubectl is the pinned one of deploy/validate.sh, in this interpreter's virtualenv; it is
installed (`validate.sh --tools-only`) when it is not there yet."""

import copy
import re
import subprocess
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from deploy import crd_check, k8s_check, registry_check
from shared.registry import GATEWAY, SERVICES

REPOSITORY = Path(__file__).resolve().parents[2]
K8S = REPOSITORY / "deploy" / "k8s"
TARGETS = {
    "base": K8S / "base",
    "dev": K8S / "overlays/dev",
    "production": K8S / "overlays/production",
}
NAMES = [GATEWAY.name, *(entry.name for entry in SERVICES)]
NGINX = "nginx.ingress.kubernetes.io/"

Document = dict[str, Any]


def _kubectl() -> Path:
    kubectl = Path(sys.prefix) / "bin" / "kubectl"
    if not kubectl.exists():
        subprocess.run(
            ["bash", str(REPOSITORY / "deploy" / "validate.sh"), "--tools-only", sys.prefix],
            check=True,
            capture_output=True,
        )
    return kubectl


@cache
def _rendered(profile: str) -> tuple[Document, ...]:
    output = subprocess.run(
        [str(_kubectl()), "kustomize", str(TARGETS[profile])],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return tuple(d for d in yaml.safe_load_all(output) if isinstance(d, dict))


def rendered(profile: str) -> list[Document]:
    """A fresh copy of the rendering, for a test to change."""
    return copy.deepcopy(list(_rendered(profile)))


def find(documents: list[Document], kind: str, name: str | None = None) -> list[Document]:
    return [
        d
        for d in documents
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]


def one(documents: list[Document], kind: str, name: str) -> Document:
    found = find(documents, kind, name)
    assert len(found) == 1, f"{len(found)} {kind} {name}"
    return found[0]


def container(documents: list[Document], name: str, container_name: str | None = None) -> Document:
    pod = one(documents, "Deployment", name)["spec"]["template"]["spec"]
    wanted = container_name or name
    return next(
        c for c in [*pod.get("initContainers", []), *pod["containers"]] if c["name"] == wanted
    )


def expand(variables: list[Document], secrets: dict[tuple[str, str], str]) -> dict[str, str]:
    """The environment a container gets, expanded as the kubelet does ($(VAR) from the
    variables before it), with these values for the Secrets' keys."""
    environment: dict[str, str] = {}
    for variable in variables:
        if "value" in variable:
            environment[variable["name"]] = re.sub(
                r"\$\((\w+)\)",
                lambda found: environment.get(found.group(1), found.group(0)),
                variable["value"],
            )
        else:
            reference = variable["valueFrom"]["secretKeyRef"]
            value = secrets.get((reference["name"], reference["key"]))
            if value is not None:
                environment[variable["name"]] = value
    return environment


# --- what the production overlay holds ------------------------------------------------------


def test_production_renders_every_service_with_its_autoscaler_and_disruption_budget() -> None:
    documents = rendered("production")
    assert {d["metadata"]["name"] for d in find(documents, "Deployment")} == set(NAMES)
    for name in NAMES:
        deployment = one(documents, "Deployment", name)
        assert deployment["metadata"]["namespace"] == "lyceum"
        assert one(documents, "Service", name)
        hpa = one(documents, "HorizontalPodAutoscaler", name)
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": name,
        }
        assert 2 <= hpa["spec"]["minReplicas"] == deployment["spec"]["replicas"]
        assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
        assert one(documents, "PodDisruptionBudget", name)["spec"]["minAvailable"] == 1
        pod = deployment["spec"]["template"]["spec"]
        main = container(documents, name)
        assert main["readinessProbe"]["httpGet"]["path"] == "/ready"
        assert main["livenessProbe"]["httpGet"]["path"] == "/health"
        assert main["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for each in [*pod.get("initContainers", []), *pod["containers"]]:
            assert each["securityContext"]["allowPrivilegeEscalation"] is False
            assert each["securityContext"]["readOnlyRootFilesystem"] is True
            assert each["securityContext"]["capabilities"]["drop"] == ["ALL"]
        if name != GATEWAY.name:
            assert [c["name"] for c in pod["initContainers"]] == ["event-topology", "migrate"]
    # Streams get time to finish before a pod is killed.
    for name in ("chat", "gateway"):
        pod = one(documents, "Deployment", name)["spec"]["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] >= 120


def test_production_ingress_keeps_streams_open_and_takes_uploads_at_the_documents_limit() -> None:
    documents = rendered("production")
    ingress = one(documents, "Ingress", "lyceum")
    annotations = ingress["metadata"]["annotations"]
    config = next(
        d for d in find(documents, "ConfigMap") if d["metadata"]["name"].startswith("lyceum-config")
    )
    assert ingress["apiVersion"] == "networking.k8s.io/v1"
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert annotations[NGINX + "proxy-buffering"] == "off"
    assert annotations[NGINX + "proxy-request-buffering"] == "off"
    assert int(annotations[NGINX + "proxy-read-timeout"]) >= 3600
    assert int(annotations[NGINX + "proxy-send-timeout"]) >= 3600
    # 101 MiB: the gateway's MAX_UPLOAD_BYTES, documents' largest file plus the form.
    assert annotations[NGINX + "proxy-body-size"] == "101m"
    assert k8s_check.nginx_size("101m") == int(config["data"]["MAX_UPLOAD_BYTES"]) == 101 * 2**20
    assert int(config["data"]["DOCUMENTS_MAX_BYTES"]) == 100 * 2**20
    assert ingress["spec"]["tls"] == [{"hosts": ["lyceum.example.com"], "secretName": "lyceum-tls"}]
    backends = {
        path["backend"]["service"]["name"]
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    assert backends == {"gateway"}


def test_production_runs_postgresql_rabbitmq_and_redis_on_their_operators() -> None:
    documents = rendered("production")
    cluster = one(documents, "Cluster", "lyceum-postgres")
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    assert cluster["spec"]["instances"] == 3
    databases = {d["spec"]["name"]: d["spec"] for d in find(documents, "Database")}
    roles = {r["spec"]["name"]: r["spec"] for r in find(documents, "DatabaseRole")}
    assert set(databases) == {entry.database for entry in SERVICES}
    for entry in SERVICES:
        database = databases[entry.database]
        assert database["cluster"] == {"name": "lyceum-postgres"}
        role = roles[database["owner"]]
        assert role["login"] is True
        assert role["passwordSecret"] == {"name": f"lyceum-db-{entry.name}"}
    rabbit = one(documents, "RabbitmqCluster", "lyceum-rabbitmq")
    assert rabbit["apiVersion"] == "rabbitmq.com/v1beta1"
    assert rabbit["spec"]["replicas"] == 3
    redis = one(documents, "RedisReplication", "lyceum-redis")
    assert redis["spec"]["clusterSize"] == 3
    assert redis["spec"]["sentinel"]["size"] == 3
    conf = one(documents, "ConfigMap", "lyceum-redis-config")["data"]["redis-additional.conf"]
    assert "maxmemory-policy noeviction" in conf.splitlines()
    assert "appendonly yes" in conf.splitlines()


def test_production_services_connect_with_what_the_operators_and_their_secrets_hold() -> None:
    """DATABASE_URL, AMQP_URL and REDIS_URL as the pods get them, with stand-in values for
    the Secrets' keys."""
    documents = rendered("production")
    secrets = {
        (
            "lyceum-rabbitmq-default-user",
            "connection_string",
        ): "amqp://u:p@lyceum-rabbitmq.lyceum.svc:5672/",
        ("lyceum-redis", "password"): "0123abcd",
    }
    for entry in SERVICES:
        secrets[(f"lyceum-db-{entry.name}", "username")] = f"lyceum_{entry.name}"
        secrets[(f"lyceum-db-{entry.name}", "password")] = f"{entry.name}cafe"
    for entry in SERVICES:
        for container_name in (entry.name, "migrate"):
            environment = expand(container(documents, entry.name, container_name)["env"], secrets)
            url = make_url(environment["DATABASE_URL"])
            assert url.drivername == "postgresql+asyncpg"
            assert (url.username, url.password) == (f"lyceum_{entry.name}", f"{entry.name}cafe")
            assert (url.host, url.port, url.database) == (
                "lyceum-postgres-rw",
                5432,
                entry.database,
            )
        environment = expand(container(documents, entry.name)["env"], secrets)
        assert environment["AMQP_URL"] == "amqp://u:p@lyceum-rabbitmq.lyceum.svc:5672/"
        assert environment["REDIS_URL"] == "redis://:0123abcd@lyceum-redis-master:6379/0"
        topology = expand(container(documents, entry.name, "event-topology")["env"], secrets)
        assert topology["AMQP_URL"] == environment["AMQP_URL"]
    gateway = expand(container(documents, "gateway")["env"], secrets)
    assert gateway["REDIS_URL"] == "redis://:0123abcd@lyceum-redis-master:6379/0"


def test_dev_runs_one_of_everything_with_its_infrastructure_in_the_namespace() -> None:
    documents = rendered("dev")
    for name in NAMES:
        assert one(documents, "Deployment", name)["spec"]["replicas"] == 1
        assert one(documents, "HorizontalPodAutoscaler", name)["spec"]["minReplicas"] == 1
        assert one(documents, "PodDisruptionBudget", name)["spec"] == {
            "maxUnavailable": 1,
            "selector": {
                "matchLabels": {
                    "app.kubernetes.io/name": name,
                    "app.kubernetes.io/part-of": "lyceum",
                }
            },
        }
    assert one(documents, "Cluster", "lyceum-postgres")["spec"]["instances"] == 1
    assert one(documents, "RabbitmqCluster", "lyceum-rabbitmq")["spec"]["replicas"] == 1
    assert one(documents, "RedisReplication", "lyceum-redis")["spec"]["clusterSize"] == 1
    assert one(documents, "Deployment", "minio")
    assert one(documents, "Deployment", "mailpit")
    for entry in SERVICES:
        secret = one(documents, "Secret", f"lyceum-db-{entry.name}")
        assert secret["type"] == "kubernetes.io/basic-auth"
        assert secret["metadata"]["labels"]["cnpg.io/reload"] == "true"
    assert "tls" not in one(documents, "Ingress", "lyceum")["spec"]


# --- the checks of deploy/validate.sh -------------------------------------------------------


@pytest.mark.parametrize("profile", list(TARGETS))
def test_every_rendering_passes_the_checks(profile: str) -> None:
    documents = rendered(profile)
    assert k8s_check.problems(documents, profile) == []
    assert crd_check.problems(documents) == []
    minimum = 1 if profile == "dev" else registry_check.MIN_REPLICAS
    assert registry_check.kubernetes_problems(documents, minimum) == []


def _set_annotation(documents: list[Document]) -> None:
    one(documents, "Ingress", "lyceum")["metadata"]["annotations"][NGINX + "proxy-body-size"] = "1m"
    del one(documents, "Ingress", "lyceum")["metadata"]["annotations"][NGINX + "proxy-buffering"]


def _escalate(documents: list[Document]) -> None:
    container(documents, "chat", "migrate")["securityContext"]["allowPrivilegeEscalation"] = True


def _no_autoscaler(documents: list[Document]) -> None:
    documents.remove(one(documents, "HorizontalPodAutoscaler", "courses"))


def _open_to_a_namespace(documents: list[Document]) -> None:
    policy = one(documents, "NetworkPolicy", "services-from-gateway")
    policy["spec"]["ingress"][1]["from"][0]["namespaceSelector"] = {}


def _no_prometheus(documents: list[Document]) -> None:
    del one(documents, "NetworkPolicy", "services-from-gateway")["spec"]["ingress"][1]


def _late_variable(documents: list[Document]) -> None:
    env = container(documents, "users")["env"]
    env.append(env.pop(next(i for i, e in enumerate(env) if e["name"] == "DATABASE_PASSWORD")))


def _one_postgres_instance(documents: list[Document]) -> None:
    one(documents, "Cluster", "lyceum-postgres")["spec"]["instances"] = 1


def _evicting_redis(documents: list[Document]) -> None:
    data = one(documents, "ConfigMap", "lyceum-redis-config")["data"]
    data["redis-additional.conf"] = data["redis-additional.conf"].replace(
        "noeviction", "allkeys-lru"
    )


def _another_role_secret(documents: list[Document]) -> None:
    env = container(documents, "webhooks")["env"]
    next(e for e in env if e["name"] == "DATABASE_PASSWORD")["valueFrom"]["secretKeyRef"][
        "name"
    ] = "lyceum-db-auth"


def _no_database(documents: list[Document]) -> None:
    documents.remove(one(documents, "Database", "lyceum-documents"))


def _short_grace(documents: list[Document]) -> None:
    one(documents, "Deployment", "chat")["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"
    ] = 30


def _longer_shutdown_than_the_grace(documents: list[Document]) -> None:
    env = container(documents, "documents")["env"]
    next(e for e in env if e["name"] == "SHUTDOWN_GRACE_SECONDS")["value"] = "200"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (_set_annotation, "proxy-body-size '1m' is not MAX_UPLOAD_BYTES"),
        (_set_annotation, 'proxy-buffering is not "off"'),
        (_escalate, "k8s chat: container migrate: allowPrivilegeEscalation is not false"),
        (_no_autoscaler, "k8s courses: 0 HorizontalPodAutoscalers, not one"),
        (
            _open_to_a_namespace,
            "k8s auth: a NetworkPolicy admits ingress from outside Lyceum's pods",
        ),
        (_no_prometheus, "k8s users: its NetworkPolicies do not admit Prometheus"),
        (_late_variable, "DATABASE_URL uses $(DATABASE_PASSWORD), which is not defined before it"),
        (_one_postgres_instance, "k8s Cluster lyceum-postgres: 1 instances (production runs 3)"),
        (_evicting_redis, "redis.conf does not say `maxmemory-policy noeviction`"),
        (
            _another_role_secret,
            "k8s webhooks: container webhooks: DATABASE_URL's user and password",
        ),
        (_no_database, "k8s: no CloudNativePG Database lyceum_documents for documents"),
        (_short_grace, "k8s chat: terminationGracePeriodSeconds 30"),
        (
            _longer_shutdown_than_the_grace,
            "k8s documents: terminationGracePeriodSeconds 120 is shorter than its preStop delay",
        ),
    ],
    ids=lambda value: getattr(value, "__name__", ""),
)
def test_the_production_check_finds_what_is_wrong(
    change: Callable[[list[Document]], None], expected: str
) -> None:
    documents = rendered("production")
    change(documents)
    found = k8s_check.problems(documents, "production")
    assert any(expected in problem for problem in found), found


def test_a_migration_with_another_database_url_than_its_service_is_found() -> None:
    documents = rendered("production")
    env = container(documents, "courses", "migrate")["env"]
    url = next(e for e in env if e["name"] == "DATABASE_URL")
    url["value"] = url["value"].replace("lyceum-postgres-rw", "somewhere-else")
    assert "k8s courses: the migration's DATABASE_URL is not the service's" in (
        registry_check.kubernetes_problems(documents)
    )


def test_custom_resources_that_their_crds_refuse_are_found() -> None:
    documents = rendered("production")
    one(documents, "Cluster", "lyceum-postgres")["spec"]["instancez"] = 3
    one(documents, "RabbitmqCluster", "lyceum-rabbitmq")["spec"]["replicas"] = "three"
    del one(documents, "RedisReplication", "lyceum-redis")["spec"]["kubernetesConfig"]["image"]
    one(documents, "Database", "lyceum-users")["spec"]["ensure"] = "maybe"
    documents.append(
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "ServiceMonitor",
            "metadata": {"name": "x"},
        }
    )
    found = crd_check.problems(documents)
    assert found == [
        "Cluster lyceum-postgres: spec: Additional properties are not allowed "
        "('instancez' was unexpected)",
        "Database lyceum-users: spec.ensure: 'maybe' is not one of ['present', 'absent']",
        "RabbitmqCluster lyceum-rabbitmq: spec.replicas: 'three' is not of type 'integer'",
        "RedisReplication lyceum-redis: spec.kubernetesConfig: 'image' is a required property",
        "ServiceMonitor x (monitoring.coreos.com/v1): no schema for this kind and version in "
        "deploy/k8s/crds; vendor its CRD (python -m deploy.crd_check --vendor CRD.yaml)",
    ]


def test_the_crd_schemas_follow_kubernetes_rules() -> None:
    schema = {
        "type": "object",
        "properties": {
            "fixed": {"type": "object", "properties": {"a": {"type": "string"}}},
            "open": {
                "type": "object",
                "properties": {"a": {"type": "string"}},
                "x-kubernetes-preserve-unknown-fields": True,
            },
            "maybe": {"type": "string", "nullable": True},
            "either": {"x-kubernetes-int-or-string": True},
        },
    }
    strict = crd_check.strict(schema)
    assert strict["properties"]["fixed"]["additionalProperties"] is False
    assert "additionalProperties" not in strict["properties"]["open"]
    assert strict["properties"]["maybe"]["type"] == ["string", "null"]
    assert strict["properties"]["either"]["type"] == ["integer", "string"]


def test_every_vendored_schema_is_documented() -> None:
    readme = (K8S / "crds" / "README.md").read_text()
    schemas = sorted(
        path.relative_to(K8S / "crds").as_posix() for path in (K8S / "crds").glob("*/*.json")
    )
    assert schemas
    for schema in schemas:
        assert schema in readme, f"deploy/k8s/crds/README.md does not name {schema}"
