"""The merged OpenAPI document tells the truth: Schemathesis, with every check and every
phase (examples, coverage, fuzzing, stateful), runs over the gateway's `/openapi.json`
as a student and as an admin, each with a token got for the run, and finds nothing.

Each role's run has a stack of its own (embedded mode), because a run leaves a lot of odd
data behind, and a process of its own, so that the two runs go side by side.
`SCHEMATHESIS_MAX_EXAMPLES` (default 10 per operation) and `SCHEMATHESIS_SEED` (default
fixed, so that a failure reproduces) tune it; `make schemathesis` runs this file alone."""

import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.testing import Stack
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.e2e.helpers import PASSWORD, unique_email
from tests.e2e.schemathesis_run import MAX_EXAMPLES, SEED

ROLES = ("student", "admin")
PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Seconds one role's run may take; up to 300 on a slow machine.
RUN_TIMEOUT = 540


@dataclass(frozen=True)
class Caller:
    role: str
    user_id: str
    token: str


def _start_stack(tmp_path_factory: pytest.TempPathFactory, role: str) -> Stack:
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
        mode="embedded",
        workdir=tmp_path_factory.mktemp(f"schemathesis-{role}"),
        env_overrides=env,
    )
    try:
        stack.start()
    except Exception:
        print(stack.log_tail(), flush=True)
        stack.stop()
        raise
    return stack


def _login(client: httpx.Client, email: str, password: str) -> tuple[str, str]:
    response = client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200, me.text
    return token, me.json()["id"]


def _caller(stack: Stack, role: str) -> Caller:
    """A fresh token for the role, got at the start of the run."""
    with httpx.Client(base_url=stack.url, timeout=15.0) as client:
        if role == "admin":
            token, user_id = _login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
            return Caller(role, user_id, token)
        email = unique_email("schemathesis")
        body = {"email": email, "password": PASSWORD, "name": "Schemathesis"}
        registered = client.post("/api/v1/auth/register", json=body)
        assert registered.status_code == 201, registered.text
        token, user_id = _login(client, email, PASSWORD)
        return Caller(role, user_id, token)


@dataclass
class Run:
    stack: Stack
    caller: Caller
    process: "subprocess.Popen[bytes]"
    result_path: Path

    def outcome(self) -> dict[str, Any]:
        """The run's failures, errors and number of requests, once it is over."""
        self.process.wait(timeout=RUN_TIMEOUT)
        assert self.process.returncode == 0, f"the {self.caller.role} run ended badly"
        outcome: dict[str, Any] = json.loads(self.result_path.read_text())
        return outcome


@pytest.fixture(scope="module")
def schemathesis_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    """Each role's run on a stack of its own, in a process of its own: generating cases
    keeps a core busy, so the two runs go side by side, and neither sees the other's data."""
    runs: dict[str, Run] = {}
    with contextlib.ExitStack() as cleanup:
        for role in ROLES:
            stack = _start_stack(tmp_path_factory, role)
            cleanup.callback(stack.stop)
            caller = _caller(stack, role)
            result_path = stack.workdir / "schemathesis.json"
            runner = [sys.executable, "-m", "tests.e2e.schemathesis_run"]
            process = subprocess.Popen(
                [*runner, stack.url, str(result_path), caller.user_id],
                env={**os.environ, "SCHEMATHESIS_TOKEN": caller.token},
                cwd=PROJECT_ROOT,
            )
            cleanup.callback(_end, process)
            runs[role] = Run(stack, caller, process, result_path)
        yield runs


def _end(process: "subprocess.Popen[bytes]") -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


@pytest.mark.parametrize("role", ROLES)
def test_schemathesis_finds_nothing_in_the_merged_openapi(
    schemathesis_runs: dict[str, Run], role: str
) -> None:
    run = schemathesis_runs[role]
    outcome = run.outcome()
    failures, errors, requests = outcome["failures"], outcome["errors"], outcome["requests"]
    summary = f"as {role} (seed {SEED}, {MAX_EXAMPLES} examples)"
    assert not failures, f"{len(failures)} failures {summary}:\n\n" + "\n\n".join(failures)
    assert not errors, f"{len(errors)} errors {summary}:\n\n" + "\n\n".join(errors)
    assert requests > 100 * MAX_EXAMPLES, f"only {requests} requests were made"
    # The run's own account kept its role.
    with httpx.Client(base_url=run.stack.url, timeout=15.0) as client:
        me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {run.caller.token}"})
    assert me.status_code == 200, me.text
    assert me.json()["role"] == role


def test_a_method_the_document_lacks_is_405_before_any_token(
    schemathesis_runs: dict[str, Run],
) -> None:
    with httpx.Client(base_url=schemathesis_runs["student"].stack.url, timeout=15.0) as client:
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
