"""Does a rendered Kubernetes configuration (the base or an overlay) hold what running Lyceum
needs? `deploy/validate.sh` runs it on the output of `kubectl kustomize` for each of them:

    python -m deploy.k8s_check --profile base|dev|production RENDERED.yaml

Every profile: each Deployment of the registry (shared/registry.py) has its probes
(readiness /ready, liveness /health, a start-up probe), a preStop delay and a grace period
long enough for what it streams, resources, a restricted security context in every
container (non-root, read-only root filesystem with a writable /tmp, no privilege
escalation, no capabilities, the runtime's seccomp profile), an autoscaler and a disruption
budget that lets a node drain proceed; the Ingress sends everything to the gateway and
keeps streams open and uploads whole; the NetworkPolicies admit only the gateway (and
Prometheus) to the services; every `$(VAR)` in an environment value is defined before it.

`dev` and `production` (the overlays on operators) also: one CloudNativePG Cluster with a
Database and a DatabaseRole per service, and each service's DATABASE_URL made from the
same Secret as its role's password; a RabbitmqCluster whose operator's Secret is every
AMQP_URL; a RedisReplication that keeps its data (noeviction, appendonly) whose master
Service and password are every REDIS_URL; and the sizes of the profile (one of everything
in dev; three PostgreSQL instances, three RabbitMQ nodes and three Redis pods with Sentinel
in production, two pods or more of every service). The base has none of these and no
Secret. Prints one line per problem and exits 1 if there is any.
"""

import argparse
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from shared.registry import GATEWAY, SERVICES, Component
from shared.settings import ServiceSettings

PROFILES = ("base", "dev", "production")
MiB = 1024 * 1024

# Seconds a pod has, after its preStop delay, to finish what it is doing before it is
# killed: chat streams its answers (SSE, WebSocket), the gateway relays them and documents'
# uploads, documents receives uploads of up to 100 MiB.
STREAMING_GRACE_SECONDS = {"chat": 120, "gateway": 120, "documents": 110}
DEFAULT_GRACE_SECONDS = 25
# What the kubelet leaves a process beyond the time it gives itself to stop (its
# SHUTDOWN_DELAY_SECONDS and SHUTDOWN_GRACE_SECONDS, shared/shutdown.py) before killing it.
STOP_MARGIN_SECONDS = 5
# How long the Ingress lets a stream (SSE, WebSocket) pause: ingress-nginx's documentation
# recommends an hour or more for WebSockets.
STREAM_TIMEOUT_SECONDS = 3600
# Paths the Ingress must route to the gateway, and paths it must keep inside the cluster.
PUBLIC_PATHS = ("/api/v1/auth/login", "/ws", "/docs", "/openapi.json", "/health")
PRIVATE_PATHS = ("/metrics", "/ready")
NGINX = "nginx.ingress.kubernetes.io/"
# The one writable place of a Lyceum pod: an emptyDir mounted over it.
WRITABLE = "/tmp"  # noqa: S108 - a path inside the pods, not a temporary file here
# Where Prometheus runs (network-policies.yaml).
MONITORING_NAMESPACE = "monitoring"
# The ports of PostgreSQL, Redis and RabbitMQ, which egress rules must leave open.
INFRASTRUCTURE_PORTS = {5432: "PostgreSQL", 6379: "Redis", 5672: "RabbitMQ", 53: "DNS"}

Document = dict[str, Any]
Kinds = dict[str, dict[str, Document]]


def load_documents(path: Path) -> list[Document]:
    return [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]


def by_kind(documents: Iterable[Document]) -> Kinds:
    found: Kinds = {}
    for document in documents:
        found.setdefault(document.get("kind", ""), {})[document["metadata"]["name"]] = document
    return found


def _config(kinds: Kinds) -> dict[str, str]:
    for name, config_map in kinds.get("ConfigMap", {}).items():
        if name.startswith("lyceum-config"):
            return dict(config_map.get("data") or {})
    return {}


