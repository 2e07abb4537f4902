"""The merged OpenAPI document tells the truth: Schemathesis, with every check and every
phase (examples, coverage, fuzzing, stateful), runs over the gateway's `/openapi.json`
as a student and as an admin, each with a token got for the run, and finds nothing.

A stack of its own (embedded mode), because the run leaves a lot of odd data behind.
`SCHEMATHESIS_MAX_EXAMPLES` (default 10 per operation) and `SCHEMATHESIS_SEED` (default
fixed, so that a failure reproduces) tune it; `make schemathesis` runs this file alone."""

import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.engine import Status, events, from_schema
from schemathesis.hooks import GLOBAL_HOOK_DISPATCHER

from shared.testing import Stack
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.e2e.helpers import PASSWORD, unique_email

MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "10"))
SEED = int(os.environ.get("SCHEMATHESIS_SEED", "20261130"))
# The only network that webhook endpoints of this stack may target; nothing listens on the
# port, so deliveries fail fast and never leave the machine.
WEBHOOK_TARGET = "http://127.0.0.2:9/schemathesis"
HTTP_URL = re.compile(r"^https?://", re.IGNORECASE)

# What a run may not do, and why: each entry exempts one check for one operation.
EXEMPTIONS: list[dict[str, Any]] = [
    # Revoking an API token keeps its record, with `revoked_at`, for its owner to see.
    {
        "include-path": "/api/v1/auth/tokens/{token_id}",
        "checks": {"use_after_free": {"enabled": False}},
    },
    # A course is reached by id or by slug, and a PUT or PATCH may change the slug: a later
    # step that reaches the course by its old slug rightly finds nothing.
    {
        "include-path-regex": "^/api/v1/courses/\\{id_or_slug\\}",
        "checks": {"ensure_resource_availability": {"enabled": False}},
    },
    # A conversation may be given a prompt by name; a prompt that does not exist is a 404
    # whose details name the `prompt` field, not the conversation.
    {
        "include-path": "/api/v1/conversations/{conversation_id}",
        "checks": {"ensure_resource_availability": {"enabled": False}},
    },
    # A new email needs the account's current password, which no schema can know: a
    # schema-valid change is rightly a 400 (missing or INVALID_CURRENT_PASSWORD).
    {
        "include-path": "/api/v1/users/me",
        "include-method-regex": "^(PUT|PATCH)$",
        "checks": {"positive_data_acceptance": {"enabled": False}},
    },
    # The tokens of mailed links and the account's current password are secrets no schema
    # can know: a schema-valid made-up one is rightly a 400 with the route's own code
    # (INVALID_VERIFICATION_TOKEN, INVALID_RESET_TOKEN, INVALID_EMAIL_CHANGE_TOKEN,
    # INVALID_CURRENT_PASSWORD).
    {
        "include-path-regex": (
            "^/api/v1/auth/(verify-email|password/reset|email/confirm|password|email)$"
        ),
        "include-method": "POST",
        "checks": {"positive_data_acceptance": {"enabled": False}},
    },
    # An upload's type is decided from the file's bytes, which no schema can describe: a
    # schema-valid file whose content is not an accepted type is rightly a 415.
    {
        "include-path-regex": "^/api/v1/(documents|files/upload)$",
        "include-method": "POST",
        "checks": {"positive_data_acceptance": {"enabled": False}},
    },
]


@dataclass(frozen=True)
class Caller:
    role: str
    user_id: str
    token: str


@pytest.fixture(scope="module")
def schemathesis_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {
        "LYCEUM_ADMIN_EMAIL": ADMIN_EMAIL,
        "LYCEUM_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "OUTBOX_POLL_SECONDS": "0.5",
        # Thousands of requests in a minute or two, from one address.
        "RATE_LIMIT_AUTH": "100000/minute",
        "RATE_LIMIT_DEFAULT": "100000/minute",
        "RATE_LIMIT_ADMIN": "100000/minute",
        "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.2/32",
        "WEBHOOK_RETRY_SCHEDULE": "0.5",
        "WEBHOOK_ATTEMPT_TIMEOUT_SECONDS": "1",
        # Thousands of replies from the offline model: as fast as it goes.
        "CHAT_DEV_WORD_DELAY_SECONDS": "0",
    }
    stack = Stack(
        mode="embedded", workdir=tmp_path_factory.mktemp("schemathesis"), env_overrides=env
    )
    try:
        stack.start()
    except Exception:
        print(stack.log_tail(), flush=True)
        raise
    try:
        yield stack
    finally:
        stack.stop()


def _login(client: httpx.Client, email: str, password: str) -> tuple[str, str]:
    response = client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200, me.text
    return token, me.json()["id"]


