"""The alerting rules and the Grafana dashboard of deploy/observability against the code:
promtool checks the rules and runs their unit tests (a firing and a quiet case for every
alert), every metric and route their PromQL names exists in the services, and every metric
the code defines is documented."""

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

import gateway.metrics
import services.chat.metrics
import services.documents.metrics
import services.webhooks.metrics
import shared.metrics
from shared.registry import SERVICES

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "deploy" / "observability"
ALERTS = OBSERVABILITY / "alerts.yml"
ALERT_TESTS = OBSERVABILITY / "alerts.test.yml"
DASHBOARD = OBSERVABILITY / "grafana-dashboard.json"
RUNBOOKS = OBSERVABILITY / "README.md"
METRICS_DOC = ROOT / "docs" / "metrics.md"

METRIC_MODULES: tuple[ModuleType, ...] = (
    shared.metrics,
    gateway.metrics,
    services.chat.metrics,
    services.documents.metrics,
    services.webhooks.metrics,
)
# Series Prometheus makes itself.
PROMETHEUS_SERIES = frozenset({"up"})
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
}
PROMQL_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or"}
    | {"unless", "offset", "inf", "nan", "atan2"}
)


def promtool(*arguments: str) -> str:
    binary = shutil.which("promtool")
    assert binary is not None, "promtool is missing: apt-get install prometheus"
    result = subprocess.run(
        [binary, *arguments], cwd=OBSERVABILITY, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def code_metrics() -> Iterator[tuple[str, str]]:
    """(name, type) of every metric the code defines."""
    for module in METRIC_MODULES:
        for value in vars(module).values():
            if isinstance(value, MetricWrapperBase):
                for family in value.describe():
                    yield family.name, family.type


def exposed_names() -> set[str]:
    """Every sample name the code's metrics can expose."""
    return {name + suffix for name, kind in code_metrics() for suffix in SUFFIXES[kind]}


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def dashboard_panels() -> list[dict[str, Any]]:
    return list(json.loads(DASHBOARD.read_text())["panels"])


def dashboard_queries() -> list[str]:
    queries = [t["expr"] for p in dashboard_panels() for t in p.get("targets", [])]
    for variable in json.loads(DASHBOARD.read_text())["templating"]["list"]:
        if variable["type"] == "query":
            queries.append(variable["query"]["query"])
    return queries


def as_promql(query: str) -> str:
    """A dashboard's query with Grafana's variables given values, as Prometheus takes it."""
    return query.replace("$__rate_interval", "5m").replace("$service", "users")


def metric_names(expression: str) -> set[str]:
    """The metric names in a PromQL expression (or Grafana's `label_values(metric, label)`)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|`[^`]*`', '""', expression)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    grouping = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"
    text = re.sub(grouping, " ", text)
    text = re.sub(r"label_values\(\s*([a-zA-Z_:][\w:]*)\s*,\s*\w+\s*\)", r" \1 ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[a-zA-Z_:][\w:]*", text):
        follows = text[match.end() :].lstrip()
        if follows.startswith("(") or match.group() in PROMQL_KEYWORDS:
            continue
        names.add(match.group())
    return names


def route_patterns(expression: str) -> list[str]:
    """The route label values (or regular expressions) an expression matches on."""
    found = re.findall(r'\broute\s*(?:=~|!~|=|!=)\s*"((?:[^"\\]|\\.)*)"', expression)
    return [alternative for pattern in found for alternative in pattern.split("|")]


def service_routes() -> set[str]:
    routes = {"/metrics", shared.metrics.UNMATCHED}
    for entry in SERVICES:
        routes.update(entry.create_app(entry.settings()).openapi()["paths"])
    return routes


def test_promtool_accepts_the_rules() -> None:
    assert "SUCCESS" in promtool("check", "rules", ALERTS.name)


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    assert "SUCCESS" in promtool("test", "rules", ALERT_TESTS.name)


def test_every_alert_has_a_firing_and_a_quiet_test_case() -> None:
    cases = [
        case
        for group in yaml.safe_load(ALERT_TESTS.read_text())["tests"]
        for case in group.get("alert_rule_test", [])
    ]
    firing = {case["alertname"] for case in cases if case.get("exp_alerts")}
    quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    alerts = {rule["alert"] for rule in alert_rules()}
    assert {
        "OutboxBacklogGrowing",
        "EventsDeadLettered",
        "WebhookEndpointDisabled",
        "High5xxRatio",
        "HighP99Latency",
        "ServiceNotReady",
    } <= alerts
    assert alerts - firing == set(), "alerts never seen firing in alerts.test.yml"
    assert alerts - quiet == set(), "alerts without a case where they must not fire"
    assert (firing | quiet) <= alerts


def test_every_alert_says_how_bad_what_and_where_the_runbook_is() -> None:
    headings = set(re.findall(r"^### (\w+)$", RUNBOOKS.read_text(), re.MULTILINE))
    for rule in alert_rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["for"], name
        annotations = rule["annotations"]
        assert annotations["summary"], name
        assert annotations["description"], name
        assert annotations["runbook"] == f"deploy/observability/README.md#{name.lower()}"
        assert name in headings, f"no runbook section for {name} in {RUNBOOKS}"


def test_the_rules_and_the_dashboard_use_only_metrics_the_code_exposes() -> None:
    exposed = exposed_names() | PROMETHEUS_SERIES
    used_by_rules = set().union(*(metric_names(rule["expr"]) for rule in alert_rules()))
    used_by_dashboard = set().union(*(metric_names(query) for query in dashboard_queries()))
    assert "outbox_pending_events" in used_by_rules
    assert "http_request_duration_seconds_bucket" in used_by_dashboard
    assert used_by_rules - exposed == set()
    assert used_by_dashboard - exposed == set()


def test_metric_names_are_found_in_promql() -> None:
    expression = (
        'histogram_quantile(0.99, sum by (service, le) (rate(x_bucket{route!~"a|b"}[5m])))'
        ' / on (service) group_left y_total offset 5m or label_replace(z, "s", "v", "", "")'
    )
    assert metric_names(expression) == {"x_bucket", "y_total", "z"}
    assert metric_names("label_values(http_requests_total, service)") == {"http_requests_total"}


def test_the_routes_the_rules_and_the_dashboard_name_exist() -> None:
    routes = service_routes()
    assert "/api/v1/users/{user_id}" in routes
    expressions = [rule["expr"] for rule in alert_rules()] + dashboard_queries()
    patterns = {pattern for expression in expressions for pattern in route_patterns(expression)}
    assert "/api/v1/files/upload" in patterns
    for pattern in patterns:
        assert any(re.fullmatch(pattern, route) for route in routes), pattern


def test_the_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    rules = [
        {"record": f"dashboard:query_{n}", "expr": as_promql(query)}
        for n, query in enumerate(dashboard_queries())
        if not query.startswith("label_values(")
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert f"SUCCESS: {len(rules)} rules found" in promtool("check", "rules", str(path))


def test_the_dashboard_shows_each_service_and_the_event_pipeline() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    service = next(v for v in dashboard["templating"]["list"] if v["name"] == "service")
    assert service["query"]["query"] == "label_values(http_requests_total, service)"
    rows = {p["title"]: p for p in dashboard_panels() if p["type"] == "row"}
    assert rows["Golden signals: $service"]["repeat"] == "service"
    assert "Event pipeline" in rows
    ids = [p["id"] for p in dashboard_panels()]
    assert len(ids) == len(set(ids))
    queries = " ".join(dashboard_queries())
    for metric in (
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "db_pool_checked_out_connections",
        "chat_streams_in_flight",
        "outbox_pending_events",
        "outbox_oldest_pending_age_seconds",
        "event_queue_messages",
        "event_dead_letter_messages",
        "webhook_deliveries_total",
        "webhook_attempt_duration_seconds_bucket",
    ):
        assert metric in queries, metric


@pytest.mark.parametrize("module", METRIC_MODULES, ids=lambda module: module.__name__)
def test_every_metric_is_documented(module: ModuleType) -> None:
    documented = set(re.findall(r"`([a-z_:]+)`", METRICS_DOC.read_text()))
    names = [
        family.name + ("_total" if family.type == "counter" else "")
        for value in vars(module).values()
        if isinstance(value, MetricWrapperBase)
        for family in value.describe()
    ]
    assert names
    assert set(names) - documented == set()