def _containers(pod: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def _env(container: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def _secret_ref(variable: Mapping[str, Any] | None) -> tuple[str, str] | None:
    reference = ((variable or {}).get("valueFrom") or {}).get("secretKeyRef")
    if not reference:
        return None
    return reference.get("name", ""), reference.get("key", "")


def matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a label selector (matchLabels and matchExpressions) selects these labels."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values") or []
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def nginx_size(value: str) -> int | None:
    """Bytes of an nginx size ("101m", "1g", "512k", "1048576")."""
    found = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)\s*", value)
    if not found:
        return None
    unit = {"": 1, "k": 1024, "m": MiB, "g": 1024 * MiB}[found.group(2).lower()]
    return int(found.group(1)) * unit


# --- the Lyceum pods ----------------------------------------------------------------------


def _security_problems(
    name: str, pod: Mapping[str, Any], container: Mapping[str, Any]
) -> list[str]:
    """The restricted profile, with the pod's settings applying where the container's do
    not say."""
    problems = []
    pod_context = pod.get("securityContext") or {}
    context = container.get("securityContext") or {}
    where = f"k8s {name}: container {container['name']}"

    def effective(key: str) -> Any:
        return context.get(key, pod_context.get(key))

    if effective("runAsNonRoot") is not True:
        problems.append(f"{where}: runAsNonRoot is not true")
    if effective("runAsUser") == 0:
        problems.append(f"{where}: runs as root")
    if (effective("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problems.append(f"{where}: seccompProfile is not RuntimeDefault")
    if context.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{where}: allowPrivilegeEscalation is not false")
    if context.get("readOnlyRootFilesystem") is not True:
        problems.append(f"{where}: readOnlyRootFilesystem is not true")
    if "ALL" not in ((context.get("capabilities") or {}).get("drop") or []):
        problems.append(f"{where}: does not drop ALL capabilities")
    if (context.get("capabilities") or {}).get("add"):
        problems.append(f"{where}: adds capabilities")
    if context.get("privileged"):
        problems.append(f"{where}: privileged")
    resources = container.get("resources") or {}
    if not {"cpu", "memory"} <= set(resources.get("requests") or {}) or "memory" not in (
        resources.get("limits") or {}
    ):
        problems.append(f"{where}: no cpu and memory requests and memory limit")
    return problems


def _variable_problems(name: str, container: Mapping[str, Any], kinds: Kinds) -> list[str]:
    """Kubernetes expands $(VAR) only from variables defined before it (envFrom first)."""
    defined: set[str] = set()
    for source in container.get("envFrom") or []:
        config_map = kinds.get("ConfigMap", {}).get(
            (source.get("configMapRef") or {}).get("name", "")
        )
        if config_map:
            defined |= set(config_map.get("data") or {})
    problems = []
    for variable in container.get("env") or []:
        for reference in re.findall(
            r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_]*)\)", variable.get("value") or ""
        ):
            if reference not in defined:
                problems.append(
                    f"k8s {name}: container {container['name']}: {variable['name']} uses "
                    f"$({reference}), which is not defined before it"
                )
        defined.add(variable["name"])
    return problems


def _prestop_seconds(container: Mapping[str, Any]) -> int:
    pre_stop = (container.get("lifecycle") or {}).get("preStop") or {}
    if "sleep" in pre_stop:
        return int(pre_stop["sleep"].get("seconds", 0))
    command = (pre_stop.get("exec") or {}).get("command") or []
    if len(command) == 2 and command[0] in ("sleep", "/bin/sleep") and command[1].isdigit():
        return int(command[1])
    return 0


def _stop_seconds(container: Mapping[str, Any], config: Mapping[str, str]) -> float:
    """How long the process takes to stop after SIGTERM at most: its SHUTDOWN_DELAY_SECONDS
    and SHUTDOWN_GRACE_SECONDS (the container's, else the ConfigMap's, else the settings'
    defaults)."""
    env = _env(container)
    total = 0.0
    for name in ("SHUTDOWN_DELAY_SECONDS", "SHUTDOWN_GRACE_SECONDS"):
        field = ServiceSettings.model_fields.get(name.lower())
        default = field.default if field is not None else 0
        value = (env.get(name) or {}).get("value", config.get(name, default))
        total += float(value or 0)
    return total


def _probe_path(container: Mapping[str, Any], probe: str) -> str | None:
    path: str | None = ((container.get(probe) or {}).get("httpGet") or {}).get("path")
    return path