@pytest.fixture(scope="module")
def callers(schemathesis_stack: Stack) -> dict[str, Caller]:
    """A fresh token for each role, got at the start of the run."""
    with httpx.Client(base_url=schemathesis_stack.url, timeout=15.0) as client:
        email = unique_email("schemathesis")
        body = {"email": email, "password": PASSWORD, "name": "Schemathesis"}
        registered = client.post("/api/v1/auth/register", json=body)
        assert registered.status_code == 201, registered.text
        student_token, student_id = _login(client, email, PASSWORD)
        admin_token, admin_id = _login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    return {
        "student": Caller("student", student_id, student_token),
        "admin": Caller("admin", admin_id, admin_token),
    }


def _keep_the_run_sound(protected: set[str]) -> Any:
    """A `before_call` hook with two jobs that no schema can do. The accounts the run acts
    as are never targeted by id (an admin demoting or deleting itself would end the run's
    access), and webhook endpoint URLs go to the one network endpoints may target here
    (a generated URL would send deliveries off the machine)."""

    def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
        for name, value in list((case.path_parameters or {}).items()):
            if str(value) in protected:
                case.path_parameters[name] = str(uuid.uuid4())
        body = case.body
        if (
            case.path.startswith("/api/v1/webhooks/endpoints")
            and isinstance(body, dict)
            and isinstance(body.get("url"), str)
            and HTTP_URL.match(body["url"])
        ):
            body["url"] = WEBHOOK_TARGET

    return before_call


def _config(token: str) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "suppress-health-check": ["too_slow", "filter_too_much", "data_too_large"],
            # One worker: Python 3.11.7's parser is not safe to run from two threads at once,
            # which Hypothesis does when it describes a strategy.
            "workers": 1,
            "request-timeout": 15,
            "headers": {"Authorization": f"Bearer {token}"},
            "checks": {"enabled": True},
            "phases": {"enabled": True},
            "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
            "operations": EXEMPTIONS,
        }
    )


def _describe(check: str, info: Any) -> str:
    failure = info.failure
    return f"{failure.operation}: {check}: {failure.title}\n{failure.message}\n{info.code_sample}"


def run_schemathesis(base_url: str, token: str) -> tuple[list[str], list[str], int]:
    """Failures and errors of one run over the merged document, and the requests it made."""
    loaded = schemathesis.openapi.from_url(f"{base_url}/openapi.json", config=_config(token))
    loaded.config.base_url = base_url
    # Logging out would revoke the run's own token.
    schema = loaded.exclude(path="/api/v1/auth/logout")
    failures: dict[tuple[str | None, str, str], str] = {}
    errors: list[str] = []
    requests = 0
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished | events.FuzzScenarioFinished):
            requests += len(event.recorder.interactions)
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.status == Status.FAILURE and check.failure_info is not None:
                        failure = check.failure_info.failure
                        key = (failure.operation, check.name, failure.title)
                        failures.setdefault(key, _describe(check.name, check.failure_info))
        elif isinstance(event, events.NonFatalError):
            errors.append(f"{event.label}: {event.info.title}: {event.info.message}")
        elif isinstance(event, events.FatalError):
            errors.append(f"fatal: {event.exception!r}")
        elif isinstance(event, events.EngineFinished):
            errors.extend(_describe("after run", failure) for failure in event.failures)
    return list(failures.values()), errors, requests


@pytest.mark.parametrize("role", ["student", "admin"])
def test_schemathesis_finds_nothing_in_the_merged_openapi(
    schemathesis_stack: Stack, callers: dict[str, Caller], role: str
) -> None:
    caller = callers[role]
    hook = _keep_the_run_sound({c.user_id for c in callers.values()})
    schemathesis.hook("before_call")(hook)
    try:
        failures, errors, requests = run_schemathesis(schemathesis_stack.url, caller.token)
    finally:
        GLOBAL_HOOK_DISPATCHER.unregister(hook)
    summary = f"as {role} (seed {SEED}, {MAX_EXAMPLES} examples)"
    assert not failures, f"{len(failures)} failures {summary}:\n\n" + "\n\n".join(failures)
    assert not errors, f"{len(errors)} errors {summary}:\n\n" + "\n\n".join(errors)
    assert requests > 100 * MAX_EXAMPLES, f"only {requests} requests were made"
    # The run's own accounts kept their roles.
    with httpx.Client(base_url=schemathesis_stack.url, timeout=15.0) as client:
        me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {caller.token}"})
    assert me.status_code == 200, me.text
    assert me.json()["role"] == role


def test_a_method_the_document_lacks_is_405_before_any_token(schemathesis_stack: Stack) -> None:
    with httpx.Client(base_url=schemathesis_stack.url, timeout=15.0) as client:
        register = client.put("/api/v1/auth/register", json={})
        me = client.delete("/api/v1/users/me")
        endpoint = client.options(f"/api/v1/webhooks/endpoints/{uuid.uuid4()}")
        unknown = client.get("/api/v1/users/me/nothing")
    assert (register.status_code, register.headers["allow"]) == (405, "POST")
    assert register.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert (me.status_code, me.headers["allow"]) == (405, "GET, PATCH, PUT")
    assert (endpoint.status_code, endpoint.headers["allow"]) == (405, "DELETE, GET, PATCH")
    # A path the document does not have still needs a token first.
    assert unknown.status_code == 401
