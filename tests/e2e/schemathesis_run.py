"""One role's Schemathesis run over a stack's merged OpenAPI document, in a process of its
own: `python -m tests.e2e.schemathesis_run BASE_URL RESULT_PATH PROTECTED_ID...`, with the
role's token in `SCHEMATHESIS_TOKEN`. It writes the failures, the errors and the number of
requests made to RESULT_PATH as JSON. tests/e2e/test_openapi_schemathesis.py starts one per
role, side by side: generating cases keeps a core busy."""

import json
import os
import re
import sys
import uuid
from pathlib import Path
from typing import Any

import schemathesis
from schemathesis.engine import Status, events, from_schema

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


def main(base_url: str, result_path: str, *protected: str) -> None:
    schemathesis.hook("before_call")(_keep_the_run_sound(set(protected)))
    failures, errors, requests = run_schemathesis(base_url, os.environ["SCHEMATHESIS_TOKEN"])
    result = {"failures": failures, "errors": errors, "requests": requests}
    Path(result_path).write_text(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:])