def workload_problems(kinds: Kinds, profile: str) -> list[str]:
    problems: list[str] = []
    deployments = kinds.get("Deployment", {})
    config = _config(kinds)
    autoscalers: dict[str, list[Document]] = {}
    for hpa in kinds.get("HorizontalPodAutoscaler", {}).values():
        target = hpa["spec"].get("scaleTargetRef") or {}
        if target.get("kind") == "Deployment":
            autoscalers.setdefault(target.get("name", ""), []).append(hpa)
    budgets = list(kinds.get("PodDisruptionBudget", {}).values())

    var_dir = config.get("VAR_DIR", "")
    if not var_dir.startswith(WRITABLE + "/"):
        problems.append(
            f"k8s ConfigMap: VAR_DIR {var_dir!r} is not under /tmp (the writable place)"
        )

    components: list[Component] = [GATEWAY, *SERVICES]
    for entry in components:
        deployment = deployments.get(entry.name)
        if deployment is None:
            problems.append(f"k8s: no Deployment {entry.name}")
            continue
        spec = deployment["spec"]
        template = spec["template"]
        pod = template["spec"]
        labels = template["metadata"].get("labels") or {}
        containers = {c["name"]: c for c in pod.get("containers", [])}
        container = containers.get(entry.name)
        if container is None:
            problems.append(f"k8s {entry.name}: no container named {entry.name}")
            continue
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"k8s {entry.name}: mounts a service account token")
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for each in _containers(pod):
            problems += _security_problems(entry.name, pod, each)
            problems += _variable_problems(entry.name, each, kinds)
            for mount in each.get("volumeMounts") or []:
                if mount["name"] not in volumes:
                    problems.append(
                        f"k8s {entry.name}: mounts the undefined volume {mount['name']}"
                    )
        tmp = next(
            (m for m in container.get("volumeMounts") or [] if m["mountPath"] == WRITABLE), None
        )
        if tmp is None or "emptyDir" not in volumes.get(tmp["name"], {}):
            problems.append(
                f"k8s {entry.name}: no emptyDir at /tmp (the root filesystem is read-only)"
            )

        # Probes, and stopping without cutting requests.
        if _probe_path(container, "readinessProbe") != "/ready":
            problems.append(f"k8s {entry.name}: readinessProbe is not /ready")
        if _probe_path(container, "livenessProbe") != "/health":
            problems.append(f"k8s {entry.name}: livenessProbe is not /health")
        if _probe_path(container, "startupProbe") != "/health":
            problems.append(f"k8s {entry.name}: startupProbe is not /health")
        delay = _prestop_seconds(container)
        if delay < 1:
            problems.append(
                f"k8s {entry.name}: no preStop delay (endpoints must drain before SIGTERM)"
            )
        grace = pod.get("terminationGracePeriodSeconds", 30)
        wanted = STREAMING_GRACE_SECONDS.get(entry.name, DEFAULT_GRACE_SECONDS)
        stopping = _stop_seconds(container, config)
        if grace < delay + stopping + STOP_MARGIN_SECONDS:
            problems.append(
                f"k8s {entry.name}: terminationGracePeriodSeconds {grace} is shorter than its "
                f"preStop delay ({delay} s), SHUTDOWN_DELAY_SECONDS and SHUTDOWN_GRACE_SECONDS "
                f"({stopping:g} s) and {STOP_MARGIN_SECONDS} s: it would be killed mid-shutdown"
            )
        if grace < wanted + delay:
            problems.append(
                f"k8s {entry.name}: terminationGracePeriodSeconds {grace} leaves less than "
                f"{wanted} s after its preStop delay"
            )
        if entry is not GATEWAY and not any(
            c["name"] == "migrate" for c in pod.get("initContainers", [])
        ):
            problems.append(f"k8s {entry.name}: no `migrate` init container")

        # Replicas, the autoscaler and the disruption budget.
        replicas = spec.get("replicas", 1)
        hpas = autoscalers.get(entry.name, [])
        if len(hpas) != 1:
            problems.append(f"k8s {entry.name}: {len(hpas)} HorizontalPodAutoscalers, not one")
        else:
            hpa = hpas[0]
            low, high = hpa["spec"].get("minReplicas", 1), hpa["spec"]["maxReplicas"]
            if hpa.get("apiVersion") != "autoscaling/v2":
                problems.append(f"k8s {entry.name}: its autoscaler is not autoscaling/v2")
            if not hpa["spec"].get("metrics"):
                problems.append(f"k8s {entry.name}: its autoscaler has no metrics")
            if not low <= high:
                problems.append(
                    f"k8s {entry.name}: autoscaler minReplicas {low} > maxReplicas {high}"
                )
            if replicas != low:
                problems.append(
                    f"k8s {entry.name}: replicas {replicas} is not the autoscaler's "
                    f"minReplicas {low}"
                )
            if profile == "dev" and low != 1:
                problems.append(f"k8s {entry.name}: dev runs one pod (minReplicas {low})")
            if profile != "dev" and low < 2:
                problems.append(f"k8s {entry.name}: fewer than 2 pods (minReplicas {low})")
        if profile == "dev" and replicas != 1:
            problems.append(f"k8s {entry.name}: dev runs one pod (replicas {replicas})")
        selecting = [b for b in budgets if matches(b["spec"].get("selector") or {}, labels)]
        if len(selecting) != 1:
            problems.append(
                f"k8s {entry.name}: {len(selecting)} PodDisruptionBudgets select its pods, not one"
            )
        else:
            budget = selecting[0]["spec"]
            if "maxUnavailable" in budget:
                if int(budget["maxUnavailable"]) < 1:
                    problems.append(
                        f"k8s {entry.name}: its disruption budget blocks every node drain"
                    )
            elif int(budget.get("minAvailable", 0)) >= replicas:
                problems.append(
                    f"k8s {entry.name}: its disruption budget keeps "
                    f"{budget.get('minAvailable')} of {replicas} pods: a node drain cannot proceed"
                )
            elif profile != "dev" and int(budget.get("minAvailable", 0)) < 1:
                problems.append(f"k8s {entry.name}: its disruption budget keeps no pod up")
    return problems


