"""The example receiver accepts what Lyceum signs, once per webhook id, and nothing else."""

import importlib.util
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from services.webhooks.signing import new_secret, signed_headers

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "webhook_receiver.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("webhook_receiver", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_example_receiver_verifies_and_handles_each_message_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    example = load_example()
    handled: list[dict[str, Any]] = []
    monkeypatch.setattr(example, "handle", handled.append)
    old, new = new_secret(), new_secret()
    app = example.create_app([new])
    body = '{"type":"user.created","timestamp":"2026-01-01T00:00:00Z","data":{"id":"1"}}'
    headers = signed_headers("msg-1", datetime.now(UTC), body, [new, old])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as client:
        first = await client.post("/webhooks", content=body, headers=headers)
        again = await client.post("/webhooks", content=body, headers=headers)
        tampered = await client.post("/webhooks", content=body.replace("1", "2"), headers=headers)
        stranger = signed_headers("msg-2", datetime.now(UTC), body, [new_secret()])
        unsigned = await client.post("/webhooks", content=body, headers=stranger)
    assert (first.status_code, again.status_code) == (204, 204)
    assert (tampered.status_code, unsigned.status_code) == (400, 400)
    assert handled == [
        {"type": "user.created", "timestamp": "2026-01-01T00:00:00Z", "data": {"id": "1"}}
    ]


async def test_a_message_whose_handling_failed_is_handled_again_on_retry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    example = load_example()
    handled: list[dict[str, Any]] = []
    failures = [RuntimeError("the database is down")]

    def flaky(payload: dict[str, Any]) -> None:
        if failures:
            raise failures.pop()
        handled.append(payload)

    monkeypatch.setattr(example, "handle", flaky)
    secret = new_secret()
    app = example.create_app([secret])
    body = '{"type":"user.created","timestamp":"2026-01-01T00:00:00Z","data":{"id":"1"}}'
    headers = signed_headers("msg-1", datetime.now(UTC), body, [secret])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as client:
        failed = await client.post("/webhooks", content=body, headers=headers)
        retried = await client.post("/webhooks", content=body, headers=headers)
        again = await client.post("/webhooks", content=body, headers=headers)
    assert failed.status_code == 500  # not acknowledged: Lyceum sends it again
    assert (retried.status_code, again.status_code) == (204, 204)
    assert len(handled) == 1