# --- the Ingress --------------------------------------------------------------------------


def _routes(path: str, rule_path: Mapping[str, Any]) -> bool:
    prefix, kind = rule_path.get("path", "/"), rule_path.get("pathType", "Prefix")
    if kind == "Exact":
        return bool(path == prefix)
    prefix = prefix.rstrip("/")
    return path == prefix or path.startswith(prefix + "/") or prefix == ""


def ingress_problems(kinds: Kinds, profile: str) -> list[str]:
    ingresses = list(kinds.get("Ingress", {}).values())
    if len(ingresses) != 1:
        return [f"k8s: {len(ingresses)} Ingresses, not one"]
    ingress = ingresses[0]
    problems = []
    spec = ingress["spec"]
    annotations = ingress["metadata"].get("annotations") or {}
    config = _config(kinds)
    if spec.get("ingressClassName") != "nginx":
        problems.append("k8s Ingress: ingressClassName is not nginx")
    gateway = kinds.get("Service", {}).get(GATEWAY.name, {})
    gateway_ports = {p.get("name") for p in (gateway.get("spec") or {}).get("ports", [])}
    gateway_ports |= {p.get("port") for p in (gateway.get("spec") or {}).get("ports", [])}
    hosts = []
    paths = []
    for rule in spec.get("rules") or []:
        hosts.append(rule.get("host"))
        for rule_path in (rule.get("http") or {}).get("paths") or []:
            paths.append(rule_path)
            service = (rule_path.get("backend") or {}).get("service") or {}
            port = service.get("port") or {}
            if (
                service.get("name") != GATEWAY.name
                or (port.get("name") or port.get("number")) not in gateway_ports
            ):
                problems.append(
                    f"k8s Ingress: {rule_path.get('path')} goes elsewhere than the gateway's "
                    "http port"
                )
    if spec.get("defaultBackend"):
        problems.append("k8s Ingress: has a default backend")
    for path in PUBLIC_PATHS:
        if not any(_routes(path, p) for p in paths):
            problems.append(f"k8s Ingress: does not route {path}")
    for path in PRIVATE_PATHS:
        if any(_routes(path, p) for p in paths):
            problems.append(f"k8s Ingress: routes {path}, which stays inside the cluster")

    # Streams and uploads.
    for key in ("proxy-buffering", "proxy-request-buffering"):
        if annotations.get(NGINX + key) != "off":
            problems.append(f'k8s Ingress: {NGINX}{key} is not "off"')
    for key in ("proxy-read-timeout", "proxy-send-timeout"):
        value = annotations.get(NGINX + key, "60")
        if not value.isdigit() or int(value) < STREAM_TIMEOUT_SECONDS:
            problems.append(
                f"k8s Ingress: {NGINX}{key} {value} is under {STREAM_TIMEOUT_SECONDS} s"
            )
    upload_limit = int(config.get("MAX_UPLOAD_BYTES", "0") or 0)
    documents_limit = int(config.get("DOCUMENTS_MAX_BYTES", "0") or 0)
    if upload_limit < documents_limit + MiB:
        problems.append(
            f"k8s ConfigMap: MAX_UPLOAD_BYTES {upload_limit} is not DOCUMENTS_MAX_BYTES "
            f"{documents_limit} plus 1 MiB for the form"
        )
    body = nginx_size(annotations.get(NGINX + "proxy-body-size", "1m"))
    if body is None or not upload_limit <= body < upload_limit + MiB:
        problems.append(
            f"k8s Ingress: {NGINX}proxy-body-size "
            f"{annotations.get(NGINX + 'proxy-body-size')!r} is not MAX_UPLOAD_BYTES "
            f"({upload_limit})"
        )

    # TLS in production.
    if profile != "dev":
        covered = {
            host
            for tls in spec.get("tls") or []
            if tls.get("secretName")
            for host in tls.get("hosts") or []
        }
        for host in hosts:
            if host not in covered:
                problems.append(f"k8s Ingress: {host} has no TLS Secret")
        if annotations.get(NGINX + "force-ssl-redirect") != "true":
            problems.append(f'k8s Ingress: {NGINX}force-ssl-redirect is not "true"')
        public_url = config.get("PUBLIC_URL", "")
        if urlsplit(public_url).hostname not in hosts:
            problems.append(f"k8s ConfigMap: PUBLIC_URL {public_url} is not the Ingress' host")
    return problems


# --- NetworkPolicies ----------------------------------------------------------------------


def _is_monitoring_peer(peer: Mapping[str, Any]) -> bool:
    namespaces = (peer.get("namespaceSelector") or {}).get("matchLabels") or {}
    return (
        namespaces == {"kubernetes.io/metadata.name": MONITORING_NAMESPACE}
        and not (peer.get("namespaceSelector") or {}).get("matchExpressions")
        and matches(peer.get("podSelector") or {}, {"app.kubernetes.io/name": "prometheus"})
        and bool(peer.get("podSelector"))
    )


def network_problems(kinds: Kinds) -> list[str]:
    """A service admits Lyceum's pods (the gateway at least) and Prometheus, and nobody else;
    the gateway admits anyone; egress rules leave the infrastructure's ports open.

    A peer is either a podSelector alone (pods of the same namespace) or, for Prometheus, a
    namespaceSelector naming the monitoring namespace together with a podSelector that
    selects its Prometheus pods; an ipBlock, a bare namespaceSelector or an empty `from`
    would let anybody in."""
    problems: list[str] = []
    deployments = kinds.get("Deployment", {})
    pod_labels = {
        entry.name: deployments[entry.name]["spec"]["template"]["metadata"].get("labels") or {}
        for entry in [GATEWAY, *SERVICES]
        if entry.name in deployments
    }
    policies = [p["spec"] for p in kinds.get("NetworkPolicy", {}).values()]
    for name, labels in pod_labels.items():
        selecting = [
            p
            for p in policies
            if "Ingress" in p.get("policyTypes", ["Ingress"])
            and matches(p.get("podSelector") or {}, labels)
        ]
        rules = [rule for spec in selecting for rule in spec.get("ingress") or []]
        if name == GATEWAY.name:
            if selecting and not any(not rule.get("from") for rule in rules):
                problems.append(
                    "k8s gateway: its NetworkPolicies do not admit clients from anywhere"
                )
            continue
        if not selecting:
            problems.append(f"k8s {name}: no NetworkPolicy restricts who reaches it")
        admitted: set[str] = set()
        monitored = False
        for rule in rules:
            peers = rule.get("from") or []
            if not peers:
                problems.append(f"k8s {name}: a NetworkPolicy admits ingress from anywhere")
            for peer in peers:
                if set(peer) == {"podSelector"}:
                    admitted |= {
                        n for n, other in pod_labels.items() if matches(peer["podSelector"], other)
                    }
                elif set(peer) == {"namespaceSelector", "podSelector"} and _is_monitoring_peer(
                    peer
                ):
                    monitored = True
                else:
                    problems.append(
                        f"k8s {name}: a NetworkPolicy admits ingress from outside Lyceum's "
                        f"pods: {peer}"
                    )
        if GATEWAY.name not in admitted:
            problems.append(f"k8s {name}: its NetworkPolicies do not admit the gateway")
        if selecting and not monitored:
            problems.append(
                f"k8s {name}: its NetworkPolicies do not admit Prometheus "
                f"(namespace {MONITORING_NAMESPACE})"
            )

        egress = [
            p
            for p in policies
            if "Egress" in p.get("policyTypes", []) and matches(p.get("podSelector") or {}, labels)
        ]
        if egress:
            open_ports = {
                port.get("port")
                for spec in egress
                for rule in spec.get("egress") or []
                for port in rule.get("ports") or []
            }
            for port, what in INFRASTRUCTURE_PORTS.items():
                if port not in open_ports:
                    problems.append(
                        f"k8s {name}: its egress policy does not let it reach {what} ({port})"
                    )
    return problems


# --- the infrastructure on operators ------------------------------------------------------


def _service_containers(kinds: Kinds) -> list[tuple[str, dict[str, Any]]]:
    """(deployment, container) of every Lyceum container, init containers included."""
    found = []
    for entry in [GATEWAY, *SERVICES]:
        deployment = kinds.get("Deployment", {}).get(entry.name)
        if deployment:
            for container in _containers(deployment["spec"]["template"]["spec"]):
                found.append((entry.name, container))
    return found


def _composed(
    container: Mapping[str, Any], variable: str, pattern: str
) -> tuple[dict[str, tuple[str, str] | None], bool]:
    """The Secret keys behind the $(VAR)s of a URL made by `pattern` (a regular expression with
    named groups for the variables), and whether the URL matches it."""
    env = _env(container)
    value = (env.get(variable) or {}).get("value") or ""
    found = re.fullmatch(pattern, value)
    if not found:
        return {}, False
    return {group: _secret_ref(env.get(name)) for group, name in found.groupdict().items()}, True


def operator_problems(kinds: Kinds, profile: str) -> list[str]:
    clusters = kinds.get("Cluster", {})
    rabbits = kinds.get("RabbitmqCluster", {})
    redises = kinds.get("RedisReplication", {})
    if profile == "base":
        problems = [
            f"k8s base: has a {kind}; the infrastructure belongs to the overlays"
            for kind in (
                "Cluster",
                "Database",
                "DatabaseRole",
                "RabbitmqCluster",
                "RedisReplication",
            )
            if kinds.get(kind)
        ]
        if kinds.get("Secret"):
            problems.append("k8s base: contains a Secret")
        return problems

    problems = []
    production = profile == "production"
    user_secrets: set[str] = set()

    # PostgreSQL: one Cluster, a role and a database per service.
    if len(clusters) != 1:
        return [f"k8s: {len(clusters)} CloudNativePG Clusters, not one"]
    cluster_name, cluster = next(iter(clusters.items()))
    instances = cluster["spec"].get("instances", 1)
    if production and instances < 3:
        problems.append(f"k8s Cluster {cluster_name}: {instances} instances (production runs 3)")
    if profile == "dev" and instances != 1:
        problems.append(f"k8s Cluster {cluster_name}: dev runs one instance ({instances})")
    roles = {r["spec"]["name"]: r for r in kinds.get("DatabaseRole", {}).values()}
    databases = {d["spec"]["name"]: d for d in kinds.get("Database", {}).values()}
    initdb = ((cluster["spec"].get("bootstrap") or {}).get("initdb")) or {}
    for entry in SERVICES:
        database = databases.get(entry.database)
        if database is None:
            problems.append(f"k8s: no CloudNativePG Database {entry.database} for {entry.name}")
            continue
        owner = database["spec"].get("owner", "")
        if database["spec"]["cluster"]["name"] != cluster_name:
            problems.append(f"k8s Database {entry.database}: not in {cluster_name}")
        role = roles.get(owner)
        if role is None:
            problems.append(f"k8s Database {entry.database}: its owner {owner} is no DatabaseRole")
            continue
        if role["spec"]["cluster"]["name"] != cluster_name or role["spec"].get("login") is not True:
            problems.append(f"k8s DatabaseRole {owner}: not a login role of {cluster_name}")
        if role["spec"].get("superuser") or role["spec"].get("createrole"):
            problems.append(f"k8s DatabaseRole {owner}: more privileged than an owner needs")
        secret = (role["spec"].get("passwordSecret") or {}).get("name")
        if not secret:
            problems.append(f"k8s DatabaseRole {owner}: no passwordSecret")
            continue
        user_secrets.add(secret)
        if initdb.get("owner") == owner and (initdb.get("secret") or {}).get("name") != secret:
            problems.append(
                f"k8s Cluster {cluster_name}: initdb's owner {owner} has another Secret "
                "than its role"
            )
        deployment = kinds.get("Deployment", {}).get(entry.name)
        if deployment is None:
            continue
        pattern = (
            r"postgresql\+asyncpg://\$\((?P<user>\w+)\):\$\((?P<password>\w+)\)@"
            + re.escape(f"{cluster_name}-rw")
            + r"(:5432)?/"
            + re.escape(entry.database)
        )
        pod = deployment["spec"]["template"]["spec"]
        for container in _containers(pod):
            if "DATABASE_URL" not in _env(container):
                continue
            references, ok = _composed(container, "DATABASE_URL", pattern)
            if not ok:
                problems.append(
                    f"k8s {entry.name}: container {container['name']}: DATABASE_URL is not "
                    f"postgresql+asyncpg://$(USER):$(PASSWORD)@{cluster_name}-rw:5432/{entry.database}"
                )
            elif references != {"user": (secret, "username"), "password": (secret, "password")}:
                problems.append(
                    f"k8s {entry.name}: container {container['name']}: DATABASE_URL's user and "
                    f"password are not the `username` and `password` of {secret}, its role's Secret"
                )

    # RabbitMQ: the operator's Secret is every AMQP_URL.
    if len(rabbits) != 1:
        problems.append(f"k8s: {len(rabbits)} RabbitmqClusters, not one")
    else:
        rabbit_name, rabbit = next(iter(rabbits.items()))
        replicas = rabbit["spec"].get("replicas", 1)
        if production and (replicas < 3 or replicas % 2 == 0):
            problems.append(
                f"k8s RabbitmqCluster {rabbit_name}: {replicas} nodes (production runs 3)"
            )
        if profile == "dev" and replicas != 1:
            problems.append(f"k8s RabbitmqCluster {rabbit_name}: dev runs one node ({replicas})")
        for name, container in _service_containers(kinds):
            variable = _env(container).get("AMQP_URL")
            if variable is not None and _secret_ref(variable) != (
                f"{rabbit_name}-default-user",
                "connection_string",
            ):
                problems.append(
                    f"k8s {name}: container {container['name']}: AMQP_URL is not the "
                    "connection_string "
                    f"of {rabbit_name}-default-user"
                )
        if urlsplit(_config(kinds).get("AMQP_URL", "")).hostname != rabbit_name:
            problems.append(f"k8s ConfigMap: AMQP_URL is not on {rabbit_name}")

    # Redis: keeps its data; its master Service and its password are every REDIS_URL.
    if len(redises) != 1:
        problems.append(f"k8s: {len(redises)} RedisReplications, not one")
    else:
        redis_name, redis = next(iter(redises.items()))
        spec = redis["spec"]
        size, sentinels = spec.get("clusterSize", 1), (spec.get("sentinel") or {}).get("size", 0)
        if production and (size < 3 or sentinels < 3):
            problems.append(
                f"k8s RedisReplication {redis_name}: {size} pods and {sentinels} Sentinels "
                "(production runs 3 and 3)"
            )
        if profile == "dev" and size != 1:
            problems.append(f"k8s RedisReplication {redis_name}: dev runs one pod ({size})")
        if not (spec.get("storage") or {}).get("volumeClaimTemplate"):
            problems.append(
                f"k8s RedisReplication {redis_name}: no volume (its data would not survive "
                "a restart)"
            )
        config_name = (spec.get("redisConfig") or {}).get("additionalRedisConfig", "")
        config_map = kinds.get("ConfigMap", {}).get(config_name)
        conf = ((config_map or {}).get("data") or {}).get("redis-additional.conf", "")
        settings = dict(
            line.split(None, 1)
            for line in conf.splitlines()
            if line.strip() and not line.startswith("#")
        )
        if config_map is None:
            problems.append(
                f"k8s RedisReplication {redis_name}: its additionalRedisConfig "
                f"{config_name!r} is not rendered"
            )
        for key, value in (("maxmemory-policy", "noeviction"), ("appendonly", "yes")):
            if settings.get(key, "").strip() != value:
                problems.append(f"k8s Redis: redis.conf does not say `{key} {value}`")
        if production and int(settings.get("min-replicas-to-write", "0")) < 1:
            problems.append("k8s Redis: redis.conf does not say `min-replicas-to-write 1`")
        password = spec["kubernetesConfig"].get("redisSecret") or {}
        if not password:
            problems.append(
                f"k8s RedisReplication {redis_name}: no password (kubernetesConfig.redisSecret)"
            )
        else:
            user_secrets.add(password["name"])
        pattern = (
            r"redis://:\$\((?P<password>\w+)\)@" + re.escape(f"{redis_name}-master") + r":6379/\d+"
        )
        for name, container in _service_containers(kinds):
            if "REDIS_URL" not in _env(container):
                continue
            references, ok = _composed(container, "REDIS_URL", pattern)
            if not ok or references != {"password": (password.get("name"), password.get("key"))}:
                problems.append(
                    f"k8s {name}: container {container['name']}: REDIS_URL is not "
                    f"redis://:$(PASSWORD)@{redis_name}-master:6379/N with the password of its "
                    "redisSecret"
                )
        if urlsplit(_config(kinds).get("REDIS_URL", "")).hostname != f"{redis_name}-master":
            problems.append(f"k8s ConfigMap: REDIS_URL is not on {redis_name}-master")

    # Every Secret a Lyceum pod needs exists: rendered (dev), made by an operator, or one of
    # the role and Redis Secrets that the README has operators create (production).
    rendered = set(kinds.get("Secret", {}))
    made = {f"{name}-default-user" for name in rabbits}
    for name, container in _service_containers(kinds):
        for variable in container.get("env") or []:
            reference = ((variable.get("valueFrom") or {}).get("secretKeyRef")) or {}
            if not reference or reference.get("optional"):
                continue
            secret = reference.get("name", "")
            if secret in rendered or secret in made or (production and secret in user_secrets):
                continue
            problems.append(
                f"k8s {name}: container {container['name']}: {variable['name']} needs the Secret "
                f"{secret}, which nothing creates"
            )

    # dev is self-contained: the bucket and the mail relay run in the namespace.
    if profile == "dev":
        services = set(kinds.get("Service", {}))
        endpoint = urlsplit(_config(kinds).get("S3_ENDPOINT_URL", "")).hostname
        if endpoint not in services:
            problems.append(
                f"k8s dev: S3_ENDPOINT_URL's host {endpoint} is no Service of the overlay"
            )
    return problems


# --- all of it ----------------------------------------------------------------------------


def problems(documents: Iterable[Document], profile: str) -> list[str]:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile}")
    kinds = by_kind(documents)
    return (
        workload_problems(kinds, profile)
        + ingress_problems(kinds, profile)
        + network_problems(kinds)
        + operator_problems(kinds, profile)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.k8s_check")
    parser.add_argument("--profile", choices=PROFILES, required=True)
    parser.add_argument("rendered", type=Path, help="kubectl kustomize output")
    arguments = parser.parse_args(argv)
    found = problems(load_documents(arguments.rendered), arguments.profile)
    for problem in found:
        print(problem)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
